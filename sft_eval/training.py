"""Training: the recipe's SFT run with TRL (`SFTTrainer` + the recipe's `SFTConfig`), and what it logged.

The config comes from `sft_eval.trainer_config`; every choice sft-eval made there is recorded in
`TrainingRun.adjustments`. `StepRecorder` records what each optimizer step saw.
"""

from __future__ import annotations

from typing import Any

from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.trainer_callback import PrinterCallback, TrainerCallback

from sft_eval.chat import check_rows_render
from sft_eval.errors import SftEvalError
from sft_eval.recipe import Recipe
from sft_eval.records import TrainingRun
from sft_eval.trainer_config import ALWAYS_RECORDED, sft_config


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
        sft_config={k: v for k, v in config.to_dict().items() if k in recipe.sft or k in ALWAYS_RECORDED},
        world_size=config.world_size,
        adjustments=adjustments,
        steps=recorder.steps,
    )
