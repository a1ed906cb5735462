"""Which checkpoint to ship: every checkpoint of a run judged on the recipe's questions, against the step, with
the trainer's own loss and `eval_loss` beside them.

A stage on plain data: each checkpoint's summary and per-question outcomes (`compare.Outcome`), and the trainer's
record (`trainer_state.json`: its log history and `best_model_checkpoint`). It names the best checkpoint by the
recipe's `eval.best_by` metrics (the first decides, the next ones break ties, then the earlier step) and raises
findings with stable ids:

- `sweep.overfitting` (error): `eval_loss` rose over the last evaluations, past its lowest, while the training
  loss fell: the last checkpoint is an overfit one;
- `sweep.best_missing` (error): the state names a `best_model_checkpoint` the run folder no longer holds
  (`save_total_limit` deleted it);
- `sweep.eval_loss_disagrees` (warning): the checkpoint with the lowest `eval_loss` is not the one with the best
  task metric, so `metric_for_best_model = "eval_loss"` would keep the worse one;
- `sweep.last_worse` (error): the last checkpoint is worse than the best beyond noise (`compare`'s paired tests).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sft_eval import schema
from sft_eval.audit import CheckId, Finding
from sft_eval.compare import Comparison, Outcome, compare_outcomes, outcomes_from_evaluation
from sft_eval.recipe import BEST_BY_METRICS
from sft_eval.sanity import Evaluation
from sft_eval.scoring import Signals

SWEEP_FORMAT = "sft-eval-sweep/1"
OVERFIT_RISE = 0.02  # eval_loss at least this far (relative) above its lowest has risen, not wobbled


@dataclass(frozen=True)
class CheckpointResult:
    """One checkpoint's evaluation, as the sweep reads it."""

    name: str  # "checkpoint-200", or "final" (the run folder's own save)
    path: str
    step: int
    summary: schema.Summary  # the checkpoint's answers summarised
    outcomes: list[Outcome]
    answers_generated: int = 0  # answers this sweep generated (the rest came from the answer cache)
    held_out_loss: float | None = None  # the checkpoint's loss on the recipe's held-out rows (`data.eval`)
    forgetting: float | None = None  # its general-text loss over the base's (`eval.general_text`)
    judge_win_rate: float | None = None  # the recipe's `[judge]` on its answers against the base's (ties half)


def checkpoint_result(
    name: str,
    path: str,
    step: int,
    evaluation: Evaluation,
    signals: Signals,
    judge_win_rate: float | None,
    generated: int,
) -> CheckpointResult:
    """One checkpoint's evaluation and signals as the sweep reads them (`sft-eval sweep` on a saved checkpoint, and
    `SftEvalCallback` on the model in memory: one function, so both say the same)."""
    held_out = signals.loss("held_out")
    return CheckpointResult(
        name=name,
        path=path,
        step=step,
        summary=evaluation.tuned_summary.to_dict(),
        outcomes=outcomes_from_evaluation(evaluation, signals=signals if signals.expected else None),
        answers_generated=generated,
        held_out_loss=None if held_out is None else held_out[1],
        forgetting=signals.forgetting,
        judge_win_rate=judge_win_rate,
    )


@dataclass(frozen=True)
class TrainerRecord:
    """What the trainer logged, from its `trainer_state.json` (checked where it was read)."""

    source: str | None  # the file read; None when the run kept none
    losses: list[tuple[int, float]] = field(default_factory=list)  # training loss by step
    eval_losses: list[tuple[int, float]] = field(default_factory=list)
    best_model_checkpoint: str | None = None
    best_metric: float | None = None
    global_step: int | None = None  # the state's last step


