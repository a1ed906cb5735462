"""The plain records that flow between stages: an answer, and what a training run did.

Nothing here imports torch, transformers or a stage: generation returns `Answer`s, training returns a
`TrainingRun`, and scoring, the suites and the report read them (also back from JSON) without touching a model.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from sft_eval import validate
from sft_eval.errors import SftEvalError
from sft_eval.plan import BatchPlan, plan_from_config, plan_mismatches


@dataclass(frozen=True)
class Answer:
    question: str
    text: str  # decoded without special tokens, stripped: what a user reads
    raw: str  # decoded with special tokens: where template markers leak
    token_ids: list[int]  # new tokens, up to and including the stop token
    new_tokens: int
    stop_reason: str  # "eos": ended with a stop token; "length": ran into max_new_tokens

    def to_dict(self) -> dict[str, Any]:
        # by hand, not asdict's recursive deep copy: one per answer, 20,000 in a 10,000-question report
        return {
            "question": self.question,
            "text": self.text,
            "raw": self.raw,
            "token_ids": list(self.token_ids),
            "new_tokens": self.new_tokens,
            "stop_reason": self.stop_reason,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "answer") -> Answer:
        """An answer from JSON (the answer cache, a report), every field checked: anything else is one
        `SftEvalError` naming `where` and the field."""
        if not isinstance(data, dict):
            raise SftEvalError(f"{where} is {validate.shown(data)}, not an object")
        texts = dict.fromkeys(("question", "text", "raw", "stop_reason"), validate.text)
        counts = {"new_tokens": functools.partial(validate.integer, minimum=0), "token_ids": _token_ids}
        validate.fields(data, where, required={**texts, **counts}, optional={})
        return cls(**{name: data[name] for name in (*texts, *counts)})


def _token_ids(value: Any, where: str) -> list[int]:
    for k, token in enumerate(validate.a_list(value, where)):
        validate.integer(token, f"{where}[{k}]", minimum=0)
    return value


def cached_answer(data: Any, question: str) -> Answer | None:
    """An answer-cache entry as an `Answer` when it is a whole, valid answer to `question`; None (so it is
    generated again, as a missing or unreadable entry is) when it is for another question, lacks a field or holds
    a wrong type."""
    try:
        answer = Answer.from_dict(data)
    except SftEvalError:
        return None
    return answer if answer.question == question else None


class Conversation(Protocol):
    """A conversation a backend answers as it is (`answer_tools`): a tool item (`data.ToolItem`), a judge's
    prompt (`judge.chat.Prompt`). `question` is what a failure line quotes."""

    @property
    def messages(self) -> list[dict[str, Any]]: ...

    @property
    def tools(self) -> list[dict[str, Any]] | None: ...

    @property
    def question(self) -> str: ...


@dataclass(frozen=True)
class ToolAnswer:
    """A model's answer to one tool item: the generated `answer`, and the assistant `message` (`content`,
    `tool_calls`) where the backend parsed it already (a server parses calls itself); None: the raw text is parsed
    here with the template's own response parser."""

    answer: Answer
    message: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"answer": self.answer.to_dict(), "message": self.message}


def cached_tool_answer(data: Any, question: str) -> ToolAnswer | None:
    """A tool answer from the answer cache when whole and valid (for `question`); None: asked again."""
    if not isinstance(data, dict) or not isinstance(data.get("message"), (dict, type(None))):
        return None
    answer = cached_answer(data.get("answer"), question)
    return None if answer is None else ToolAnswer(answer, data["message"])


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
    steps: list[dict[str, Any]] = field(default_factory=list)  # SftEvalRecorder's records, one per optimizer step
    world_size: int = 1
    source: str = ""  # a run trained elsewhere: its trainer_state.json (or why there is none); "" trained here
    train_batch_size: int | None = None  # per device, as that trainer_state.json recorded it
    peft: dict[str, Any] | None = None  # a LoRA run: rank, alpha, adapted modules, trainable parameters; None: full

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
    if not run.log_history and run.source:
        return run.source
    return (
        f"training logged {logged} loss value(s) in {run.global_step} step(s), too few to see whether the loss "
        "fell; train longer or set `sft.logging_steps` lower"
    )


