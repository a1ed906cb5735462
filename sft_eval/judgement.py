"""The recipe's `[judge]` applied: the tuned model's answers held against the base's, pair by pair, by the judge the
recipe names, and the judge's own reliability measured on the calibration set, into the report's `judge` record.

The judge asks each pair in both orders (`judge.chat`); the statistics are `judge.stats`'. A judge whose accuracy on
the calibration pairs is under `min_judge_calibration` is not trusted: its win rate is shown and not judged.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sft_eval import schema
from sft_eval.cache import AnswerCache, FixtureCache, source_digest
from sft_eval.errors import SftEvalError
from sft_eval.generation import Backend, LocalBackend, ServedBackend, Target
from sft_eval.judge.chat import MT_BENCH_SYSTEM, MT_BENCH_USER, Pair, PairVerdict, judge_pairs
from sft_eval.judge.reward import RewardJudge
from sft_eval.judge.stats import Verdict, cohens_kappa, length_controlled, order_effects, win_rate
from sft_eval.recipe import FIXTURES_DIR, JudgeSection, Recipe
from sft_eval.sanity import Evaluation

CALIBRATION = FIXTURES_DIR / "data" / "judge_calibration.jsonl"
MIN_CATEGORY_PAIRS = 5  # a category's win rate is shown where it has at least this many pairs
CHRF_MARGIN = 5.0  # chrF points between two answers that neither or both match exactly: beyond it, one is better
EXPECTED: dict[str, Verdict] = {
    "a": "win",
    "b": "loss",
    "tie": "tie",
}  # a calibration pair's verdict, with `a` as the candidate


class ChatJudge:
    """A chat model as the judge (`judge.chat`): each pair asked in both orders through `backend`."""

    kind = "chat"

    def __init__(self, backend: Backend, template: tuple[str, str], max_new_tokens: int):
        self.backend, self.template, self.max_new_tokens = backend, template, max_new_tokens

    def judge_pairs(
        self, pairs: list[Pair], stops: list[tuple[bool, bool]], store: AnswerCache | None
    ) -> tuple[list[PairVerdict], dict[str, int]]:
        """Every pair in both orders; a chat judge reads each answer as written (`stops` is for a reward judge)."""
        return judge_pairs(pairs, self.backend, store, template=self.template, max_new_tokens=self.max_new_tokens)


PairJudge = ChatJudge | RewardJudge


def make_judge(
    judge: JudgeSection, recipe: Recipe, device: str = "cpu", cache: FixtureCache | None = None
) -> PairJudge:
    """The recipe's judge: a reward model (the folder `model`, else the embedded one, trained into `cache` on first
    use) or a chat model (`chat_backend`), on `device` (the judged models') when it runs here."""
    if judge.kind == "reward":
        import torch

        from sft_eval.reward_model import embedded_reward_model, load_reward_model

        if judge.model:
            folder = Path(recipe.resolve(judge.model))
        elif cache is None:
            raise SftEvalError("judge.model: the embedded reward judge is trained into the fixture cache, which is off")
        else:
            folder = embedded_reward_model(cache, torch.device(device))
        return RewardJudge(
            lambda: load_reward_model(folder, device), {"reward_judge": source_digest(str(folder))}, judge.tie_margin
        )
    return ChatJudge(chat_backend(judge, recipe, device), read_template(judge, recipe), judge.max_new_tokens)


def chat_backend(judge: JudgeSection, recipe: Recipe, device: str = "cpu") -> Backend:
    """The chat judge's backend: the server at `base_url` (its `model`, else its only one), or a chat model folder
    loaded here, on `device` (the judged models'), on the first prompt."""
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


def judge_name(judge: JudgeSection) -> str:
    """Which judge, as the report names it (and `compare` matches runs by)."""
    if judge.kind == "reward":
        return f"reward model {judge.model}" if judge.model else "the embedded tiny reward model"
    return f"{judge.model or 'the only model'} at {judge.base_url}" if judge.backend == "openai" else str(judge.model)


def family(name: str) -> str:
    """A model family from a name or a config's `model_type`: its first run of letters, lower case ("Qwen3-0.6B",
    "qwen3" and "Qwen/Qwen2.5-7B-Instruct" are all "qwen")."""
    found = re.search(r"[a-z]+", Path(name.rstrip("/")).name.lower())
    return found.group(0) if found else ""


def same_family(judge: JudgeSection, recipe: Recipe, judged: list[str]) -> str:
    """A warning when a chat judge comes from the judged models' family (`judged`: their `model_type`s and names),
    which judges are known to favour; empty when it does not (or the judge is a reward model: its calibration
    vouches for it)."""
    if judge.kind != "chat" or not judge.model:
        return ""
    names = [judge.model]
    if judge.backend == "transformers":
        config = Path(recipe.resolve(judge.model)) / "config.json"
        with contextlib.suppress(OSError, ValueError, AttributeError):  # no config to read: the name alone
            names.append(str(json.loads(config.read_text(encoding="utf-8")).get("model_type", "")))
    mine = {family(n) for n in names} - {""}
    theirs = {family(n) for n in judged} - {""}
    shared = sorted(mine & theirs)
    if not shared:
        return ""
    return (
        f"the judge ({judge_name(judge)}) is from the judged models' family ({shared[0]}): judges favour their own "
        "family's text, so its win rate may be high for that reason"
    )


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


@dataclass(frozen=True)
class CalibrationPair:
    """A calibration pair: the pair (`a` as the candidate), its right verdict, its kind, and whether each answer
    ended its turn (`stops`: a's, b's)."""

    pair: Pair
    expected: Verdict
    kind: str
    stops: tuple[bool, bool] = (True, True)


def read_calibration(path: Path) -> list[CalibrationPair]:
    """Each line of a calibration file: `question`, `a`, `b` (texts), `expected` ("a", "b" or "tie"), and
    optionally `kind` and `a_stops` / `b_stops` (false: that answer never ended its turn)."""
    rows: list[CalibrationPair] = []
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
        stops = tuple(row.get(k, True) for k in ("a_stops", "b_stops"))
        if not all(isinstance(s, bool) for s in stops):
            raise SftEvalError(f'{path}:{number}: "a_stops" and "b_stops" must be true or false')
        kind = str(row.get("kind", ""))
        rows.append(CalibrationPair(Pair(question, a, b), EXPECTED[row["expected"]], kind, (stops[0], stops[1])))
    if not rows:
        raise SftEvalError(f"judge.calibration: {path} has no pairs")
    return rows


def judge_run(
    recipe: Recipe,
    evaluation: Evaluation,
    store: AnswerCache | None,
    judge: PairJudge,
    judged_names: list[str] | None = None,
    other: str = "base",
) -> schema.JudgeData:
    """The tuned answers judged against the base's by `judge` (verdicts cached in `store`), with the judge's
    calibration, its order effects (a chat judge's), the length-controlled win rate and its agreement with the
    reference metrics. `judged_names`: the judged models' names and `model_type`s, for the same-family warning.
    `other`: the model the tuned answers are held against ("base", or "baseline": `[model] baseline`'s)."""
    section, thresholds = recipe.judge, recipe.thresholds
    calibration = read_calibration(Path(recipe.resolve(section.calibration)) if section.calibration else CALIBRATION)
    records = evaluation.records
    pairs = [Pair(r.question.question, r.tuned.text, r.answer(other).text, r.question.category) for r in records]
    stops = [(r.tuned.stop_reason == "eos", r.answer(other).stop_reason == "eos") for r in records]
    asked_pairs = pairs + [c.pair for c in calibration]
    verdicts, counts = judge.judge_pairs(asked_pairs, stops + [c.stops for c in calibration], store)
    asked, checked = verdicts[: len(pairs)], verdicts[len(pairs) :]
    combined = [v.verdict for v in asked]
    ordered = judge.kind == "chat"  # a reward judge scores each answer alone: it has no order to flip with
    effects = order_effects([v.first for v in asked], [v.second for v in asked])
    differences = [r.tuned.new_tokens - r.answer(other).new_tokens for r in records]
    controlled = length_controlled(combined, differences)
    right = [v.verdict == c.expected for v, c in zip(checked, calibration, strict=True)]
    kinds = [c.kind for c in calibration]
    accuracy = sum(right) / len(right)
    calibration_effects = order_effects([v.first for v in checked], [v.second for v in checked])
    warning = same_family(section, recipe, judged_names or [])
    rate = win_rate(combined)
    return schema.JudgeData(
        kind=section.kind,
        judge=judge_name(section),
        against=other,
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
        flip_rate=_finite(effects.flip_rate) if ordered else None,
        first_position_rate=_finite(effects.first_position_rate) if ordered else None,
        trusted=accuracy >= thresholds.min_judge_calibration,
        calibration=schema.JudgeCalibration(
            pairs=len(checked),
            accuracy=accuracy,
            flip_rate=_finite(calibration_effects.flip_rate) if ordered else None,
            by_kind={
                kind: sum(r for r, k in zip(right, kinds, strict=True) if k == kind) / kinds.count(kind)
                for kind in sorted(set(kinds))
            },
        ),
        agreement_kappa=_agreement(asked, evaluation, other),
        warnings=[warning] if warning else [],
        tie_margin=section.tie_margin if section.kind == "reward" else None,
        categories=_categories(asked),
        verdicts=[_card_verdict(v) for v in asked],
        cached=counts["cached"],
    )


def _finite(value: float) -> float | None:
    return None if value != value else value  # NaN: nothing to count (no verdicts, no pair in both orders)


def _agreement(asked: list[PairVerdict], evaluation: Evaluation, other: str) -> float | None:
    """Cohen's kappa of the judge's verdicts against the reference metrics' on the questions with an expected
    answer and a verdict: a win where only the tuned answer matches exactly (a loss where only the base's does),
    else a win or loss where chrF differs by more than `CHRF_MARGIN` points, else a tie. None with fewer than 5
    such questions."""
    judged, reference = [], []
    for verdict, record in zip(asked, evaluation.records, strict=True):
        tuned, base = record.tuned_score, record.score(other)
        if verdict.verdict is None or tuned.matched is None or base.matched is None:
            continue
        judged.append(verdict.verdict)
        if tuned.matched != base.matched:
            reference.append("win" if tuned.matched else "loss")
            continue
        gap = (tuned.chrf or 0.0) - (base.chrf or 0.0)
        reference.append("win" if gap > CHRF_MARGIN else "loss" if gap < -CHRF_MARGIN else "tie")
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
        rewards=list(verdict.rewards) if verdict.rewards is not None else None,
    )