@dataclass(frozen=True)
class Sweep:
    run: str
    best_by: list[str]
    rows: list[dict[str, Any]]  # per checkpoint, by step: name, path, step, the metrics, eval_loss, train_loss
    best: str  # the best checkpoint's name
    record: TrainerRecord
    findings: list[Finding]
    last_vs_best: Comparison | None  # None where the last checkpoint is the best
    notes: list[str]
    live: list[dict[str, Any]] = field(default_factory=list)  # SftEvalCallback's evaluations: step, its scalars

    def best_live_step(self) -> int | None:
        """The evaluated step best by `best_by` among the callback's evaluations (saved or not); None without."""
        if not self.live:
            return None
        return int(min(self.live, key=lambda r: rank_key(r, self.best_by))["step"])

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": SWEEP_FORMAT,
            "run": self.run,
            "best_by": self.best_by,
            "best": self.best,
            "checkpoints": self.rows,
            "trainer": asdict(self.record),
            "findings": [f.to_dict() for f in self.findings],
            "last_vs_best": self.last_vs_best.to_dict() if self.last_vs_best else None,
            "notes": self.notes,
            "live": self.live,
        }


def _at_or_before(series: list[tuple[int, float]], step: int) -> float | None:
    """The last value logged at or before `step`."""
    found = [v for s, v in series if s <= step]
    return found[-1] if found else None


def rank_key(row: dict[str, Any], best_by: list[str]) -> tuple:
    """Sort key: best first by each metric in turn (a missing value last), then the earlier step."""
    key: list[float] = []
    for metric in best_by:
        value = row.get(metric)
        if value is None or not math.isfinite(value):
            key.append(math.inf)
        else:
            key.append(-value if BEST_BY_METRICS[metric] == "higher" else value)
    return (*key, row["step"])


def sweep(
    checkpoints: list[CheckpointResult],
    record: TrainerRecord,
    *,
    run: str,
    best_by: list[str],
    on_disk: set[str],
    live: list[dict[str, Any]] | None = None,
    notes: list[str] | None = None,
) -> Sweep:
    """The sweep of `checkpoints` (any order) of the run at `run`, whose folder holds the checkpoint folders named
    in `on_disk`; see the module's docstring for what it judges."""
    ordered = sorted(checkpoints, key=lambda c: (c.step, c.name == "final"))
    rows: list[dict[str, Any]] = [
        {
            "name": c.name,
            "path": c.path,
            "step": c.step,
            **{k: v for k, v in c.summary.items() if k in BEST_BY_METRICS or k in ("mean_new_tokens", "answers")},
            "eval_loss": dict(record.eval_losses).get(c.step),
            "held_out_loss": c.held_out_loss,
            "forgetting": c.forgetting,
            "judge_win_rate": c.judge_win_rate,
            "train_loss": _at_or_before(record.losses, c.step),
            "answers_generated": c.answers_generated,
        }
        for c in ordered
    ]
    best_row = min(rows, key=lambda r: rank_key(r, best_by))
    by_name = {c.name: c for c in ordered}
    findings: list[Finding] = []
    notes = list(notes or [])
    findings += _overfitting(record, notes)
    findings += _best_missing(record, on_disk, best_row, best_by)
    findings += _eval_loss_disagrees(rows, best_by)
    last = rows[-1]
    comparison = None
    if last["name"] != best_row["name"]:
        comparison = compare_outcomes(
            by_name[best_row["name"]].outcomes,
            by_name[last["name"]].outcomes,
            baseline_name=best_row["name"],
            candidate_name=last["name"],
        )
        notes += [
            f"{last['name']} against {best_row['name']}, {m.metric}: {m.detectable}"
            for m in comparison.metrics
            if m.detectable
        ]
        if comparison.regressions:
            worse = "; ".join(
                f"{m.metric} {m.baseline:.3f} -> {m.candidate:.3f} ({m.difference:+.3f}, 95% interval {m.low:+.3f} "
                f"to {m.high:+.3f}, Holm p={m.p_holm:.3g})"
                for m in comparison.regressions
            )
            flipped = sorted({q for m in comparison.regressions for q in m.pass_to_fail})
            findings.append(
                Finding(
                    CheckId.SWEEP_LAST_WORSE,
                    "error",
                    f"the last checkpoint, {last['name']}, is worse than the best, {best_row['name']}, beyond noise: "
                    f"{worse}; ship {best_row['name']}",
                    f"pass -> fail ({len(flipped)}): " + ", ".join(repr(q) for q in flipped[:10]),
                )
            )
    return Sweep(run, list(best_by), rows, best_row["name"], record, findings, comparison, notes, list(live or []))


