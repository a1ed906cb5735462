"""Training: the recipe's SFT run with TRL (`SFTTrainer` + the recipe's `SFTConfig`), and what it logged.

The config comes from `sft_eval.trainer_config`; every choice sft-eval made there is recorded in
`TrainingRun.adjustments`. `SftEvalRecorder`, the public callback a user adds to their own job too, records
what each optimizer step saw; `read_finished_run` reads a run trained elsewhere from its `trainer_state.json`
(and that callback's files).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.trainer_callback import PrinterCallback, TrainerCallback

from sft_eval import validate
from sft_eval.adapters import adapter_summary, trained_summary
from sft_eval.cache import write_atomic
from sft_eval.chat import check_rows_render
from sft_eval.data import Rows, rows_dataset
from sft_eval.errors import SftEvalError
from sft_eval.models import TRAINER_STATE, FinishedRun, load_json
from sft_eval.recipe import Recipe
from sft_eval.records import TrainingRun
from sft_eval.trainer_config import lora_config, recipe_config, recorded_settings, sft_config

STEPS_FILE = "sft-eval-steps-rank{rank}.json"  # one per rank, in the trainer's output_dir
STEPS_FORMAT = "sft-eval-steps/1"


class SftEvalRecorder(TrainerCallback):
    """Records, per optimizer step and per rank, what the trainer really did; add it to any `Trainer` or
    `SFTTrainer` (`callbacks=[SftEvalRecorder()]`) and it writes `sft-eval-steps-rank<r>.json` into the run's
    `output_dir`, where `[model] tuned` finds it.

    It watches the model's forward passes that build gradients (a forward hook; nothing of the trainer is
    replaced): per micro-batch the sequences, the trainable label tokens (shifted, as the loss counts them), the
    `num_items_in_batch` the model was given (plain `Trainer`; TRL computes its loss outside the model and passes
    none) and the summed token loss (from TRL's fused `log_probs`, or the model's `loss`). At each step's end the
    ranks add up their tokens and summed losses, so `token_weighted_loss` is the loss a correct trainer logs for
    the whole effective batch; the trainer's own logged loss, grad norm and learning rate are added from its log.
    """

    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []
        self._micro: list[dict[str, Any]] = []
        self._hook: Any = None
        self._last_logged = 0  # the step of the trainer's last loss log

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if model is not None and self._hook is None:
            self._hook = model.register_forward_hook(self._observe, with_kwargs=True)
        path = Path(args.output_dir) / STEPS_FILE.format(rank=args.process_index)
        if state.global_step > 0 and not self.steps and path.is_file():  # resumed from a checkpoint: keep its steps
            earlier = json.loads(path.read_text(encoding="utf-8")).get("steps", [])
            self.steps = [s for s in earlier if s.get("step", 0) <= state.global_step]
            self._last_logged = state.global_step

    def _observe(self, module: Any, positional: tuple, inputs: dict[str, Any], outputs: Any) -> None:
        labels = inputs.get("labels")
        if labels is None or not module.training or not torch.is_grad_enabled():
            return  # an evaluation or metrics-only pass (TRL repeats the forward without grad for its metrics)
        tokens = (labels[..., 1:] != -100).sum()
        given = inputs.get("num_items_in_batch")
        if getattr(outputs, "log_probs", None) is not None:  # TRL's fused head: zero on ignored positions
            summed = -outputs.log_probs.detach().double().sum()
        else:  # the model's own loss: a mean over the tokens it was told to divide by
            summed = outputs.loss.detach().double() * (given if given is not None else tokens)
        # tensors, read once at the step's end: no device sync per micro-batch
        self._micro.append({"sequences": int(labels.shape[0]), "tokens": tokens, "given": given, "loss_sum": summed})

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        micro, self._micro = self._micro, []
        # this rank's tokens and summed loss, and the sum and count of its micro-batch means (what a trainer that
        # normalises each micro-batch by its own tokens would log); all ranks' after the all-reduce
        totals = torch.zeros(4, dtype=torch.float64, device=args.device)
        if micro:
            totals = torch.stack(
                [
                    sum(m["tokens"] for m in micro).double(),
                    sum(m["loss_sum"] for m in micro),
                    sum(m["loss_sum"] / m["tokens"].clamp(min=1) for m in micro),
                    torch.tensor(float(len(micro)), dtype=torch.float64, device=micro[0]["loss_sum"].device),
                ]
            ).to(args.device)
        tokens, loss_sum = totals[:2].tolist()
        if args.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(totals)  # every rank ends each step here, so the ranks meet
        all_tokens, all_loss_sum, means, count = totals.tolist()
        given = micro[0]["given"] if micro else None
        self.steps.append(
            {
                "step": state.global_step,
                "rank": args.process_index,
                "world_size": args.world_size,
                "micro_batches": len(micro),
                "sequences": sum(m["sequences"] for m in micro),
                "label_tokens": int(tokens),
                "num_items_in_batch": None if given is None else int(given),
                "loss": loss_sum,  # this rank's summed token loss: what its gradients come from
                "step_label_tokens": int(all_tokens),  # all ranks
                "token_weighted_loss": all_loss_sum / max(all_tokens, 1),  # what the trainer should log
                "per_micro_batch_loss": means / max(count, 1),  # what per-micro-batch normalisation logs
            }
        )

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not logs or not self.steps or self.steps[-1]["step"] != state.global_step:
            return
        for key in ("grad_norm", "learning_rate"):
            if key in logs:
                self.steps[-1][key] = float(logs[key])
        if "loss" in logs:
            if state.global_step - self._last_logged == 1:  # a window of one step: that step's own loss
                self.steps[-1]["logged_loss"] = float(logs["loss"])
            self._last_logged = state.global_step

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.write(args.output_dir, args.process_index, args.world_size)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.write(args.output_dir, args.process_index, args.world_size)
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def write(self, folder: str | Path, rank: int, world_size: int) -> None:
        """This rank's record as JSON, written whole (`write_atomic`): a reader never sees a torn file."""
        path = Path(folder) / STEPS_FILE.format(rank=rank)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"format": STEPS_FORMAT, "rank": rank, "world_size": world_size, "steps": self.steps}
        write_atomic(path, json.dumps(data, indent=1))


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
    rows: Rows,
    output_dir: str,
) -> tuple[TrainingRun, PreTrainedModel]:
    """Fine-tune `model` on `rows` with the recipe's SFTConfig (and its `[peft]` LoRA config, when it has one), on
    the device the model is on: (what the trainer logged, the trained model). Full fine-tuning trains `model` in
    place and returns it; LoRA returns the `PeftModel` TRL wrapped around it (its adapter is what is saved)."""
    from trl import SFTTrainer

    config, adjustments = sft_config(recipe, output_dir, on_cpu=model.device.type == "cpu")
    check_rows_render(tokenizer, rows)
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=rows if isinstance(rows, Dataset) else rows_dataset(rows),
        processing_class=tokenizer,
        peft_config=lora_config(recipe),
    )
    prepared: Any = trainer.train_dataset  # a map-style Dataset: SFTTrainer prepared it
    untrainable = rows_without_targets(prepared)
    if untrainable == len(prepared):
        raise SftEvalError(
            f"data.train: none of the {untrainable} rows keeps a token to learn after truncation to "
            f"sft.max_length = {config.max_length} (and the loss mask): training would learn nothing"
        )
    if untrainable:
        adjustments.append(
            f"{untrainable} of {len(prepared)} rows keep no token to learn after truncation to "
            f"sft.max_length = {config.max_length}: they cost steps and teach nothing"
        )
    if config.disable_tqdm:  # without bars the Trainer prints every log dict instead; the run records them anyway
        trainer.remove_callback(PrinterCallback)
    recorder = SftEvalRecorder()
    trainer.add_callback(recorder)
    result = trainer.train()
    wrapped: Any = trainer.model  # the model train() ran on (a PEFT model for LoRA)
    trained: PreTrainedModel = wrapped.eval()
    state = trainer.state
    run = TrainingRun(
        log_history=list(state.log_history),
        global_step=state.global_step,
        max_steps=state.max_steps,
        num_train_epochs=float(config.num_train_epochs),
        train_rows=len(prepared),
        train_runtime_s=float(result.metrics.get("train_runtime", 0.0)),
        sft_config=recorded_settings(config.to_dict(), recipe),
        world_size=config.world_size,
        adjustments=adjustments,
        steps=recorder.steps,
        peft=trained_summary(trained),
    )
    return run, trained


