"""Issue 42: torchrun runs never deadlock on the fixture cache, and a hang is a failure with its evidence.

The ranks of `sft_eval.distributed` build no fixture (building takes an entry's lock, and training the base inside a
process group joins collectives: rank 0 held the base's lock in a collective while rank 1 waited for the lock,
until the old 3,600 s guard). Each test here starts processes of its own (torchrun, or pytest on an empty cache),
which is why they are slow and train on their own cache.
"""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest

from sft_eval.distributed import Hung, launch
from sft_eval.recipe import DEFAULT_RECIPE

pytestmark = [pytest.mark.distributed, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent

# The old deadlock in twenty lines: rank 0 takes a file lock and waits in a collective; rank 1 waits for the lock.
DEADLOCK = textwrap.dedent(
    """
    import sys, time
    import torch.distributed as dist
    from filelock import FileLock

    dist.init_process_group("gloo")
    lock = FileLock(sys.argv[1])
    if dist.get_rank() == 0:
        with lock:
            dist.barrier()  # waits for rank 1, which waits for the lock
    else:
        time.sleep(1)  # rank 0 takes the lock first
        with lock:
            dist.barrier()
    """
)


def test_a_lock_held_across_a_collective_fails_within_the_guard_with_each_ranks_stack(tmp_path):
    script = tmp_path / "deadlock.py"
    script.write_text(DEADLOCK, encoding="utf-8")
    guard = 40  # the ranks import torch and meet in a few seconds; past that they only wait
    start = time.monotonic()
    with pytest.raises(Hung) as hung:
        launch([str(script), str(tmp_path / "entry.lock")], nproc=2, guard_s=guard)
    took = time.monotonic() - start
    message = str(hung.value)
    assert took < guard + 30, f"the guard was {guard} s and the run was stopped only after {took:.0f} s"
    assert "--- rank 0" in message and "--- rank 1" in message, message
    rank0, rank1 = message.split("--- rank 1")
    assert "in barrier" in rank0 and "deadlock.py" in rank0, f"rank 0 should be waiting in the collective:\n{rank0}"
    assert "acquire" in rank1 and "deadlock.py" in rank1, f"rank 1 should be waiting for the lock:\n{rank1}"


def test_a_run_that_ends_is_returned_not_stopped(tmp_path):
    """The quiet case: ranks that meet and exit come back with their output, well inside the guard."""
    script = tmp_path / "meets.py"
    script.write_text(
        "import torch.distributed as dist\ndist.init_process_group('gloo')\ndist.barrier()\n"
        "print(f'rank {dist.get_rank()} done', flush=True)\ndist.destroy_process_group()\n",
        encoding="utf-8",
    )
    result = launch([str(script)], nproc=2, guard_s=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rank 0 done" in result.stdout and "rank 1 done" in result.stdout, result.stdout


def test_ranks_on_an_empty_cache_build_nothing_and_say_what_to_build_first(tmp_path):
    cache = tmp_path / "cache"
    arguments = ["-m", "sft_eval.distributed", "--out", str(tmp_path / "out"), "--sft-cache", str(cache)]
    result = launch([*arguments, "--rows", "8"], nproc=2, guard_s=120)
    assert result.returncode != 0, "ranks on an empty cache must stop, not build inside the process group"
    said = [line for line in result.stderr.splitlines() if line.startswith("sft_eval.distributed: ")]
    assert said, result.stderr[-3000:]
    assert "no tokenizer-" in said[0] and f"sft-eval train --recipe {DEFAULT_RECIPE}" in said[0], said[0]
    assert f"--sft-cache {cache}" in said[0], said[0]
    built = [p.name for p in cache.glob("*") if not p.name.startswith(("datasets", "schemas"))]
    assert built == [], f"the ranks built {built}"


@pytest.fixture
def empty_cache(tmp_path) -> dict[str, str]:
    return {"SFT_EVAL_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT / "tests" / "plugins")}


def test_the_torchrun_suite_passes_alone_on_an_empty_cache(empty_cache, cli):
    """Trains its own fixtures (the tiny tokenizer and base, then torchrun): the newcomer's cold path."""
    result = cli.pytest("suites/test_distributed.py", "-q", cwd=ROOT, env=empty_cache)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "5 passed" in result.stdout, result.stdout[-2000:]


def test_the_suites_pass_in_reverse_order_on_an_empty_cache(empty_cache, cli):
    """Trains the session's fixtures from nothing (in the reverse of the usual order, the torchrun module last):
    each fixture must build what it needs itself."""
    result = cli.pytest("suites/", "-q", "-p", "reverse_order", cwd=ROOT, env=empty_cache)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout.splitlines()[-1], result.stdout[-2000:]


def test_the_reversing_plugin_reverses(empty_cache, cli):
    """The plugin does what the test above relies on: with it, the collection is listed last to first."""
    ids = ["suites/test_data.py", "suites/test_training.py"]
    forward = cli.pytest(*ids, "--collect-only", "-q", cwd=ROOT, env=empty_cache).stdout.splitlines()
    backward = cli.pytest(*ids, "--collect-only", "-q", "-p", "reverse_order", cwd=ROOT, env=empty_cache)
    listed = [line for line in forward if "::" in line]
    assert listed and [line for line in backward.stdout.splitlines() if "::" in line] == listed[::-1]
