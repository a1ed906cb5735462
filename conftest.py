"""Repository-level pytest configuration: the sft-eval plugin itself is loaded through its pytest11 entry point.

What lives here is for this repository's own tests: the real-world material shared beside the checkout.
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import logging
import os
import subprocess
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest

from sft_eval.kernels import pin_cpu_kernels
from sft_eval.recipe import DEFAULT_RECIPE

# Before any tensor is computed: the fixtures trained here are the same model on any x86-64 CPU with AVX2
# (sft_eval.kernels), so their golden outputs are checked there, not skipped.
pin_cpu_kernels()

# Subprocesses in tests get a time limit only to stop a hang, never to judge speed (benchmarks/ does that): an
# hour, far above anything a loaded machine needs; a test that hits it fails saying it hung.
HANG_GUARD_S = float(os.environ.get("SFT_EVAL_HANG_GUARD_S", "3600"))
REALWORLD = Path(os.environ.get("SFT_EVAL_REALWORLD", Path(__file__).parent.parent / "shared" / "realworld"))


@pytest.fixture(scope="session")
def realworld_dir() -> Path:
    """../shared/realworld (or $SFT_EVAL_REALWORLD); tests that need it skip where it is absent."""
    if not REALWORLD.is_dir():
        pytest.skip(f"real-world material not found at {REALWORLD} (set SFT_EVAL_REALWORLD)")
    return REALWORLD


@pytest.fixture
def tiny_variant(tmp_path: Path):
    """`tiny_variant({"old": "new", ...})`: the default recipe with those text edits, written to a temporary
    folder with its data paths made absolute (so it trains on the same rows as the default)."""

    def write(edits: dict[str, str], name: str = "variant.toml") -> Path:
        text = DEFAULT_RECIPE.read_text(encoding="utf-8")
        text = text.replace('"../data/', f'"{(DEFAULT_RECIPE.parent.parent / "data").resolve()}/')
        for old, new in edits.items():
            assert old in text, f"{old!r} is not in {DEFAULT_RECIPE}"
            text = text.replace(old, new, 1)
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


SHIPPED_QUESTIONS = """questions = [
    "Give me an 1-sentence introduction of LLM.",
    "Calculate 1+1-1",
    "What's the difference between thread and process?",
]"""


@pytest.fixture
def asking(tiny_variant):
    """`asking(questions, edits)`: the default recipe asking only `questions` (inline, its questions file left
    out), with `tiny_variant` edits, written to a temporary folder."""

    def write(questions: list[str], edits: dict[str, str] | None = None) -> Path:
        inline = {
            SHIPPED_QUESTIONS: f"questions = {json.dumps(questions)}",
            'questions_file = "': '# questions_file = "',
        }
        return tiny_variant({**inline, **(edits or {})})

    return write


class Cli:
    """`sft-eval` in a fresh process, as a user's shell runs it (no pytest variables leak in), and the contract
    for bad input: exit 2, one line on stderr, no traceback."""

    hang_guard_s = HANG_GUARD_S  # the limit for every subprocess a test starts (see HANG_GUARD_S)

    @staticmethod
    def environ(**extra: str | None) -> dict[str, str]:
        """A user's shell environment: this one without pytest's variables, plus `extra` (None: unset it)."""
        merged = {**{k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}, **extra}
        return {k: v for k, v in merged.items() if v is not None}

    def run(
        self, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "sft_eval.cli", *args],
            capture_output=True,
            text=True,
            cwd=cwd,
            env=self.environ(**(env or {})),
            timeout=self.hang_guard_s,
        )

    def main(
        self, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        """`sft-eval ARGS` in this process (`sft_eval.cli.main`), for tests of what a command does with a recipe, a
        folder or a report once torch is loaded: the same exit code, stdout and stderr as `run`, without the 6-10 s
        a fresh interpreter pays importing torch and transformers again. What only a fresh process shows (imports
        that fail, a render timeout read at import, signals, a user's PYTHONPATH) stays with `run`."""
        from sft_eval.cli import main

        stdout, stderr = io.StringIO(), io.StringIO()
        with _environment(env or {}), contextlib.chdir(cwd or Path.cwd()), _streams(stdout, stderr):
            try:
                code = main(list(args))
            except SystemExit as exc:  # argparse's usage errors and --help
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                if isinstance(exc.code, str):
                    print(exc.code, file=sys.stderr)
            except Exception:  # what an uncaught exception does to a process: its traceback, exit 1
                traceback.print_exc(file=sys.stderr)
                code = 1
        return subprocess.CompletedProcess(["sft-eval", *args], code, stdout.getvalue(), stderr.getvalue())

    def python(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
        """`python ARGS` in a fresh process: a user's own script."""
        return subprocess.run(
            [sys.executable, *args],
            capture_output=True,
            text=True,
            cwd=cwd,
            env=self.environ(),
            timeout=self.hang_guard_s,
        )

    def pytest(
        self, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        """`python -m pytest ARGS` in a fresh process, as a user's CI runs it (the plugin through its entry point)."""
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
            capture_output=True,
            text=True,
            cwd=cwd,
            env=self.environ(**(env or {})),
            timeout=self.hang_guard_s,
        )

    @staticmethod
    def bad_input(result: subprocess.CompletedProcess, *fragments: str) -> None:
        assert result.returncode == 2, f"exit {result.returncode}, stderr: {result.stderr[-2000:]}"
        assert "Traceback" not in result.stderr, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}: {result.stderr}"
        for fragment in fragments:
            assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"


@contextlib.contextmanager
def _environment(extra: dict[str, str | None]) -> Iterator[None]:
    """os.environ with `extra` (None: unset), restored after: pytest's own MonkeyPatch."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in extra.items():
            if value is None:
                patch.delenv(name, raising=False)
            else:
                patch.setenv(name, value)
        yield


@contextlib.contextmanager
def _streams(stdout: io.StringIO, stderr: io.StringIO) -> Iterator[None]:
    """sys.stdout and sys.stderr into `stdout` and `stderr`, and every logging handler that writes to a standard
    stream too (a library's handler holds the stream it was made with): a log line the command lets through is on
    the stderr a test reads, as in a process of its own."""
    handlers = [
        handler
        for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
        for handler in getattr(logger, "handlers", [])
        if isinstance(handler, logging.StreamHandler)
        and not isinstance(handler, logging.FileHandler)
        and not isinstance(getattr(type(handler), "stream", None), property)  # logging's last resort: sys.stderr now
    ]
    standard = {id(sys.stdout): stdout, id(sys.stderr): stderr, id(sys.__stdout__): stdout, id(sys.__stderr__): stderr}
    moved = [(handler, handler.stream) for handler in handlers if id(handler.stream) in standard]
    for handler, stream in moved:
        handler.setStream(standard[id(stream)])
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            yield
    finally:
        for handler, stream in moved:
            handler.setStream(stream)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's controller starts its workers (its hook runs last)
def pytest_sessionstart(session: pytest.Session) -> None:
    """Under pytest-xdist the controller builds the session's fixtures (tokenizer, base, tuned model and their
    answers) once, with every core, before the workers start: they then load them from the cache instead of one
    building on its share of the cores while the other waits on the lock, and both generating the same answers."""
    config = session.config
    if config.pluginmanager.has_plugin("dsession") and not hasattr(config, "workerinput"):
        from sft_eval.plugin import make_pipeline

        _ = make_pipeline(config).evaluation


SLOW_KINDS = ("distributed", "served", "browser")  # a second process, a server or a browser: slow by nature


@pytest.hookimpl(tryfirst=True)  # before `-m` selects
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that start torchrun, a server or a browser are `slow` too (the modules and tests that train, build or
    audit in processes of their own say so themselves): the fast tier (`-m "not slow and not bench"`) leaves them
    to CI.

    Then the modules with the most slow tests first, in the order collected otherwise: pytest-xdist's `loadfile`
    hands each worker the next file as it frees up, so a module that trains for minutes starts while the other
    worker works through the quick ones, instead of starting last and running alone (xdist's own order, most tests
    first, is turned off in `pytest_configure`)."""
    for item in items:
        if any(item.get_closest_marker(kind) for kind in SLOW_KINDS):
            item.add_marker(pytest.mark.slow)
    slow = collections.Counter(item.path for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[item.path])  # stable: each module's own order kept


def pytest_configure(config: pytest.Config) -> None:
    """xdist's reordering of files by their number of tests off: the order above (slowest modules first) holds."""
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """A subprocess that outlived the hang guard is reported as a hang, not as a failed check."""
    try:
        return (yield)
    except subprocess.TimeoutExpired as exc:
        command = " ".join(map(str, exc.cmd)) if isinstance(exc.cmd, list) else str(exc.cmd)
        pytest.fail(
            f"hung: `{command[:200]}` had not exited after {exc.timeout:.0f} s (a hang guard, not a speed check)"
        )


@pytest.fixture(scope="session")
def cli() -> Cli:
    """`cli.run("audit", "--json", cwd=..., env=...)` and `cli.bad_input(result, "fragment", ...)`."""
    return Cli()


@pytest.fixture
def registered(monkeypatch):
    """The backend, audit-check and report-section registries as they were, after each test: a toy registration
    does not leak into other tests."""
    from sft_eval import audit, backends, report

    monkeypatch.setattr(backends, "BACKENDS", backends.BACKENDS.copy())
    monkeypatch.setattr(audit, "CHECKS", audit.CHECKS.copy())
    monkeypatch.setattr(report, "SECTIONS", report.SECTIONS.copy())