def plan_problems(run: TrainingRun) -> list[str]:
    """Where the run did not do what its recipe planned: the optimizer steps the trainer planned and ran, the
    per-device batch it recorded, and (with per-step records) each step's micro-batches and sequences."""
    plan = run.plan()
    setup = f"{run.train_rows} rows at {plan.per_device_batch} x {plan.world_size} x {plan.grad_accum}"
    problems = []
    if run.steps:
        problems += plan_mismatches(plan, run.steps, run.max_steps)
    elif run.max_steps != plan.optimizer_steps:
        problems.append(
            f"the trainer planned {run.max_steps} optimizer steps; the recipe's plan for {setup} is "
            f"{plan.optimizer_steps}"
        )
    if run.global_step != run.max_steps:
        problems.append(f"the run stopped at step {run.global_step} of {run.max_steps}: the model is not its last")
    if run.train_batch_size is not None and run.train_batch_size != plan.per_device_batch:
        problems.append(
            f"the trainer ran {run.train_batch_size} sequences per device per micro-batch; the recipe says "
            f"per_device_train_batch_size = {plan.per_device_batch}"
        )
    return problems


# Relative. Measured on the suites' runs: correct trainers within 1.4e-7 on a CPU and 8.6e-8 on an H100 in bf16
# (the trainer's sum and the recorder's are the same numbers added in another order); the broken trainer (each
# micro-batch its own mean) off by 0.21 to 0.30 on both.
NORMALISATION_TOLERANCE = 2e-3


def normalisation_problems(steps: list[dict[str, Any]], tolerance: float = NORMALISATION_TOLERANCE) -> list[str]:
    """Steps whose loss, as the trainer logged it, is not the token-weighted loss of every micro-batch of every
    rank in the step (`SftEvalRecorder`'s `token_weighted_loss`): the trainer then normalised per micro-batch or
    per rank, and accumulation or a second process changes what the model learns. Only steps logged alone
    (logging every step) whose two normalisations give different losses can tell (see `normalisation_unjudged`)."""
    problems = []
    for step in _telling_steps(steps, tolerance):
        logged, expected = step["logged_loss"], step["token_weighted_loss"]
        if not abs(logged - expected) <= tolerance * max(1.0, abs(expected)):
            alike = (
                "" if "per_micro_batch_loss" not in step else f" (per micro-batch: {step['per_micro_batch_loss']:.6f})"
            )
            problems.append(
                f"step {step['step']}: the trainer logged loss {logged:.6f}; over the {step['step_label_tokens']} "
                f"label tokens of the step's {step['micro_batches']} micro-batch(es) x {step['world_size']} "
                f"process(es) the token-weighted loss is {expected:.6f}{alike}"
            )
    return problems


def normalisation_unjudged(steps: list[dict[str, Any]], tolerance: float = NORMALISATION_TOLERANCE) -> str | None:
    """Why `normalisation_problems` cannot judge these steps, or None when it can."""
    if _telling_steps(steps, tolerance):
        return None
    logged = [s for s in steps if "logged_loss" in s]
    if not logged:
        return "no step was logged alone (set sft.logging_steps = 1) with SftEvalRecorder's record"
    return (
        f"in all {len(logged)} logged steps the token-weighted loss and the mean of the micro-batch losses agree "
        "within the tolerance (the micro-batches' tokens all weigh alike, as in an untrained model): the logged "
        "loss cannot tell the normalisations apart"
    )


def _telling_steps(steps: list[dict[str, Any]], tolerance: float) -> list[dict[str, Any]]:
    """The steps logged alone whose token-weighted and per-micro-batch losses differ beyond `tolerance`."""
    return [
        step
        for step in steps
        if "logged_loss" in step
        and abs(step.get("per_micro_batch_loss", math.inf) - step["token_weighted_loss"])
        > tolerance * max(1.0, abs(step["token_weighted_loss"]))
    ]


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
