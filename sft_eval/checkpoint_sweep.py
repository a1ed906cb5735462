"""A run's checkpoints, each evaluated as the tuned model of the recipe and judged together (`sft-eval sweep`):
one checkpoint's pipeline at a time, against the base scored once, with the trainer's own record."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from sft_eval.errors import SftEvalError
from sft_eval.models import CHECKPOINT_NAME, checkpoint_folders, finished_run, has_adapter, has_weights
from sft_eval.pipeline import Pipeline
from sft_eval.scoring import Signals
from sft_eval.sweep import Sweep, TrainerRecord
from sft_eval.training import read_trainer_state


def sweep_checkpoints(pipeline: Pipeline) -> Sweep:
    """Every checkpoint of the run `model.tuned` names (each `checkpoint-N` with weights or an adapter, and the
    run folder's own final save), evaluated on the recipe's questions (and, where the recipe gives them, its
    held-out rows and general text, against the base scored once) one model at a time (each answer cached by
    the checkpoint's files, so a checkpoint added later costs only itself), then judged by `sweep.sweep` with the
    trainer's record: a `sweep.Sweep`."""
    from sft_eval.generation import GenerationSettings
    from sft_eval.live import evaluation_key, held_out_settings, read_records, result_from_dict, weights_digest
    from sft_eval.sweep import checkpoint_result, sweep

    recipe = pipeline.recipe
    if recipe.model.tuned is None:  # the recipe names no run: nothing to sweep (it says nothing of how one is made)
        raise SftEvalError(
            "model.tuned: a sweep judges the checkpoints of a run trained elsewhere; set `model.tuned` to the run's "
            "output folder (the one holding checkpoint-N folders)"
        )
    run = Path(recipe.resolve(recipe.model.tuned)).expanduser()
    checkpoints = [p for p in checkpoint_folders(run) if has_weights(p) or has_adapter(p)]
    if not checkpoints:
        raise SftEvalError(
            f"model.tuned: {run} holds no checkpoint-N folder with weights or an adapter: a sweep judges a run's "
            "checkpoints; name the run's output folder (save_steps or save_strategy makes the trainer keep them)"
        )
    adapters = [p.name for p in checkpoints if has_adapter(p) and not has_weights(p)]
    if adapters and len(adapters) < len(checkpoints):
        full = [p.name for p in checkpoints if p.name not in adapters]
        raise SftEvalError(
            f"model.tuned: {run} mixes full-weight checkpoints ({', '.join(full)}) and LoRA adapters "
            f"({', '.join(adapters)}): the checkpoints of one run are all one or the other; move the folders of "
            "the other run out"
        )
    found = finished_run(run)
    record = trainer_record(found.state)
    targets = [(p, p.name, _step(p)) for p in checkpoints]
    if has_weights(run) or has_adapter(run):  # trainer.save_model's final save, at the run's last step
        own = found.state == run / "trainer_state.json"  # trainer.save_state's, read into `record` above
        last = record.global_step if own and record.global_step is not None else targets[-1][2]
        targets.append((run, "final", last))
    teacher_forced = pipeline.held_out_rows is not None or bool(recipe.eval.general_text)
    live = read_records(run)  # SftEvalCallback's evaluations while the run trained, where it ran
    by_key = {r["key"]: r for r in live if r.get("key")}
    questions = [q.question for q in pipeline.questions]
    settings = GenerationSettings.from_eval(recipe.eval)
    held_out = held_out_settings(recipe) if by_key else {}
    results, read, differ = [], [], []
    for folder, name, step in targets:
        key = evaluation_key(recipe, questions, settings, weights_digest(folder), held_out) if by_key else None
        recorded = by_key.get(key) if key else None
        if recorded is not None:  # the same questions, settings, signals' data, judge and weights: its result
            result = result_from_dict(recorded["result"], recorded["path"])
            results.append(dataclasses.replace(result, name=name, path=str(folder), step=step, answers_generated=0))
            read.append(name)
            continue
        if any(r["step"] == step for r in live):
            differ.append(name)
        if teacher_forced:
            pipeline.teacher_forced.scored("base")  # once: every checkpoint is held against the same base
        checkpoint = pipeline.with_tuned(folder)
        evaluation = checkpoint.evaluation
        rows = checkpoint.teacher_forced.rows() if teacher_forced else {}
        signals = Signals(rows.get("held_out", []), rows.get("expected", []), rows.get("general", []))
        judged = checkpoint.assessment.judgement  # None without a [judge]; its verdicts cached like answers
        generated = checkpoint.answer_counts.get("tuned", {}).get("generated", 0)
        win = judged["win_rate"] if judged is not None else None
        results.append(checkpoint_result(name, str(folder), step, evaluation, signals, win, generated))
        del checkpoint  # and with it the checkpoint's model: one in memory at a time
    return sweep(
        results,
        record,
        run=str(run),
        best_by=list(recipe.eval.best_by),
        on_disk={p.name for p in checkpoint_folders(run)},
        live=[{"step": r["step"], "checkpoint": r.get("checkpoint"), **r["metrics"]} for r in live],
        notes=_live_notes(read, differ),
    )


def _live_notes(read: list[str], differ: list[str]) -> list[str]:
    notes = []
    if read:
        notes.append(f"{', '.join(read)}: read from SftEvalCallback's records (sft-eval-live/), not evaluated again")
    if differ:
        notes.append(
            f"{', '.join(differ)}: evaluated here; SftEvalCallback's record of that step was made with other "
            "questions, settings (its budget), signals' data, judge or weights"
        )
    return notes


def _step(folder: Path) -> int:
    """A `checkpoint-N` folder's step (`checkpoint_folders` lists only those)."""
    found = CHECKPOINT_NAME.fullmatch(folder.name)
    assert found is not None, folder
    return int(found.group(1))


def trainer_record(state_path: Path | None) -> TrainerRecord:
    """The trainer's losses, eval losses and best checkpoint from its `trainer_state.json` (checked), as the sweep's
    `TrainerRecord`."""
    from sft_eval import validate

    if state_path is None:
        return TrainerRecord(source=None)
    state = read_trainer_state(state_path)
    where = f"model.tuned: {state_path}:"
    best = state.get("best_model_checkpoint")
    if best is not None:
        validate.text(best, f"{where} best_model_checkpoint")
    metric = state.get("best_metric")
    if metric is not None:
        validate.number(metric, f"{where} best_metric")
    log = state["log_history"]
    return TrainerRecord(
        source=str(state_path),
        losses=[(e["step"], float(e["loss"])) for e in log if "loss" in e],
        eval_losses=[(e["step"], float(e["eval_loss"])) for e in log if "eval_loss" in e],
        best_model_checkpoint=best,
        best_metric=None if metric is None else float(metric),
        global_step=int(state["global_step"]),
    )
