"""Did SFT train, and did the trainer do what the batch plan says? The lesson reads this by eye.

The plan-vs-measured grid runs short SFT runs of the recipe's own model, tokenizer and rows with other batch
settings (the lesson's 100 rows at 1 x 8 among them) and compares the SftEvalRecorder's record with the plan.
Each check also meets a deliberately broken case, so it is shown able to fail.
"""

from __future__ import annotations

import dataclasses
import math

import pytest

from sft_eval.plan import plan_batches, plan_mismatches
from sft_eval.records import loss_problems, normalisation_problems, normalisation_unjudged
from sft_eval.verdict import training_checks


def _check(name, sft_training_run, sft_recipe):
    """One of the training checks `sft-eval report` judges too (`sft_eval.verdict`): skipped where not judged."""
    check = training_checks(sft_recipe.thresholds, sft_training_run)[name]
    if check.passed is None:
        pytest.skip(check.message)
    assert check.passed, check.message


def test_loss_and_grad_norm_are_finite_and_the_loss_fell(sft_training_run, sft_recipe):
    _check("training.loss", sft_training_run, sft_recipe)


def test_the_run_did_what_the_recipe_planned(sft_training_run, sft_recipe):
    """Optimizer steps planned and run, the per-device batch, and (with SftEvalRecorder's records) each step."""
    _check("training.plan", sft_training_run, sft_recipe)


def test_the_logged_loss_is_normalised_over_each_whole_step(sft_training_run):
    if reason := normalisation_unjudged(sft_training_run.steps):
        pytest.skip(f"{reason}; the grid's runs check the normalisation")
    assert not (problems := normalisation_problems(sft_training_run.steps)), "; ".join(problems)


GRID = [
    (100, 1, 8, {"num_train_epochs": 1}),  # the lesson: 100 rows, 1 x 8 -> 13 steps, the last one with 4 rows
    (37, 2, 4, {"num_train_epochs": 1}),  # uneven: a half batch and a short last step
    (24, 4, 1, {"num_train_epochs": 2}),
    (17, 1, 3, {"num_train_epochs": 1.5}),  # fractional epochs round the steps up
    (30, 3, 4, {"max_steps": 2}),
]


@pytest.mark.parametrize(
    ("rows", "batch", "accum", "span"),
    GRID,
    ids=["lesson-100x1x8", "37x2x4", "24x4x1-2ep", "17x1x3-1.5ep", "30x3x4-max2"],
)
def test_plan_matches_what_the_trainer_did(short_run, rows, batch, accum, span):
    run = short_run(rows, per_device_train_batch_size=batch, gradient_accumulation_steps=accum, **span)
    plan = plan_batches(
        run.train_rows, batch, accum, epochs=span.get("num_train_epochs"), max_steps=span.get("max_steps")
    )
    problems = plan_mismatches(plan, run.steps, run.max_steps)
    assert not problems, "; ".join(problems)
    assert not (problems := normalisation_problems(run.steps)), "; ".join(problems)


def test_the_lessons_run_is_13_steps_and_the_last_sees_4_rows(short_run):
    run = short_run(100, per_device_train_batch_size=1, gradient_accumulation_steps=8, num_train_epochs=1)
    assert run.global_step == 13 and [s["sequences"] for s in run.steps] == [8] * 12 + [4]


def test_a_floor_based_plan_is_caught(short_run):
    """The historic bug: floor(100 / 8) = 12 steps. The comparison must notice the 13th."""
    run = short_run(100, per_device_train_batch_size=1, gradient_accumulation_steps=8, num_train_epochs=1)
    plan = plan_batches(run.train_rows, 1, 8)
    floor_plan = dataclasses.replace(plan, optimizer_steps=math.floor(100 / 8), steps_per_epoch=12)
    assert plan_mismatches(floor_plan, run.steps, run.max_steps)


def test_an_absurd_learning_rate_fails_the_loss_check(short_run, sft_recipe):
    run = short_run(
        48,
        per_device_train_batch_size=8,
        gradient_accumulation_steps=1,
        num_train_epochs=2,
        learning_rate=50.0,
        lr_scheduler_type="constant",
    )
    assert loss_problems(run, sft_recipe.thresholds.min_loss_drop), [loss for _, loss in run.losses()]


def test_same_recipe_and_seed_give_the_same_loss_trajectory(sft_pipeline, short_run, tmp_path):
    settings = {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 2, "num_train_epochs": 1}
    first = short_run(40, **settings)
    again, _ = sft_pipeline.train_variant(40, tmp_path, **settings)  # the same run, not from the cache
    assert [s["loss"] for s in again.steps] == [s["loss"] for s in first.steps]


def test_another_seed_gives_another_trajectory(short_run):
    """The determinism check can fail: a different data order shows up in the losses."""
    settings = {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 2, "num_train_epochs": 1}
    assert [s["loss"] for s in short_run(40, seed=1, data_seed=1, **settings).steps] != [
        s["loss"] for s in short_run(40, **settings).steps
    ]
