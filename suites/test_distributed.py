"""Two processes (torchrun, gloo on CPU): the batch math holds, and the loss is the one-process loss.

The recipe's model trains on 32 rows at 2 per device x 2 processes x 2 accumulation = 8 sequences a step,
and once in one process at 4 x 1 x 2 = 8. Same rows per step, same token-weighted loss: the logged per-step
losses agree within 5e-6 (measured: they agree to about 1e-6).
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from sft_eval.distributed import Hung, launch
from sft_eval.plan import plan_batches
from sft_eval.records import TrainingRun, normalisation_problems

pytestmark = pytest.mark.distributed
ROWS, BATCH, ACCUM, WORLD = 32, 2, 2, 2
HANG_GUARD_S = 300  # seconds; the run takes seconds, only a hang reaches it
LOSS_TOLERANCE = 5e-6
SETTINGS = {
    "num_train_epochs": 1,
    "logging_steps": 1,
    "warmup_steps": 0,
    "lr_scheduler_type": "constant",
    "learning_rate": 1e-3,
}


class _NotCached(Exception):
    """The torchrun record is not in the cache yet (raised by the probe that `cached` would call to build it)."""


def _not_cached(folder) -> None:
    raise _NotCached


@pytest.fixture(scope="module")
def ranks(sft_pipeline, cached, tmp_path_factory) -> list[TrainingRun]:
    device = sft_pipeline.device
    if device.type == "cuda" and torch.cuda.device_count() < WORLD:
        pytest.skip(
            f"{WORLD} processes on cuda need {WORLD} GPUs and this machine has {torch.cuda.device_count()}; "
            "--sft-device cpu runs this check with gloo"
        )
    overrides = {**SETTINGS, "per_device_train_batch_size": BATCH, "gradient_accumulation_steps": ACCUM}
    inputs = {
        "world": WORLD,
        "rows": ROWS,
        "dropout": False,
        "device": device.type,
        "sft": {**sft_pipeline.recipe.sft, **overrides},
    }
    # No lock is held across a wait on another process: the cache is asked first (the probe ends the build it would
    # start), torchrun runs under no lock, and its record is then copied into the cache under the entry's lock.
    # What the ranks load is built first, here, in one process: they never build inside a process group (one
    # would hold an entry's lock in a collective while the other waits for the lock).
    try:
        out = cached("torchrun", inputs, _not_cached)
    except _NotCached:
        _ = sft_pipeline.tokenizer, sft_pipeline.base_model_dir
        ran = tmp_path_factory.mktemp("torchrun")
        arguments = [
            "-m",
            "sft_eval.distributed",
            "--no-dropout",
            "--out",
            str(ran),
            "--rows",
            str(ROWS),
            "--recipe",
            str(sft_pipeline.recipe.path),
            "--sft-cache",
            str(sft_pipeline.cache.root),
            "--device",
            device.type,  # each rank takes its own GPU (LOCAL_RANK) on cuda
            *[arg for key, value in overrides.items() for arg in ("--set", f"{key} = {json.dumps(value)}")],
        ]
        try:  # the run takes seconds; the guard only turns a hang into a failure with each rank's stack
            result = launch(arguments, nproc=WORLD, guard_s=HANG_GUARD_S)
        except Hung as exc:
            pytest.fail(str(exc))
        written = sorted(p.name for p in ran.iterdir())
        assert result.returncode == 0, f"{written}\n{result.stdout[-3000:]}{result.stderr[-6000:]}"
        records = [ran / f"rank-{r}.json" for r in range(WORLD)]
        out = cached("torchrun", inputs, lambda folder: [shutil.copy(record, folder) for record in records])
    return [TrainingRun.from_dict(json.loads((out / f"rank-{r}.json").read_text())) for r in range(WORLD)]


def test_both_ranks_ran_the_planned_steps(ranks):
    plan = plan_batches(ranks[0].train_rows, BATCH, ACCUM, WORLD)
    for rank, run in enumerate(ranks):
        assert run.world_size == WORLD, f"rank {rank} saw world size {run.world_size}"
        assert run.max_steps == run.global_step == len(run.steps) == plan.optimizer_steps


def test_measured_effective_batch_is_per_device_times_processes_times_accumulation(ranks):
    per_step = [sum(run.steps[i]["sequences"] for run in ranks) for i in range(len(ranks[0].steps))]
    assert per_step == [BATCH * WORLD * ACCUM] * len(per_step), per_step


def test_a_plan_that_forgets_the_second_process_is_caught(ranks):
    measured = sum(run.steps[0]["sequences"] for run in ranks)
    assert plan_batches(ranks[0].train_rows, BATCH, ACCUM, world_size=1).effective_batch != measured


def test_loss_is_normalised_by_the_tokens_of_all_processes(ranks):
    for i in range(len(ranks[0].steps)):
        tokens = sum(run.steps[i]["label_tokens"] for run in ranks)
        assert all(run.steps[i]["step_label_tokens"] == tokens for run in ranks), f"step {i + 1}"
    for run in ranks:
        assert not (problems := normalisation_problems(run.steps)), "; ".join(problems)


def test_loss_equals_the_one_process_run_with_the_same_effective_batch(ranks, short_run):
    single = short_run(ROWS, per_device_train_batch_size=BATCH * WORLD, gradient_accumulation_steps=ACCUM, **SETTINGS)
    two = [loss for _, loss in ranks[0].losses()]
    one = [loss for _, loss in single.losses()]
    worst = max(abs(a - b) for a, b in zip(one, two, strict=True))
    assert worst <= LOSS_TOLERANCE, f"per-step losses differ by up to {worst:.2e}: one {one} two {two}"
