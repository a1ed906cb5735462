"""`SftEvalCallback`: the recipe's evaluation of the model while it trains, logged where the user looks.

Built the way TRL's `LogCompletionsCallback` is: it holds the trainer (callback events do not pass it), so it logs
through `trainer.log`, which reaches every tracker in `report_to` (TensorBoard, MLflow, W&B, ...) as scalars
`sft_eval/<metric>`; where the tracker has tables (W&B, MLflow), the answers go in one per evaluation.

At each trigger (`every="save"`, the default: after each checkpoint is written; `"eval"`: after the trainer's own
evaluation; or a number of optimizer steps) the model is evaluated in memory by `live.LiveEvaluation`, as
`sft-eval sweep` evaluates a saved checkpoint, within a budget, and the evaluation is written to
`<output_dir>/sft-eval-live/step-N.json`, where `sft-eval sweep` reads it instead of evaluating that checkpoint
again. The base is the trainer's model as training begins (evaluated once, in memory, before the first step).

Training is unchanged by it: the random states (Python, numpy, torch, CUDA), each module's train/eval mode,
`use_cache`, gradient checkpointing and the generation config are put back after every evaluation; nothing is
saved, reloaded or copied (no second copy of the model).

Several processes (torchrun): rank 0 evaluates, the other ranks wait at a barrier with a timeout. The questions
are not split between ranks: greedy answers in the sweep's batches are the sweep's answers only when one process
makes every batch, and a rank's model under FSDP or DeepSpeed ZeRO-3 holds a shard, not the model (refused, one
line). Every rank builds the teacher-forced sequences at the start (the trainer's data preparation waits for the
main process), and no lock is held across a collective.
"""

from __future__ import annotations

import contextlib
import copy
import random
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from sft_eval.cache import FixtureCache
from sft_eval.errors import SftEvalError
from sft_eval.live import Budget, LiveEvaluation, write_live, write_record
from sft_eval.recipe import DEFAULT_RECIPE, Recipe, load_recipe

TRIGGERS = ("save", "eval")


@contextlib.contextmanager
def preserved(model: Any) -> Iterator[None]:
    """The model in eval mode (dropout off) for the block, and the training exactly as it was afterwards: the
    random states, every module's mode, `use_cache`, gradient checkpointing and the generation config."""
    import numpy as np
    import torch

    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    states = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    cuda_states = torch.cuda.get_rng_state_all() if cuda else None
    modes = [(m, m.training) for m in model.modules()]
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # a PEFT model's own
    config = getattr(inner, "config", None)
    use_cache = getattr(config, "use_cache", None)
    checkpointing = _checkpointing(inner)
    generation = copy.deepcopy(getattr(inner, "generation_config", None))
    model.eval()
    try:
        with torch.no_grad():  # not inference_mode: a buffer made in it could not be used by backward afterwards
            yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
        for module, training in modes:
            module.training = training
        if config is not None and use_cache is not None:
            config.use_cache = use_cache
        if checkpointing is not None and _checkpointing(inner) != checkpointing:
            inner.gradient_checkpointing_enable() if checkpointing else inner.gradient_checkpointing_disable()
        if generation is not None:
            inner.generation_config = generation


def _checkpointing(model: Any) -> bool | None:
    """Whether gradient (activation) checkpointing is on: transformers 5's name, else the older one."""
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):
        if hasattr(type(model), name) or hasattr(model, name):
            with contextlib.suppress(Exception):
                return bool(getattr(model, name))
    return None


