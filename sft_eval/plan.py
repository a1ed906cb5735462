"""Batch plan: what a training run will do, computed before it runs.

"Effective batch = per-device batch x devices x gradient accumulation" is the lesson's arithmetic (100 rows,
1 x 1 x 8 = 8, 13 optimizer steps). The rest follows the way transformers' Trainer and accelerate actually
batch: each rank gets every W-th micro-batch of the dataloader (padded to even counts unless drop_last), an
epoch's optimizer steps are ceil(micro-batches per rank / accumulation), and the last step of an epoch may
accumulate fewer micro-batches than asked: with 100 rows at 1 x 8, step 13 sees 4 rows, not 8.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from sft_eval.errors import SftEvalError


@dataclass(frozen=True)
class BatchPlan:
    rows: int
    per_device_batch: int
    grad_accum: int
    world_size: int
    epochs: float | None
    max_steps: int | None
    drop_last: bool
    effective_batch: int  # sequences per optimizer step (a full step)
    micro_batches_per_rank: int  # per epoch
    steps_per_epoch: int
    optimizer_steps: int
    last_step_micro_batches: int  # micro-batches per rank in an epoch's last step

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_batches(
    rows: int,
    per_device_batch: int,
    grad_accum: int,
    world_size: int = 1,
    epochs: float | None = 1.0,
    max_steps: int | None = None,
    drop_last: bool = False,
) -> BatchPlan:
    """The plan for `rows` prepared training rows; `max_steps`, when given, overrides `epochs` (as in Trainer)."""
    counts = {"rows": rows, "per-device batch": per_device_batch, "gradient accumulation": grad_accum}
    for name, value in {**counts, "world size": world_size}.items():
        if value < 1:
            raise SftEvalError(f"{name} must be at least 1, not {value}")
    if max_steps is None and (epochs is None or epochs <= 0):
        raise SftEvalError("give epochs > 0 or max_steps")
    if max_steps is not None and max_steps < 1:
        raise SftEvalError(f"max_steps must be at least 1, not {max_steps}")
    global_batches = rows // per_device_batch if drop_last else math.ceil(rows / per_device_batch)
    per_rank = global_batches // world_size if drop_last else math.ceil(global_batches / world_size)
    if per_rank < 1:
        raise SftEvalError(
            f"{rows} rows give no full micro-batch of {per_device_batch} on each of {world_size} ranks (drop_last)"
        )
    steps_per_epoch = max(math.ceil(per_rank / grad_accum), 1)
    steps = max_steps if max_steps is not None else math.ceil((epochs or 0) * steps_per_epoch)  # epochs > 0 here
    remainder = per_rank % grad_accum or grad_accum
    return BatchPlan(
        rows=rows,
        per_device_batch=per_device_batch,
        grad_accum=grad_accum,
        world_size=world_size,
        epochs=None if max_steps is not None else epochs,
        max_steps=max_steps,
        drop_last=drop_last,
        effective_batch=per_device_batch * world_size * grad_accum,
        micro_batches_per_rank=per_rank,
        steps_per_epoch=steps_per_epoch,
        optimizer_steps=steps,
        last_step_micro_batches=remainder,
    )


def plan_mismatches(plan: BatchPlan, steps: list[dict[str, Any]], max_steps: int) -> list[str]:
    """Where a run's recorded steps (one process) differ from the plan: step count, micro-batches, sequences."""
    problems = []
    if len(steps) != plan.optimizer_steps or max_steps != plan.optimizer_steps:
        problems.append(f"plan {plan.optimizer_steps} optimizer steps; trainer planned {max_steps}, ran {len(steps)}")
    for index, step in enumerate(steps):
        last_of_epoch = (index + 1) % plan.steps_per_epoch == 0
        expected = plan.last_step_micro_batches if last_of_epoch else plan.grad_accum
        if step["micro_batches"] != expected:
            problems.append(f"step {step['step']}: {step['micro_batches']} micro-batches, plan {expected}")
        if step["sequences"] > expected * plan.per_device_batch:
            problems.append(
                f"step {step['step']}: {step['sequences']} sequences > {expected} x {plan.per_device_batch}"
            )
    epochs = len(steps) / plan.steps_per_epoch
    if plan.max_steps is None and epochs == int(epochs) and not plan.drop_last:
        consumed = sum(s["sequences"] for s in steps)
        if consumed != plan.rows * int(epochs):
            problems.append(f"{consumed} sequences consumed in {int(epochs)} epoch(s) of {plan.rows} rows")
    return problems


def plan_from_config(config: Mapping[str, Any], rows: int, world_size: int = 1) -> BatchPlan:
    """The batch plan an SFTConfig (as a dict: `SFTConfig.to_dict()`, or a run's record of it) gives `rows`
    prepared rows on `world_size` processes."""
    max_steps = config.get("max_steps", -1)
    return plan_batches(
        rows,
        config["per_device_train_batch_size"],
        config["gradient_accumulation_steps"],
        world_size,
        epochs=None if max_steps > 0 else config["num_train_epochs"],
        max_steps=max_steps if max_steps > 0 else None,
        drop_last=config.get("dataloader_drop_last", False),
    )
