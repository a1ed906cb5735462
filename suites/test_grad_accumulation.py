"""Gradient accumulation is batching, not a different objective: 8 x 1, 1 x 8 and 2 x 4 train the same model.

Rows of different lengths with assistant-only labels (partly masked), same seed, 4 optimizer steps, constant
learning rate 1e-3, no clipping. Tolerances, calibrated on this machine and kept about 15x above what the
correct configurations differ by: per-step logged loss within 5e-6 (measured at most 4.8e-7), parameters within 1e-4
(measured at most 6.1e-6). The broken variant (each micro-batch averaged over its own tokens, then divided by
the accumulation: transformers before `num_items_in_batch`) differs by 7.4e-3 to 7.8e-3 in parameters and
0.18 to 0.23 in loss, and must fail.
"""

from __future__ import annotations

import contextlib
import functools

import pytest
import torch
import trl

LOSS_TOLERANCE = 5e-6
PARAMETER_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def trained(sft_pipeline):
    """(batch, accumulation, broken) -> (per-step logged losses, final parameters), cached on disk."""

    @contextlib.contextmanager
    def broken_trainer():  # no token count across micro-batches: each is its own mean, then / accumulation
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(trl.SFTTrainer, "_get_num_items_in_batch", lambda self, *args, **kwargs: None)
            yield

    def keep_parameters(folder, model):
        torch.save(torch.cat([p.detach().flatten() for p in model.parameters()]), folder / "parameters.pt")

    @functools.cache
    def train(batch: int, accum: int, broken: bool = False):
        run, folder = sft_pipeline.variant_run(
            32,
            stage="ga-run",
            key={"broken": broken},
            keep=keep_parameters,
            patch=broken_trainer if broken else None,
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=accum,
            num_train_epochs=1,
            learning_rate=1e-3,
            lr_scheduler_type="constant",
            max_grad_norm=0.0,
        )
        return [loss for _, loss in run.losses()], torch.load(folder / "parameters.pt")

    return train


def differences(reference, other) -> tuple[float, float]:
    losses = max(abs(a - b) for a, b in zip(reference[0], other[0], strict=True))
    return losses, float((reference[1] - other[1]).abs().max())


@pytest.mark.parametrize(("batch", "accum"), [(1, 8), (2, 4)], ids=["1x8", "2x4"])
def test_accumulated_runs_equal_the_full_batch_run(trained, batch, accum):
    losses, parameters = differences(trained(8, 1), trained(batch, accum))
    assert losses <= LOSS_TOLERANCE, f"{batch}x{accum} vs 8x1: per-step loss differs by {losses:.2e}"
    assert parameters <= PARAMETER_TOLERANCE, f"{batch}x{accum} vs 8x1: parameters differ by {parameters:.2e}"


@pytest.mark.parametrize(("batch", "accum"), [(1, 8), (2, 4)], ids=["1x8", "2x4"])
def test_per_micro_batch_averaging_is_detected(trained, batch, accum):
    losses, parameters = differences(trained(8, 1), trained(batch, accum, broken=True))
    assert losses > LOSS_TOLERANCE and parameters > PARAMETER_TOLERANCE, (losses, parameters)
