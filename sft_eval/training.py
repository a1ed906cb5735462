"""Training: the recipe's SFT run with TRL (`SFTTrainer` + `SFTConfig`), and what it logged.

`[sft]` is passed to `trl.SFTConfig` by name; sft-eval only fixes what it must own (the output folder, the
seed, no checkpoints, no external loggers) and, on a machine without a GPU, turns off bf16 mixed precision
unless the recipe asks for it (TRL defaults it on). Every such choice is recorded in `TrainingRun.adjustments`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.trainer_callback import PrinterCallback

from sft_eval.console import interactive
from sft_eval.errors import SftEvalError
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

    def losses(self) -> list[tuple[int, float]]:
        """(step, training loss) for each logging window, in order."""
        return [(int(e["step"]), float(e["loss"])) for e in self.log_history if "loss" in e]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingRun:
        return cls(**data)


def loss_drop(run: TrainingRun) -> float:
    """Fraction by which the last logging window's loss is below the first's (0.5 = halved)."""
    losses = run.losses()
    if len(losses) < 2:
        raise SftEvalError(
            f"training logged {len(losses)} loss value(s); set `sft.logging_steps` below "
            f"the run's {run.global_step} steps to see whether the loss fell"
        )
    first, last = losses[0][1], losses[-1][1]
    return (first - last) / first


def sft_config(recipe: Recipe, output_dir: str) -> tuple[Any, list[str]]:
    """The recipe's `[sft]` as a `trl.SFTConfig`, plus the settings sft-eval chose and why."""
    from trl import SFTConfig

    values = dict(recipe.sft)
    adjustments = []
    if not torch.cuda.is_available():
        values["use_cpu"] = True
        if "bf16" not in values:
            values["bf16"] = False
            adjustments.append("no GPU: bf16 mixed precision off (TRL's default is on; set sft.bf16 to choose)")
    values.setdefault("seed", recipe.seed)
    values.setdefault("data_seed", recipe.seed)
    values.setdefault("disable_tqdm", not interactive())
    try:
        config = SFTConfig(output_dir=output_dir, save_strategy="no", report_to=[], **values)
    except (ValueError, TypeError) as exc:
        where = recipe.path or "recipe"
        raise SftEvalError(f"{where}: [sft] is not a valid trl.SFTConfig: {str(exc).splitlines()[0]}") from None
    return config, adjustments


def train_sft(
    recipe: Recipe,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: list[dict[str, Any]],
    output_dir: str,
) -> TrainingRun:
    """Fine-tune `model` in place on `rows` with the recipe's SFTConfig; return what the trainer logged."""
    from trl import SFTTrainer

    config, adjustments = sft_config(recipe, output_dir)
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    if config.disable_tqdm:  # without bars the Trainer prints every log dict instead; the run records them anyway
        trainer.remove_callback(PrinterCallback)
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
        sft_config={k: v for k, v in config.to_dict().items() if k in recipe.sft or k in ("seed", "bf16")},
        adjustments=adjustments,
    )
