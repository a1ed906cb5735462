"""Batch plan arithmetic and its CLI contract."""

from __future__ import annotations

import json
import math

import pytest

from sft_eval.errors import SftEvalError
from sft_eval.plan import plan_batches


def test_the_lessons_plan():
    plan = plan_batches(100, 1, 8)
    assert (plan.effective_batch, plan.micro_batches_per_rank, plan.optimizer_steps) == (8, 100, 13)
    assert plan.last_step_micro_batches == 4


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((100, 1, 8, 2), (16, 50, 7, 2)),  # two processes: 50 micro-batches each, ceil(50 / 8) = 7
        ((101, 2, 4, 2), (16, 26, 7, 2)),  # 51 global batches, 26 per rank (one repeated to even out)
        ((10, 4, 1, 1), (4, 3, 3, 1)),  # half batch at the end, no accumulation
    ],
    ids=["100x1x8-w2", "101x2x4-w2", "10x4x1"],
)
def test_effective_batch_micro_batches_steps_and_last_step(args, expected):
    plan = plan_batches(*args)
    assert (
        plan.effective_batch,
        plan.micro_batches_per_rank,
        plan.optimizer_steps,
        plan.last_step_micro_batches,
    ) == expected


def test_drop_last_epochs_and_max_steps():
    assert plan_batches(10, 4, 1, drop_last=True).micro_batches_per_rank == 2
    assert plan_batches(100, 1, 8, epochs=2.5).optimizer_steps == math.ceil(2.5 * 13)
    assert plan_batches(100, 1, 8, epochs=None, max_steps=5).optimizer_steps == 5


@pytest.mark.parametrize(
    "args", [(0, 1, 1), (10, 0, 1), (10, 1, 0), (10, 1, 1, 0)], ids=["rows", "batch", "accum", "world"]
)
def test_nonsense_is_refused(args):
    with pytest.raises(SftEvalError, match="must be at least 1"):
        plan_batches(*args)


def test_cli_json_contract(cli):
    result = cli.run("plan", "--rows", "100", "--per-device-batch", "1", "--grad-accum", "8", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["effective_batch"], data["micro_batches_per_rank"], data["optimizer_steps"]) == (8, 100, 13)


def test_cli_bad_input_is_exit_2_in_one_line(cli):
    for args in (
        ["--rows", "0", "--per-device-batch", "1", "--grad-accum", "8"],
        ["--rows", "10", "--per-device-batch", "1", "--grad-accum", "8", "--epochs", "1", "--max-steps", "3"],
        ["--rows", "ten", "--per-device-batch", "1", "--grad-accum", "8"],
        ["--rows", "10", "--per-device-batch", "1", "--grad-accum", "8", "--epochs", "nan"],
        ["--rows", "10", "--per-device-batch", "1", "--grad-accum", "8", "--epochs", "inf"],
        ["--rows", "10", "--per-device-batch", "1", "--grad-accum", "8", "--epochs", "0"],
        ["--rows", "10", "--per-device-batch", "1", "--grad-accum", "8", "--max-steps", "0"],
    ):
        cli.bad_input(cli.run("plan", *args))
