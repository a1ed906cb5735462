"""Progress bars: on a terminal, training (TRL's bar) and generation (tqdm) show progress; under CI (`$CI`) or
pytest's `-q` they stay quiet. Run on a real pseudo-terminal, as a person at a shell would see it."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each case trains in a terminal of its own (a pty)

BAR = "it/s]"  # the rate tqdm prints at the end of a bar line


def on_a_terminal(command: list[str], cwd: Path, **env: str) -> tuple[int, str]:
    """Run `command` with stdout and stderr on a fresh pseudo-terminal; (exit code, everything it printed)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # a real terminal has a size
    clean = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS", "PYTEST_CURRENT_TEST")}
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower, cwd=cwd, env={**clean, **env}
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return process.wait(timeout=600), b"".join(chunks).decode(errors="replace")


@pytest.fixture
def fresh_run(tiny_variant):
    """A short variant of the default recipe that must train now (its run name, unique to this test session, is
    new to the cache: about 4 MB of tuned model each) and generates in several batches: both kinds of bar have
    something to show."""

    def recipe(tag: str) -> Path:
        return tiny_variant(
            {
                'train = "': 'limit = 48\ntrain = "',
                "num_train_epochs = 20": f'num_train_epochs = 1\nrun_name = "progress-{uuid.uuid4().hex}"',
                "max_new_tokens = 100": "max_new_tokens = 8\nbatch_size = 8",
            },
            name=f"{tag}.toml",
        )

    return recipe


def _report(recipe: Path, cache: Path, out: Path, **env: str) -> tuple[int, str]:
    command = [sys.executable, "-m", "sft_eval.cli", "report", "--recipe", str(recipe), "--out", str(out)]
    return on_a_terminal(command + ["--sft-cache", str(cache)], out.parent, **env)


def test_a_terminal_shows_training_and_generation_progress(fresh_run, sft_pipeline, tmp_path):
    code, printed = _report(fresh_run("terminal"), sft_pipeline.cache.root, tmp_path / "out")
    assert code == 1, printed[-3000:]  # a 3-step run fails the recipe's thresholds: the report says so
    # 48 rows at 16 a step: TRL's training bar runs to 3/3; 31 questions at 8 a batch: generation to 4/4.
    assert re.search(r"\r *100%\|[^\r\n]*\| 3/3 \[", printed), f"no training bar:\n{printed[-2000:]}"
    assert re.search(r"generating: 100%\|[^\r\n]*\| 4/4 \[", printed), f"no generation bar:\n{printed[-2000:]}"


def test_ci_keeps_the_terminal_quiet(fresh_run, sft_pipeline, tmp_path):
    code, printed = _report(fresh_run("ci"), sft_pipeline.cache.root, tmp_path / "out", CI="true")
    assert code == 1, printed[-3000:]  # a 3-step run fails the recipe's thresholds: the report says so
    assert BAR not in printed, f"a progress bar under CI:\n{printed[-2000:]}"


def test_pytest_quiet_keeps_the_terminal_quiet(fresh_run, sft_pipeline, tmp_path):
    """`pytest -s` would show bars (the terminal is not captured); `-q` asks for quiet, and gets it."""
    (tmp_path / "test_user.py").write_text("def test_answers(sft_evaluation):\n    assert sft_evaluation.tuned\n")
    command = [sys.executable, "-m", "pytest", "test_user.py", "-s", "-q", "-p", "no:cacheprovider"]
    command += ["--sft-recipe", str(fresh_run("quiet")), "--sft-cache", str(sft_pipeline.cache.root)]
    code, printed = on_a_terminal(command + ["--sft-report-dir", str(tmp_path / "out")], tmp_path)
    assert code == 0, printed[-3000:]  # the user's one test passes; the suites' thresholds are not in this session
    assert BAR not in printed, f"a progress bar under pytest -q:\n{printed[-2000:]}"
