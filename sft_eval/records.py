"""The plain records that flow between stages: an answer, and what a training run did.

Nothing here imports torch, transformers or a stage: generation returns `Answer`s, training returns a
`TrainingRun`, and scoring, the suites and the report read them (also back from JSON) without touching a model.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from sft_eval.plan import BatchPlan, plan_from_config


@dataclass(frozen=True)
class Answer:
    question: str
    text: str  # decoded without special tokens, stripped: what a user reads
    raw: str  # decoded with special tokens: where template markers leak
    token_ids: list[int]  # new tokens, up to and including the stop token
    new_tokens: int
    stop_reason: str  # "eos": ended with a stop token; "length": ran into max_new_tokens

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Answer:
        return cls(**data)


@dataclass(frozen=True)
class TrainingRun:
    """What the trainer did, as plain data: JSON in the cache, tables and curves in the report."""

    log_history: list[dict[str, Any]]
    global_step: int
    max_steps: int
    num_train_epochs: float
    train_rows: int
    train_runtime_s: float
    sft_config: dict[str, Any]
    adjustments: list[str] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)  # StepRecorder's records, one per optimizer step
    world_size: int = 1

    def plan(self) -> BatchPlan:
        """The batch plan for this run's prepared rows and settings, to hold its record against."""
        return plan_from_config(self.sft_config, self.train_rows, self.world_size)

    def losses(self) -> list[tuple[int, float]]:
        """(step, training loss) for each logging window, in order."""
        return [(int(e["step"]), float(e["loss"])) for e in self.log_history if "loss" in e]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingRun:
        return cls(**data)


def loss_drop(run: TrainingRun) -> float | None:
    """Fraction by which the last logging window's loss is below the first's (0.5 = halved); None when the run
    logged fewer than two windows (a smoke run of a step or two), see `unjudged_loss`."""
    losses = run.losses()
    if len(losses) < 2:
        return None
    first, last = losses[0][1], losses[-1][1]
    return (first - last) / first


def unjudged_loss(run: TrainingRun) -> str | None:
    """Why the loss trend of `run` cannot be judged, or None when it can."""
    logged = len(run.losses())
    if logged >= 2:
        return None
    return (
        f"training logged {logged} loss value(s) in {run.global_step} step(s), too few to see whether the loss "
        "fell; train longer or set `sft.logging_steps` lower"
    )


def loss_problems(run: TrainingRun, min_loss_drop: float) -> list[str]:
    """Non-finite losses or grad norms, and a last logging window not `min_loss_drop` below the first."""
    problems = [f"step {s}: loss {v}" for s, v in run.losses() if not math.isfinite(v)]
    problems += [
        f"step {e['step']}: grad norm {e['grad_norm']}"
        for e in run.log_history
        if "grad_norm" in e and not math.isfinite(float(e["grad_norm"]))
    ]
    drop = loss_drop(run)
    if not problems and drop is not None and drop < min_loss_drop:
        first, last = run.losses()[0], run.losses()[-1]
        problems.append(
            f"loss {first[1]:.3f} (step {first[0]}) -> {last[1]:.3f} (step {last[0]}): a {drop:.0%} drop, "
            f"below {min_loss_drop:.0%}"
        )
    return problems
