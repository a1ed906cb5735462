"""The recipe's `[judge]` applied: the tuned model's answers held against the base's, pair by pair, by the judge the
recipe names, and the judge's own reliability measured on the calibration set, into the report's `judge` record.

The judge asks each pair in both orders (`judge.chat`); the statistics are `judge.stats`'. A judge whose accuracy on
the calibration pairs is under `min_judge_calibration` is not trusted: its win rate is shown and not judged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sft_eval import schema
from sft_eval.cache import AnswerCache, source_digest
from sft_eval.errors import SftEvalError
from sft_eval.generation import Backend, LocalBackend, ServedBackend, Target
from sft_eval.judge.chat import MT_BENCH_SYSTEM, MT_BENCH_USER, Pair, PairVerdict, judge_pairs
from sft_eval.judge.stats import Verdict, cohens_kappa, length_controlled, order_effects, win_rate
from sft_eval.recipe import FIXTURES_DIR, JudgeSection, Recipe
from sft_eval.sanity import Evaluation

CALIBRATION = FIXTURES_DIR / "data" / "judge_calibration.jsonl"
MIN_CATEGORY_PAIRS = 5  # a category's win rate is shown where it has at least this many pairs
EXPECTED: dict[str, Verdict] = {
    "a": "win",
    "b": "loss",
    "tie": "tie",
}  # a calibration pair's verdict, with `a` as the candidate


def judge_backend(judge: JudgeSection, recipe: Recipe, device: str = "cpu") -> Backend:
    """The judge's backend: the server at `base_url` (its `model`, else its only one), or a chat model folder loaded
    here, on `device` (the judged models'), on the first prompt."""
    if judge.backend == "openai":
        assert judge.base_url is not None  # the recipe is checked
        return ServedBackend(judge.base_url, judge.model, judge.max_retries, judge.request_timeout, section="judge")
    folder = recipe.resolve(str(judge.model))

    def load() -> tuple[Any, Any]:
        from transformers import AutoTokenizer

        from sft_eval.models import load_model

        return load_model(Path(folder), device, key="judge.model"), AutoTokenizer.from_pretrained(folder)

    identity = {"judge": source_digest(folder)}
    return LocalBackend(target=Target("judge", load, model_identity=lambda: identity), section="judge")


def read_template(judge: JudgeSection, recipe: Recipe) -> tuple[str, str]:
    """(system message, user message) of the judge's prompt: `judge.prompt`'s file, else MT-Bench's."""
    if judge.prompt is None:
        return MT_BENCH_SYSTEM, MT_BENCH_USER
    path = Path(recipe.resolve(judge.prompt))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SftEvalError(f"judge.prompt: cannot read {path}: {exc}") from None
    system, sep, user = text.partition("\n---\n")
    if not sep or any(f"{{{name}}}" not in user for name in ("question", "answer_a", "answer_b")):
        raise SftEvalError(
            f"judge.prompt: {path} must hold the system message, a line `---`, then the user message with "
            "{question}, {answer_a} and {answer_b}"
        )
    return system.strip(), user.strip()


def read_calibration(path: Path) -> list[tuple[Pair, Verdict, str]]:
    """(pair, its right verdict for the candidate `a`, its kind) for each line of a calibration file."""
    rows: list[tuple[Pair, Verdict, str]] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SftEvalError(f"judge.calibration: cannot read {path}: {exc}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SftEvalError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
        texts = [row.get(k) if isinstance(row, dict) else None for k in ("question", "a", "b")]
        question, a, b = (t if isinstance(t, str) and t else "" for t in texts)
        if not (question and a and b) or row.get("expected") not in EXPECTED:
            raise SftEvalError(f'{path}:{number}: needs "question", "a", "b" (texts) and "expected": "a", "b" or "tie"')
        rows.append((Pair(question, a, b), EXPECTED[row["expected"]], str(row.get("kind", ""))))
    if not rows:
        raise SftEvalError(f"judge.calibration: {path} has no pairs")
    return rows


def judge_run(recipe: Recipe, evaluation: Evaluation, store: AnswerCache | None, backend: Backend) -> schema.JudgeData:
    """The tuned answers judged against the base's by `backend` (verdicts cached in `store`), with the judge's
    calibration, its order effects, the length-controlled win rate and its agreement with exact match."""
    judge, thresholds = recipe.judge, recipe.thresholds
    calibration = read_calibration(Path(recipe.resolve(judge.calibration)) if judge.calibration else CALIBRATION)
    pairs = [Pair(r.question.question, r.tuned.text, r.base.text, r.question.category) for r in evaluation.records]
    template, budget = read_template(judge, recipe), judge.max_new_tokens
    asked_pairs = pairs + [p for p, _, _ in calibration]
    verdicts, counts = judge_pairs(asked_pairs, backend, store, template=template, max_new_tokens=budget)
    asked, checked = verdicts[: len(pairs)], verdicts[len(pairs) :]
    combined = [v.verdict for v in asked]
    effects = order_effects([v.first for v in asked], [v.second for v in asked])
    differences = [r.tuned.new_tokens - r.base.new_tokens for r in evaluation.records]
    controlled = length_controlled(combined, differences)
    right = [v.verdict == expected for v, (_, expected, _) in zip(checked, calibration, strict=True)]
    kinds = [kind for _, _, kind in calibration]
    accuracy = sum(right) / len(right)
    calibration_effects = order_effects([v.first for v in checked], [v.second for v in checked])
    rate = win_rate(combined)
    return schema.JudgeData(
        kind=judge.kind,
        judge=_name(judge),
        pairs=len(pairs),
        win_rate=_finite(rate.rate),
        low=_finite(rate.low),
        high=_finite(rate.high),
        p_value=rate.p_value,
        wins=rate.wins,
        ties=rate.ties,
        losses=rate.losses,
        missing=rate.missing,
        length_controlled_win_rate=controlled.rate,
        length_note=controlled.why,
        flip_rate=_finite(effects.flip_rate),
        first_position_rate=_finite(effects.first_position_rate),
        trusted=accuracy >= thresholds.min_judge_calibration,
        calibration=schema.JudgeCalibration(
            pairs=len(checked),
            accuracy=accuracy,
            flip_rate=_finite(calibration_effects.flip_rate),
            by_kind={
                kind: sum(r for r, k in zip(right, kinds, strict=True) if k == kind) / kinds.count(kind)
                for kind in sorted(set(kinds))
            },
        ),
        agreement_kappa=_agreement(asked, evaluation),
        categories=_categories(asked),
        verdicts=[_card_verdict(v) for v in asked],
        cached=counts["cached"],
    )


def _name(judge: JudgeSection) -> str:
    return f"{judge.model or 'the only model'} at {judge.base_url}" if judge.backend == "openai" else str(judge.model)


def _finite(value: float) -> float | None:
    return None if value != value else value  # NaN: nothing to count (no verdicts, no pair in both orders)


def _agreement(asked: list[PairVerdict], evaluation: Evaluation) -> float | None:
    """Cohen's kappa of the judge's verdicts against exact match's (a win where only the tuned answer matches) on
    the questions with an expected answer and a verdict; None with fewer than 5 such questions."""
    judged, reference = [], []
    for verdict, record in zip(asked, evaluation.records, strict=True):
        tuned, base = record.tuned_score.matched, record.base_score.matched
        if verdict.verdict is None or tuned is None or base is None:
            continue
        judged.append(verdict.verdict)
        reference.append("win" if tuned and not base else "loss" if base and not tuned else "tie")
    return _finite(cohens_kappa(judged, reference)) if len(judged) >= MIN_CATEGORY_PAIRS else None


def _categories(asked: list[PairVerdict]) -> list[schema.JudgeCategory]:
    groups: dict[str, list[str | None]] = {}
    for v in asked:
        groups.setdefault(v.pair.category or "(none)", []).append(v.verdict)
    if len(groups) < 2:
        return []
    return [
        schema.JudgeCategory(category=name, pairs=len(found), win_rate=_finite(win_rate(found).rate))
        for name, found in groups.items()
        if len(found) >= MIN_CATEGORY_PAIRS
    ]


def _card_verdict(verdict: PairVerdict) -> schema.JudgeVerdict:
    return schema.JudgeVerdict(
        question=verdict.pair.question,
        verdict=verdict.verdict,
        first=verdict.first,
        second=verdict.second,
        replies=list(verdict.replies),
    )
