"""pytest plugin (entry point `pytest11`): a recipe becomes session fixtures; the run leaves a report.

Fixtures are thin: each one asks the session's `Pipeline` for a stage, so a test and the CLI see the same
objects. Anything trained is session-scoped and cached on disk between sessions.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from sft_eval.options import OPTIONS, PLUGIN, PLUGIN_PREFIX, add_options, dest

if TYPE_CHECKING:  # torch and transformers load when a fixture is first asked for, not with the plugin
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from sft_eval.factory import Inputs
    from sft_eval.pipeline import Pipeline
    from sft_eval.recipe import Recipe
    from sft_eval.records import TrainingRun
    from sft_eval.sanity import Evaluation
    from sft_eval.schema import Outcomes, ReportData
    from sft_eval.scoring import Signals

_PIPELINE = pytest.StashKey["Pipeline"]()
_INPUTS = pytest.StashKey["Inputs"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sft-eval", "sft-eval: SFT fixtures, suites and report")
    add_options(group.addoption, PLUGIN, prefix=PLUGIN_PREFIX)


def option(config: pytest.Config, name: str) -> Any:
    """The value of one of sft-eval's options in this session (`option(config, "recipe")` is `--sft-recipe`)."""
    return config.getoption(dest(name, PLUGIN_PREFIX))


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def share_cores(workers: int) -> int | None:
    """An xdist worker's share of this machine's cores (at least one), set as its torch thread count and, for the
    processes it starts (`sft-eval`, torchrun, a server), as OMP_NUM_THREADS / MKL_NUM_THREADS. Without it each of
    N workers runs torch's default of every core: on 2 cores, two processes at 2 threads each ran a tiny training
    step in 5.6 s each, one process alone in 0.59 s (OpenMP threads spinning for cores the other holds); at one
    thread each, 0.98 s each. None where the user set the variables."""
    if any(name in os.environ for name in THREAD_VARIABLES):
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = max(1, cores // max(1, workers))
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    if "torch" in sys.modules:  # read at import; a worker that imported torch already is told directly
        sys.modules["torch"].set_num_threads(threads)
    return threads


def pytest_configure(config: pytest.Config) -> None:
    """Check the options at start-up, so a typo is one usage line, not an error in every test that uses them."""
    if hasattr(config, "workerinput"):  # a pytest-xdist worker: its share of the cores, not all of them
        share_cores(int(config.workerinput.get("workercount", os.environ.get("PYTEST_XDIST_WORKER_COUNT", 1))))
    if option(config, "device") != "auto":  # auto needs no check (and no torch import in unrelated sessions)
        from sft_eval.errors import SftEvalError
        from sft_eval.models import resolve_device

        try:
            resolve_device(option(config, "device"), flag=OPTIONS["device"].flag(PLUGIN_PREFIX))
        except SftEvalError as exc:
            raise pytest.UsageError(str(exc)) from None
    if option(config, "report-dir") != OPTIONS["report-dir"].kwargs["default"]:
        from sft_eval.cache import writable_folder
        from sft_eval.errors import SftEvalError

        try:  # a report folder named on the command line is proven writable now, not after every test ran
            writable_folder(option(config, "report-dir"), key=OPTIONS["report-dir"].flag(PLUGIN_PREFIX), create=False)
        except SftEvalError as exc:
            raise pytest.UsageError(str(exc)) from None
    if option(config, "baseline"):  # a baseline named on the command line is read now: a bad one is a usage error
        baseline_report(config)
    if option(config, "recipe") != OPTIONS["recipe"].kwargs["default"]:
        session_recipe(config)  # a recipe named on the command line is read now: a bad one is a usage error
    config.pluginmanager.register(ReportWriter(config), "sft-eval-report")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    """A test that fails or errors on bad input (an `SftEvalError`: a run's record, a checkpoint, a reply) is
    reported as that one line, not the traceback through the fixtures that met it."""
    from sft_eval.errors import SftEvalError

    report = yield
    if call.excinfo is not None and call.excinfo.errisinstance(SftEvalError):
        report.longrepr = f"sft-eval: {call.excinfo.value}"
    return report


_BASELINE = pytest.StashKey["ReportData"]()


def baseline_report(config: pytest.Config) -> ReportData | None:
    """`--sft-baseline`'s report JSON, read and checked once (a bad one is a usage error of one line); None
    without the option."""
    from sft_eval.errors import SftEvalError
    from sft_eval.report import read_report_json

    path = option(config, "baseline")
    if not path:
        return None
    if _BASELINE not in config.stash:
        try:
            config.stash[_BASELINE] = read_report_json(path)
        except SftEvalError as exc:
            raise pytest.UsageError(f"{OPTIONS['baseline'].flag(PLUGIN_PREFIX)}: {exc}") from None
    return config.stash[_BASELINE]


def session_recipe(config: pytest.Config) -> Recipe:
    """The recipe of this session: `--sft-recipe`, cut down by `--sft-max-train-rows` / `--sft-max-eval-questions`;
    a bad recipe is a usage error of one line."""
    return session_inputs(config).recipe


def session_inputs(config: pytest.Config) -> Inputs:
    """The session's recipe and questions, read once (collection's per-question ids and the pipeline share them)
    through the factory the CLI uses; a bad recipe or questions file is a usage error of one line."""
    from sft_eval.errors import SftEvalError
    from sft_eval.factory import read_inputs

    if _INPUTS not in config.stash:
        try:
            config.stash[_INPUTS] = read_inputs(
                option(config, "recipe"),
                max_train_rows=option(config, "max-train-rows"),
                max_eval_questions=option(config, "max-eval-questions"),
            )
        except SftEvalError as exc:
            raise pytest.UsageError(str(exc)) from None
    return config.stash[_INPUTS]


@pytest.fixture(scope="session")
def sft_pipeline(request: pytest.FixtureRequest) -> Pipeline:
    """The session's pipeline for `--sft-recipe`; every other fixture is a stage of it."""
    pipeline = make_pipeline(request.config)
    request.config.stash[_PIPELINE] = pipeline
    return pipeline


def make_pipeline(config: pytest.Config) -> Pipeline:
    """A pipeline for this session's options (recipe, cache, device, answer cache), through the one factory: what
    `sft_pipeline` holds, and what a conftest builds ahead of the tests (pytest-xdist's controller does)."""
    from sft_eval.factory import open_pipeline

    return open_pipeline(
        session_inputs(config),
        cache_dir=option(config, "sft-cache"),
        device=option(config, "device"),
        answer_cache=not option(config, "no-answer-cache"),
        quiet=config.get_verbosity() < 0,
    )


@pytest.fixture(scope="session")
def sft_recipe(sft_pipeline: Pipeline) -> Recipe:
    return sft_pipeline.recipe


@pytest.fixture(scope="session")
def sft_tokenizer(sft_pipeline: Pipeline) -> PreTrainedTokenizerBase:
    return sft_pipeline.tokenizer


@pytest.fixture(scope="session")
def sft_base_model(sft_pipeline: Pipeline) -> PreTrainedModel:
    return sft_pipeline.base_model


@pytest.fixture(scope="session")
def sft_tuned_model(sft_pipeline: Pipeline) -> PreTrainedModel:
    return sft_pipeline.tuned_model


@pytest.fixture(scope="session")
def sft_training_run(sft_pipeline: Pipeline) -> TrainingRun:
    """What the SFT trainer logged (log history, steps, runtime), from the cache after the first run."""
    return sft_pipeline.training_run


@pytest.fixture(scope="session")
def sft_evaluation(sft_pipeline: Pipeline) -> Evaluation:
    """Base and tuned greedy answers to the recipe's questions, with their scores."""
    return sft_pipeline.evaluation


@pytest.fixture(scope="session")
def sft_signals(sft_pipeline: Pipeline) -> Signals:
    """The teacher-forced signals (held-out loss, expected answers' likelihood, forgetting) and answer lengths,
    base vs tuned (`sft_eval.scoring.Signals`)."""
    return sft_pipeline.signals


@pytest.fixture(scope="session")
def sft_record_speed(request: pytest.FixtureRequest) -> Any:
    """`sft_record_speed(method, tokens_per_s)`: a generation-speed figure for the report's speed panel (the
    generation benchmarks record theirs; the report shows what was recorded)."""
    writer = request.config.pluginmanager.get_plugin("sft-eval-report")
    assert isinstance(writer, ReportWriter), "the sft-eval report plugin is registered at configure"
    return writer.speed.__setitem__


def failure_message(report: pytest.TestReport) -> str:
    """The message of a failed test, once: an assertion's own message without pytest's restatement of it (the
    `assert ...` explanation that repeats the message, escaped, after it)."""
    crash = getattr(report.longrepr, "reprcrash", None)
    message = crash.message if crash is not None else str(report.longrepr)
    own, restated, _ = message.partition("\nassert ")
    return own if restated and own.startswith("AssertionError: ") and own != "AssertionError: " else message


def skip_reason(report: pytest.TestReport) -> str:
    """Why a test skipped (pytest keeps it as (file, line, "Skipped: reason"))."""
    if isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    return str(report.longrepr)


class ReportWriter:
    """Counts the run's outcomes through pytest's hooks and writes the report when the session ends.

    Under pytest-xdist the workers run the tests and the controller sees every test's report: the workers only
    say whether they evaluated (and what speed they measured), and the controller writes the one report.
    """

    def __init__(self, config: pytest.Config):
        self.config = config
        self.outcomes: Outcomes = {"passed": 0, "failed": 0, "skipped": 0, "failures": [], "skips": []}
        self.path: Path | None = None
        self.speed: dict[str, float] = {}  # tokens/s by method, from sft_record_speed (and xdist workers)
        self.evaluated_elsewhere = False  # an xdist worker evaluated
        self.error = ""  # why the report could not be written (bad input met at session end), one line

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" and report.passed:
            self.outcomes["passed"] += 1
        elif report.skipped:
            self.outcomes["skipped"] += 1
            self.outcomes["skips"].append({"nodeid": report.nodeid, "reason": skip_reason(report)})
        elif report.failed:
            self.outcomes["failed"] += 1
            self.outcomes["failures"].append(
                {"nodeid": report.nodeid, "when": report.when, "message": failure_message(report)}
            )

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """An xdist worker finished: keep what it reported of its pipeline."""
        reported = getattr(node, "workeroutput", {}).get("sft_eval")
        if reported:
            self.evaluated_elsewhere |= reported["evaluated"]
            self.speed.update(reported["speed"])

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """Write the report when this session evaluated models (a run that evaluated nothing leaves none)."""
        pipeline = self.config.stash.get(_PIPELINE, None)
        evaluated = pipeline is not None and pipeline.evaluated
        if hasattr(self.config, "workerinput"):  # an xdist worker: the controller writes the report
            reported = {"evaluated": evaluated, "speed": dict(self.speed)}
            self.config.workeroutput["sft_eval"] = reported  # type: ignore[attr-defined]  # xdist's, on its workers
            return
        if not (evaluated or self.evaluated_elsewhere):
            return
        from sft_eval.errors import SftEvalError
        from sft_eval.report import write_report

        try:
            if pipeline is None:  # the xdist controller: the same stages, from the cache the workers filled
                pipeline = make_pipeline(self.config)
            baseline = baseline_report(self.config)
            named = None if baseline is None else (option(self.config, "baseline"), baseline)
            context = pipeline.report_context(self.outcomes, self.speed, baseline=named)
            self.path = write_report(context, option(self.config, "report-dir")).resolve()
        except SftEvalError as exc:  # bad input met at the end (a run's record): one line in pytest's summary
            self.error = str(exc)
            if session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.path is not None:
            terminalreporter.write_sep("-", "sft-eval report")
            terminalreporter.write_line(f"report: {self.path}")
        if self.error:
            terminalreporter.write_sep("-", "sft-eval report")
            terminalreporter.write_line(f"report not written: {self.error}", red=True)