class SftEvalCallback(TrainerCallback):
    """Evaluates the trainer's model by the recipe at each save (`every="save"`), each trainer evaluation
    (`"eval"`) or every N optimizer steps (an int), logs `sft_eval/<metric>` through `trainer.log`, and records
    each evaluation for `sft-eval sweep`. The recipe's `[model]` and `[sft]` are not used: the model and the
    trainer's settings are the trainer's. Budget: `max_questions` (32), `max_new_tokens` (64), `max_seconds`
    (none) per evaluation."""

    def __init__(
        self,
        trainer: Any,
        recipe: str | Path | Recipe | None = None,
        *,
        every: str | int = "save",
        max_questions: int | None = 32,
        max_new_tokens: int | None = 64,
        max_seconds: float | None = None,
        barrier_timeout_s: float = 1800.0,
        cache: str | Path | None = None,
    ):
        if not (every in TRIGGERS or (isinstance(every, int) and not isinstance(every, bool) and every >= 1)):
            raise SftEvalError(f"SftEvalCallback: every must be 'save', 'eval' or a number of steps, not {every!r}")
        if getattr(trainer, "is_fsdp_enabled", False) or _zero3(trainer):
            raise SftEvalError(
                "SftEvalCallback: each process holds a shard of the model under FSDP or DeepSpeed ZeRO-3, which "
                "rank 0 cannot generate with alone; evaluate the saved checkpoints with `sft-eval sweep`"
            )
        for trigger, key in (("save", "save_strategy"), ("eval", "eval_strategy")):
            value = getattr(getattr(trainer, "args", None), key, None)
            if every == trigger and str(getattr(value, "value", value)) == "no":
                raise _never_evaluates(trigger, key)
        self.trainer = trainer
        self.recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe or DEFAULT_RECIPE)
        self.every = every
        self.budget = Budget(max_questions, max_new_tokens, max_seconds)
        self.barrier_timeout_s = barrier_timeout_s
        self.cache = FixtureCache(Path(cache)) if cache else FixtureCache()
        self.live: LiveEvaluation | None = None
        self.records: list[dict[str, Any]] = []  # this process's evaluations (rank 0's), in order
        self.best: dict[str, Any] | None = None  # on_train_end: the best step and the trainer's own choice

    # -- the trainer's events --------------------------------------------------------------------------------
    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        model = self.trainer.model
        tokenizer = self.trainer.processing_class
        tokenizer = getattr(tokenizer, "tokenizer", tokenizer)  # a processor's tokenizer
        with preserved(model):
            self.live = LiveEvaluation(
                self.recipe,
                tokenizer,
                budget=self.budget,
                trainer_keys=args.to_dict(),
                device=str(model.device),
                cache=self.cache,
            )
            self.live.prepare(model)
            if state.is_world_process_zero:
                self.live.begin(model)
        self._wait(args)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if isinstance(self.every, int) and state.global_step % self.every == 0:
            self._evaluate(args, state, None)

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.every == "eval":
            self._evaluate(args, state, None)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.every == "save":
            self._evaluate(args, state, Path(args.output_dir) / f"checkpoint-{state.global_step}")

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """The best evaluated step by `eval.best_by`, beside the trainer's own `best_model_checkpoint`, written to
        `sft-eval-live/best.json` (not logged: the trackers' runs have ended by now; `sft_eval/best_step`, the
        best so far, is logged with every evaluation)."""
        if not state.is_world_process_zero or not self.records:
            return
        best = self._best(state)
        trainer_best = state.best_model_checkpoint
        trainer_step = int(trainer_best.rstrip("/").rsplit("-", 1)[-1]) if trainer_best else None
        self.best = {
            "best_step": best["step"],
            "best_checkpoint": best["checkpoint"],
            "best_by": list(self.recipe.eval.best_by),
            "trainer_best_model_checkpoint": trainer_best,
            "agrees_with_trainer": None if trainer_step is None else trainer_step == best["step"],
        }
        write_live(args.output_dir, "best.json", self.best)

    def _best(self, state: Any) -> dict[str, Any]:
        """The best of this run's evaluations by `eval.best_by`, ranked as `sft-eval sweep` ranks checkpoints (the
        trainer's `eval_loss` at or before each step, where `best_by` names it)."""
        from sft_eval.sweep import rank_key

        evals = [(e["step"], e["eval_loss"]) for e in state.log_history if "eval_loss" in e]

        def row(record: dict[str, Any]) -> dict[str, Any]:
            losses = [loss for step, loss in evals if step <= record["step"]]
            return {**record["metrics"], "eval_loss": losses[-1] if losses else None, "step": record["step"]}

        return min(self.records, key=lambda r: rank_key(row(r), list(self.recipe.eval.best_by)))

    # -- one evaluation --------------------------------------------------------------------------------------
    def _evaluate(self, args: Any, state: Any, checkpoint: Path | None) -> None:
        from sft_eval.live import weights_digest

        if state.is_world_process_zero and self.live is not None:
            model = self.trainer.model
            with preserved(model):
                weights = weights_digest(checkpoint) if checkpoint is not None and checkpoint.is_dir() else None
                name = checkpoint.name if checkpoint is not None else None
                record = self.live.evaluate(model, state.global_step, name, weights)
            write_record(args.output_dir, record)
            self.records.append(record)
            best = float(self._best(state)["step"])  # the best so far
            _log_table(args, state.global_step, record)  # first: W&B commits it with the scalars, at their step
            self.trainer.log({**{f"sft_eval/{k}": v for k, v in record["metrics"].items()}, "sft_eval/best_step": best})
        self._wait(args)

    def _wait(self, args: Any) -> None:
        """The other ranks wait for rank 0's evaluation, at most `barrier_timeout_s`."""
        import torch.distributed as dist

        if args.world_size > 1 and dist.is_available() and dist.is_initialized():
            if dist.get_backend() == "gloo":
                dist.monitored_barrier(timeout=timedelta(seconds=self.barrier_timeout_s), wait_all_ranks=True)
            else:
                dist.barrier()


def _never_evaluates(trigger: str, key: str) -> SftEvalError:
    return SftEvalError(
        f"SftEvalCallback: every={trigger!r} but the trainer's {key} is 'no', so it would never evaluate; set "
        f"{key}, or every=N steps"
    )


def _zero3(trainer: Any) -> bool:
    plugin = getattr(getattr(trainer, "accelerator", None), "state", None)
    deepspeed = getattr(plugin, "deepspeed_plugin", None)
    return bool(deepspeed is not None and getattr(deepspeed, "zero_stage", 0) == 3)


TABLE_COLUMNS = ["step", "question", "answer", "stop_reason", "new_tokens", "matched"]


def _log_table(args: Any, step: int, record: dict[str, Any]) -> None:
    """The evaluation's answers as a table, where a tracker in `report_to` has tables and a run is open: W&B
    (`wandb.Table`) and MLflow (`mlflow.log_table`)."""
    report_to = args.report_to if isinstance(args.report_to, list) else [args.report_to]
    matched = {o["question"]: o["matched"] for o in record["result"]["outcomes"]}
    rows = [
        [step, a["question"], a["text"], a["stop_reason"], a["new_tokens"], matched.get(a["question"])]
        for a in record["answers"]
    ]
    if "wandb" in report_to or "all" in report_to:
        with contextlib.suppress(ImportError):
            import wandb

            if getattr(wandb, "run", None) is not None:  # a W&B run open (the integration opened it)
                wandb.log({"sft_eval/answers": wandb.Table(columns=list[Any](TABLE_COLUMNS), data=rows)}, commit=False)
    if "mlflow" in report_to or "all" in report_to:
        with contextlib.suppress(ImportError):
            import mlflow

            if mlflow.active_run() is not None:
                columns = {name: [row[k] for row in rows] for k, name in enumerate(TABLE_COLUMNS)}
                mlflow.log_table(data=columns, artifact_file=f"sft_eval/answers-step-{step}.json")