# -- a run trained elsewhere ---------------------------------------------------------------------------------
def read_finished_run(
    found: FinishedRun, recipe: Recipe, train_rows: int, *, base_dir: Path | None = None, key: str = "model.tuned"
) -> TrainingRun:
    """A run trained elsewhere, as a `TrainingRun`: what ran from its `trainer_state.json` (log history, steps,
    per-device batch), what was planned from the recipe's `[sft]` and its `train_rows` rows, and per-step records
    where the job ran `SftEvalRecorder` (rank 0's file; the ranks' totals are in each step); for an adapter, its
    LoRA summary (parameters counted with those of `base_dir`, model.base's folder)."""
    planned = recorded_settings(recipe_config(recipe), recipe)
    steps, world_size = read_steps([found.output_dir, *([found.state.parent] if found.state else [])], key)
    if found.state is None:
        state: dict[str, Any] = {"log_history": [], "global_step": 0, "max_steps": 0}
        source = (
            f"no {TRAINER_STATE} in {found.weights} or its checkpoints: the trainer's record is missing, so nothing "
            "about training (loss, steps, batch plan) was checked; the model is judged on its files and answers only"
        )
    else:
        state, source = read_trainer_state(found.state, key), str(found.state)
    runtime = next((e["train_runtime"] for e in reversed(state["log_history"]) if "train_runtime" in e), 0.0)
    return TrainingRun(
        log_history=list(state["log_history"]),
        global_step=int(state["global_step"]),
        max_steps=int(state["max_steps"]),
        num_train_epochs=float(state.get("num_train_epochs") or planned.get("num_train_epochs", 0)),
        train_rows=train_rows,
        train_runtime_s=float(runtime),
        sft_config=planned,
        steps=steps,
        world_size=world_size,
        source=source,
        train_batch_size=state.get("train_batch_size"),
        peft=adapter_summary(found.weights, base_dir) if found.adapter else None,
    )


