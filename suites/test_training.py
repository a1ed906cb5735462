"""Did SFT train? The lesson reads the loss by eye; here the recipe's threshold decides."""

from __future__ import annotations

import math

from sft_eval.training import loss_drop


def test_loss_is_finite(training_run):
    bad = [(step, loss) for step, loss in training_run.losses() if not math.isfinite(loss)]
    assert not bad, f"non-finite training loss at (step, loss) {bad}"


def test_loss_fell_by_recipe_threshold(training_run, recipe):
    losses = training_run.losses()
    drop = loss_drop(training_run)
    assert drop >= recipe.thresholds.min_loss_drop, (
        f"loss went {losses[0][1]:.3f} (step {losses[0][0]}) -> {losses[-1][1]:.3f} (step {losses[-1][0]}), "
        f"a {drop:.0%} drop; the recipe asks for at least {recipe.thresholds.min_loss_drop:.0%}"
    )