def _overfitting(record: TrainerRecord, notes: list[str]) -> list[Finding]:
    evals = sorted(record.eval_losses)
    if len(evals) < 3:
        notes.append(
            f"overfitting not judged: the trainer logged eval_loss {len(evals)} time(s) (3 or more needed; set "
            "eval_strategy and an eval_dataset of held-out rows)"
        )
        return []
    low = min(range(len(evals)), key=lambda i: (evals[i][1], i))
    after = evals[low + 1 :]
    (low_step, low_loss), (last_step, last_loss) = evals[low], evals[-1]
    risen = len(after) >= 2 and last_loss > low_loss * (1 + OVERFIT_RISE) and last_loss >= after[0][1]
    train_then, train_now = _at_or_before(record.losses, low_step), _at_or_before(record.losses, last_step)
    if not risen or train_then is None or train_now is None or not train_now < train_then:
        return []
    trail = ", ".join(f"{loss:.3f}@{step}" for step, loss in evals[max(0, low - 1) :])
    return [
        Finding(
            CheckId.SWEEP_OVERFITTING,
            "error",
            f"eval_loss rose from {low_loss:.3f} at step {low_step} (its lowest) to {last_loss:.3f} at step "
            f"{last_step} while the training loss fell from {train_then:.3f} to {train_now:.3f}: the run overfits "
            f"after step {low_step}, and its last checkpoint is not the one to ship",
            f"eval_loss@step: {trail}",
        )
    ]


def _best_missing(
    record: TrainerRecord, on_disk: set[str], best_row: dict[str, Any], best_by: list[str]
) -> list[Finding]:
    if not record.best_model_checkpoint:
        return []
    name = Path(record.best_model_checkpoint.replace("\\", "/")).name
    if name in on_disk:
        return []
    metric = f" (best_metric {record.best_metric:.4g})" if record.best_metric is not None else ""
    return [
        Finding(
            CheckId.SWEEP_BEST_MISSING,
            "error",
            f"the trainer recorded {name} as its best checkpoint{metric}, but the run folder no longer holds it: "
            'save_total_limit deleted it (keep it with load_best_model_at_end = true or save_strategy = "best"); '
            f"of the checkpoints kept, {best_row['name']} is the best by {', '.join(best_by)}",
            f"best_model_checkpoint: {record.best_model_checkpoint} (from {record.source})",
        )
    ]


def _eval_loss_disagrees(rows: list[dict[str, Any]], best_by: list[str]) -> list[Finding]:
    task = next((m for m in best_by if m != "eval_loss"), None)
    if task is None:
        return []
    scored = [r for r in rows if r["eval_loss"] is not None and r.get(task) is not None]
    if len(scored) < 2:
        return []
    lowest = min(scored, key=lambda r: (r["eval_loss"], r["step"]))
    best = min(scored, key=lambda r: rank_key(r, [task]))
    if best["name"] == lowest["name"] or best[task] == lowest[task]:
        return []
    return [
        Finding(
            CheckId.SWEEP_EVAL_LOSS_DISAGREES,
            "warning",
            f"{lowest['name']} has the lowest eval_loss ({lowest['eval_loss']:.3f}) but {best['name']} the best "
            f"{task} ({best[task]:.3f} against {lowest[task]:.3f}): keeping the best checkpoint by eval_loss "
            "(metric_for_best_model) would keep the worse one on the task",
        )
    ]