# What sft-eval reads of each `log_history` entry: the step, and the numbers it plots, judges or reports.
LOG_ENTRY_NUMBERS = ("loss", "grad_norm", "learning_rate", "epoch", "train_runtime", "train_loss", "eval_loss")


def read_trainer_state(path: Path, key: str = "model.tuned") -> dict[str, Any]:
    """`trainer_state.json` as plain data, every value sft-eval reads checked: anything else is one line naming
    the file, the field and the entry (`log_history[3].loss is "abc", not a number`)."""
    state = load_json(path, key)
    wanted = {"log_history": list, "global_step": int, "max_steps": int}
    for name, kind in wanted.items():
        if not isinstance(state, dict) or not isinstance(state.get(name), kind) or isinstance(state.get(name), bool):
            raise SftEvalError(f"{key}: {path}: not a trainer state (`{name}` missing or not a {kind.__name__})")
    if not all(isinstance(e, dict) for e in state["log_history"]):
        raise SftEvalError(f"{key}: {path}: not a trainer state (`log_history` holds something other than objects)")
    where = f"{key}: {path}:"
    validate.integer(state["global_step"], f"{where} global_step", minimum=0)
    validate.integer(state["max_steps"], f"{where} max_steps", minimum=0)
    optional = {"num_train_epochs": validate.number, "train_batch_size": functools.partial(validate.integer, minimum=1)}
    validate.fields(state, where, required={}, optional=optional)
    numbers = dict.fromkeys(LOG_ENTRY_NUMBERS, validate.number)
    for k, entry in enumerate(state["log_history"]):
        step = {"step": functools.partial(validate.integer, minimum=0)}
        validate.fields(entry, f"{where} log_history[{k}]", required=step, optional=numbers)
    beyond = [(k, e["step"]) for k, e in enumerate(state["log_history"]) if e["step"] > state["global_step"]]
    if beyond:  # a step that never ran: the record contradicts itself (edited, or two runs' records merged)
        k, step = beyond[0]
        raise SftEvalError(
            f"{where} log_history[{k}] is at step {step}, after the record's global_step {state['global_step']} "
            f"({len(beyond)} entr{'y' if len(beyond) == 1 else 'ies'} beyond it): the record contradicts itself; "
            "use the trainer_state.json the trainer wrote"
        )
    return state


def read_steps(folders: list[Path], key: str = "model.tuned") -> tuple[list[dict[str, Any]], int]:
    """Rank 0's `SftEvalRecorder` steps and the world size, from the first folder that has the file; ([], 1)
    when no folder has one (the job ran without the recorder)."""
    for folder in folders:
        path = folder / STEPS_FILE.format(rank=0)
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise SftEvalError(f"{key}: {path}: not valid JSON ({exc})") from None
            if not isinstance(data, dict) or data.get("format") != STEPS_FORMAT:
                raise SftEvalError(f"{key}: {path}: not an SftEvalRecorder file (format {STEPS_FORMAT})")
            return _checked_steps(data, f"{key}: {path}:")
    return [], 1


# Each recorded step's fields that the plan and normalisation checks read (`SftEvalRecorder.on_step_end`).
STEP_INTEGERS = ("step", "world_size", "micro_batches", "sequences", "step_label_tokens")
STEP_NUMBERS = ("token_weighted_loss",)
STEP_OPTIONAL_NUMBERS = ("per_micro_batch_loss", "logged_loss", "grad_norm", "learning_rate")


def _checked_steps(data: dict[str, Any], where: str) -> tuple[list[dict[str, Any]], int]:
    """The recorder file's steps and world size, every field the checks read of them validated."""
    if "steps" not in data:
        raise SftEvalError(f"{where} has no `steps`")
    steps = validate.objects(data["steps"], f"{where} steps")
    world_size = validate.integer(data.get("world_size", 1), f"{where} world_size", minimum=1)
    required = {
        **dict.fromkeys(STEP_INTEGERS, functools.partial(validate.integer, minimum=0)),
        **dict.fromkeys(STEP_NUMBERS, validate.number),
    }
    for k, step in enumerate(steps):
        optional = dict.fromkeys(STEP_OPTIONAL_NUMBERS, validate.number)
        validate.fields(step, f"{where} steps[{k}]", required=required, optional=optional)
    return steps, world_size
