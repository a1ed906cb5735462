"""Training: the recipe's SFT run with TRL (`SFTTrainer` + `SFTConfig`), and what it logged.

`[sft]` is passed to `trl.SFTConfig` by name; sft-eval only fixes what it must own (the output folder, the
seed, no checkpoints, no external loggers) and, on a machine without a GPU, turns off bf16 mixed precision
unless the recipe asks for it (TRL defaults it on). Every such choice is recorded in `TrainingRun.adjustments`.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.trainer_callback import PrinterCallback, TrainerCallback

from sft_eval.chat import check_rows_render
from sft_eval.console import interactive
from sft_eval.errors import SftEvalError
from sft_eval.plan import BatchPlan, plan_batches
from sft_eval.recipe import Recipe


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


_ALWAYS_RECORDED = (
    "seed",
    "bf16",
    "learning_rate",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "num_train_epochs",
    "max_steps",
    "logging_steps",
    "dataloader_drop_last",
)


class StepRecorder(TrainerCallback):
    """Records, per optimizer step and per rank, what the trainer really did.

    It sees each micro-batch where the trainer computes its loss (it wraps `trainer.compute_loss`): sequences,
    trainable label tokens (shifted, as the loss counts them), the `num_items_in_batch` the trainer normalised
    by, and the loss; the learning rate and grad norm come from the trainer's log at logging steps.
    """

    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []
        self._micro: list[dict[str, Any]] = []

    def attach(self, trainer: Any) -> None:
        compute_loss = trainer.compute_loss

        def observed(model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None):
            result = compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
            loss = result[0] if return_outputs else result
            labels = inputs["labels"]
            self._micro.append(
                {
                    "sequences": int(labels.shape[0]),
                    "label_tokens": int((labels[..., 1:] != -100).sum()),
                    "num_items_in_batch": None if num_items_in_batch is None else int(num_items_in_batch),
                    "loss": float(loss.detach()),
                }
            )
            return result

        trainer.compute_loss = observed
        trainer.add_callback(self)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        micro, self._micro = self._micro, []
        self.steps.append(
            {
                "step": state.global_step,
                "rank": args.process_index,
                "micro_batches": len(micro),
                "sequences": sum(m["sequences"] for m in micro),
                "label_tokens": sum(m["label_tokens"] for m in micro),
                "num_items_in_batch": micro[0]["num_items_in_batch"] if micro else None,
                "loss": sum(m["loss"] for m in micro),  # what the step's gradients come from
            }
        )

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if logs and self.steps and self.steps[-1]["step"] == state.global_step:
            for key in ("grad_norm", "learning_rate"):
                if key in logs:
                    self.steps[-1][key] = float(logs[key])


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


def plan_from_config(config: Mapping[str, Any], rows: int, world_size: int = 1) -> BatchPlan:
    """The batch plan an SFTConfig (as a dict) gives `rows` prepared rows on `world_size` processes."""
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


def recipe_plan(recipe: Recipe, rows: int, world_size: int = 1) -> BatchPlan:
    """The plan of the recipe's own SFTConfig (TRL's defaults where `[sft]` is silent), before any training."""
    with tempfile.TemporaryDirectory() as out:
        config, _ = sft_config(recipe, out)
    return plan_from_config(config.to_dict(), rows, world_size)


def sft_config(recipe: Recipe, output_dir: str, *, on_cpu: bool | None = None) -> tuple[Any, list[str]]:
    """The recipe's `[sft]` as a `trl.SFTConfig`, plus the settings sft-eval chose and why. `on_cpu`: train on the
    CPU (the model is there: `--device cpu`) or not; None: on the CPU when no GPU is available."""
    from trl import SFTConfig

    values = dict(recipe.sft)
    adjustments = []
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if on_cpu is None:
        on_cpu = not torch.cuda.is_available()
    if on_cpu:
        values["use_cpu"] = True
        if "bf16" not in values:
            values["bf16"] = False
            adjustments.append("on the CPU: bf16 mixed precision off (TRL's default is on; set sft.bf16 to choose)")
        if distributed:
            values.setdefault("ddp_backend", "gloo")  # torchrun on CPU: NCCL needs GPUs
    if distributed:
        values.setdefault("ddp_find_unused_parameters", False)  # a decoder uses every parameter
    values.setdefault("seed", recipe.seed)
    values.setdefault("data_seed", recipe.seed)
    values.setdefault("disable_tqdm", not interactive())
    try:
        config = SFTConfig(output_dir=output_dir, save_strategy="no", report_to=[], **values)
    except (ValueError, TypeError) as exc:
        where = recipe.path or "recipe"
        raise SftEvalError(f"{where}: [sft] is not a valid trl.SFTConfig: {str(exc).splitlines()[0]}") from None
    return config, adjustments


def rows_without_targets(dataset: Any) -> int:
    """Rows of a TRL-prepared dataset (truncated, with its loss masks) that leave no token to predict: position 0
    is never a target, and only positions its `assistant_masks` / `completion_mask` keep are trained."""
    mask_column = next((c for c in ("assistant_masks", "completion_mask") if c in dataset.column_names), None)
    columns = dataset.select_columns(["input_ids", *([mask_column] if mask_column else [])])
    empty = 0
    for batch in columns.iter(batch_size=1024):  # Arrow batches, not one Python dict per row
        masks = batch[mask_column] if mask_column else [[1] * len(ids) for ids in batch["input_ids"]]
        empty += sum(not any(mask[1 : len(ids)]) for ids, mask in zip(batch["input_ids"], masks, strict=True))
    return empty


def train_sft(
    recipe: Recipe,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: list[dict[str, Any]],
    output_dir: str,
) -> TrainingRun:
    """Fine-tune `model` in place on `rows` with the recipe's SFTConfig, on the device the model is on; return what
    the trainer logged."""
    from trl import SFTTrainer

    config, adjustments = sft_config(recipe, output_dir, on_cpu=model.device.type == "cpu")
    check_rows_render(tokenizer, rows)
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    untrainable = rows_without_targets(trainer.train_dataset)
    if untrainable == len(trainer.train_dataset):
        raise SftEvalError(
            f"data.train: none of the {untrainable} rows keeps a token to learn after truncation to "
            f"sft.max_length = {config.max_length} (and the loss mask): training would learn nothing"
        )
    if untrainable:
        adjustments.append(
            f"{untrainable} of {len(trainer.train_dataset)} rows keep no token to learn after truncation to "
            f"sft.max_length = {config.max_length}: they cost steps and teach nothing"
        )
    if config.disable_tqdm:  # without bars the Trainer prints every log dict instead; the run records them anyway
        trainer.remove_callback(PrinterCallback)
    recorder = StepRecorder()
    recorder.attach(trainer)
    result = trainer.train()
    model.eval()
    state = trainer.state
    return TrainingRun(
        log_history=list(state.log_history),
        global_step=state.global_step,
        max_steps=state.max_steps,
        num_train_epochs=float(config.num_train_epochs),
        train_rows=len(trainer.train_dataset),
        train_runtime_s=float(result.metrics.get("train_runtime", 0.0)),
        sft_config={k: v for k, v in config.to_dict().items() if k in recipe.sft or k in _ALWAYS_RECORDED},
        world_size=config.world_size,
        adjustments=adjustments,
        steps=recorder.steps,
    )
