"""Run against run: is a candidate model better or worse than a baseline, question by question, beyond noise.

A stage on plain data. Each side is a model's outcomes on the recipe's questions, read from a report's JSON
(`sft_report.json`: the last accepted run, kept as a CI artifact, needs no model) or from a live evaluation.
Questions are paired by the questions file's `id` where both sides give one for every question, else by their
text; a question on one side only is listed, never dropped silently.

- Binary checks (exact match, ends at end-of-turn, no leaked tokens, not empty): the flips, question by question
  (pass -> fail, fail -> pass), and an exact McNemar test on the discordant pairs: scipy's two-sided binomial test
  of the pass -> fail count among all flips at p = 1/2. The effect's interval is the paired bootstrap's.
- Continuous metrics (repetition; chrF and the expected answers' teacher-forced NLL where both sides have them):
  the paired bootstrap's interval and p-value, and for the NLL the questions whose expected answer became more
  than `EXPECTED_NLL_MARGIN` nats/token less likely. New tokens are shown, not tested (longer is neither better nor
  worse).
- Holm-Bonferroni across the metrics tested. A regression is a metric worse with a corrected p below alpha;
  improvements are listed and never fail.
- What the comparison could not have seen (`sft_eval.power`): each metric's minimum detectable effect at 80% power
  for this many questions (or "undetectable"), a sentence that says it, clustered errors where questions share a
  `cluster` or `category`, and, where `[thresholds.max_regression]` gives a margin, how many questions would detect
  it. Two gates: "difference" (above) and "non-inferiority": each metric with a margin passes only when the
  one-sided 1 - alpha bound of its drop is within the margin (an intersection-union test: no correction);
  metrics without one are judged by difference.
- A score that is not a number (NaN or infinite: a model whose weights diverged) is never a number in a statistic:
  its metric is "not comparable", names the questions, is left out of Holm, and fails the comparison as a
  regression does (it cannot say there is none).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, cast

import numpy as np
from scipy import stats

from sft_eval import power, schema
from sft_eval.errors import SftEvalError
from sft_eval.judge.records import judge_scores
from sft_eval.recipe import GATES
from sft_eval.sanity import Evaluation, paired_bootstrap
from sft_eval.schema import COMPARE_FORMAT, ExpectedNll, ReportData

NOT_COMPARABLE = "not comparable"
NOT_SHOWN = "not shown non-inferior"
ALPHA = 0.05


@dataclass(frozen=True)
class Outcome:
    """One model's answer to one question, as the comparison reads it."""

    question: str
    id: str
    matched: bool | None  # None: the question has no expected answer
    stopped: bool  # ended with the end-of-turn token
    leaked: bool  # special tokens, role headers or think tags in the answer
    empty: bool
    repetition: float
    new_tokens: int
    expected_nll: float | None = None  # the expected answer's teacher-forced NLL, nats/token (`scoring.Signals`)
    chrf: float | None = None  # chrF against the expected answer (None: none, or a report from before chrF)
    cluster: str = ""  # the questions file's `cluster`, else its `category`: questions that share a source
    judged: float | None = None  # the judge's verdict on this answer against its run's base: 1 win, 0.5 tie, 0 loss


def _expected_nll(nll: ExpectedNll | None, which: Literal["base", "tuned"]) -> float | None:
    return None if nll is None else nll[which]


def outcomes_from_report(context: ReportData, which: Literal["base", "tuned"] = "tuned") -> list[Outcome]:
    """One side of a report's JSON (`report.format.ReportData`, read and checked by `report.read_report_json`)."""
    return [
        Outcome(
            question=card["question"],
            id=str(card.get("id") or ""),
            matched=card[which]["matched"],
            stopped=card[which]["stop_reason"] == "eos",
            leaked=bool(card[which]["leaks"]),
            empty=not card[which]["text"].strip(),
            repetition=float(card[which]["repetition"]),
            new_tokens=int(card[which]["new_tokens"]),
            expected_nll=_expected_nll(card.get("expected_nll"), which),
            chrf=card[which].get("chrf"),
            cluster=card.get("cluster") or card.get("category") or "",
            judged=judged if which == "tuned" else None,
        )
        for card, judged in zip(context["cards"], judge_scores(context), strict=True)
    ]


def outcomes_from_evaluation(evaluation: Evaluation, which: str = "tuned", signals: Any = None) -> list[Outcome]:
    """One side of a live evaluation (the session's `sft_evaluation`), with the expected answers' NLL from its
    `scoring.Signals` when given."""
    nll = {r.label: getattr(r, which) for r in signals.expected} if signals is not None else {}
    outcomes = []
    for record in evaluation.records:
        score = record.score(which)
        outcomes.append(
            Outcome(
                question=record.question.question,
                id=record.question.id,
                matched=score.matched,
                stopped=score.stopped_at_eos,
                leaked=bool(score.leaks),
                empty=score.empty,
                repetition=score.repetition,
                new_tokens=score.new_tokens,
                expected_nll=nll.get(record.question.question),
                chrf=score.chrf,
                cluster=record.question.cluster or record.question.category,
            )
        )
    return outcomes


@dataclass(frozen=True)
class MetricComparison:
    """One metric, baseline against candidate, over the questions both sides answered."""

    metric: str
    kind: str  # "binary" (a pass rate) or "continuous"
    better: str  # "higher" or "lower"
    test: str  # "exact McNemar" or "paired bootstrap"
    questions: int
    baseline: float
    candidate: float
    difference: float  # candidate - baseline
    low: float  # the paired bootstrap's 95% interval of the difference
    high: float
    p_value: float
    p_holm: float = 1.0  # Holm-Bonferroni across the metrics tested
    verdict: str = "no change"  # "regression", "improvement", "no change" or "not comparable"
    pass_to_fail: list[str] = field(default_factory=list)  # binary checks: the questions that flipped
    fail_to_pass: list[str] = field(default_factory=list)
    worse: list[str] = field(default_factory=list)  # the expected-answer NLL: questions beyond the margin
    not_a_number: list[str] = field(default_factory=list)  # questions whose score is NaN or infinite on a side
    # what it could not have seen (sft_eval.power): the drop detected at 80% power (None with `undetectable`)
    min_detectable_effect: float | None = None
    undetectable: bool = False
    margin: float | None = None  # [thresholds.max_regression]'s, in the metric's units
    underpowered: bool = False  # a margin below the detectable effect: a drop that large would likely be missed
    drop: float = 0.0  # the observed drop (baseline - candidate, or the rise where lower is better)
    drop_bound: float | None = None  # the one-sided 1 - alpha upper bound of the drop (non-inferiority)
    questions_for_margin: int | None = None  # questions that would detect a drop of `margin` at 80% power
    clustering: str = ""  # how the standard error was estimated
    detectable: str = ""  # all of it in one sentence

    def to_dict(self) -> schema.MetricData:
        return schema.MetricData(
            metric=self.metric,
            kind=cast(Literal["binary", "continuous"], self.kind),
            better=cast(Literal["higher", "lower"], self.better),
            test=self.test,
            questions=self.questions,
            baseline=self.baseline,
            candidate=self.candidate,
            difference=self.difference,
            low=self.low,
            high=self.high,
            p_value=self.p_value,
            p_holm=self.p_holm,
            verdict=self.verdict,
            pass_to_fail=list(self.pass_to_fail),
            fail_to_pass=list(self.fail_to_pass),
            worse=list(self.worse),
            not_a_number=list(self.not_a_number),
            min_detectable_effect=self.min_detectable_effect,
            undetectable=self.undetectable,
            margin=self.margin,
            underpowered=self.underpowered,
            drop=self.drop,
            drop_bound=self.drop_bound,
            questions_for_margin=self.questions_for_margin,
            clustering=self.clustering,
            detectable=self.detectable,
        )


@dataclass(frozen=True)
class Comparison:
    baseline: str  # where each side came from: a report's path, "this run"
    candidate: str
    alpha: float
    questions: int  # paired
    paired_by: str  # "id" or "text"
    only_in_baseline: list[str]
    only_in_candidate: list[str]
    metrics: list[MetricComparison]
    new_tokens: dict[str, float]  # mean new tokens per answer, both sides (shown, not tested)
    # by side: a question asked more often on that side than on the other (the extra answers are not compared)
    repeated: dict[str, list[str]] = field(default_factory=dict)
    gate: str = "difference"  # or "non-inferiority" ([thresholds] gate)

    @property
    def regressions(self) -> list[MetricComparison]:
        return [m for m in self.metrics if m.verdict == "regression"]

    @property
    def improvements(self) -> list[MetricComparison]:
        return [m for m in self.metrics if m.verdict == "improvement"]

    @property
    def not_comparable(self) -> list[MetricComparison]:
        return [m for m in self.metrics if m.verdict == NOT_COMPARABLE]

    @property
    def not_shown_within(self) -> list[MetricComparison]:
        """Under the non-inferiority gate: the metrics whose drop is not shown within their margin."""
        return [m for m in self.metrics if m.verdict == NOT_SHOWN]

    @property
    def verdict(self) -> str:
        """One of "regression", "not shown non-inferior", "not comparable" (a metric could not be compared), or,
        passing, "no regression" (the difference gate) or "non-inferior"."""
        if self.regressions:
            return "regression"
        if self.not_shown_within:
            return NOT_SHOWN
        if self.not_comparable:
            return NOT_COMPARABLE
        return "non-inferior" if self.gate == "non-inferiority" else "no regression"

    @property
    def passed(self) -> bool:
        return self.verdict in ("no regression", "non-inferior")

    def to_dict(self) -> schema.ComparisonData:
        return schema.ComparisonData(
            format=COMPARE_FORMAT,
            baseline=self.baseline,
            candidate=self.candidate,
            alpha=self.alpha,
            questions=self.questions,
            paired_by=cast(Literal["id", "text"], self.paired_by),
            only_in_baseline=self.only_in_baseline,
            only_in_candidate=self.only_in_candidate,
            repeated=self.repeated,
            gate=cast(Literal["difference", "non-inferiority"], self.gate),
            verdict=self.verdict,
            passed=self.passed,
            regressions=[m.metric for m in self.regressions],
            not_shown_non_inferior=[m.metric for m in self.not_shown_within],
            not_comparable=[m.metric for m in self.not_comparable],
            improvements=[m.metric for m in self.improvements],
            metrics=[m.to_dict() for m in self.metrics],
            new_tokens=self.new_tokens,
        )


# (name, pass) per binary check; each is a pass rate, higher is better
BINARY: list[tuple[str, Callable[[Outcome], bool | None]]] = [
    ("exact match", lambda o: o.matched),
    ("ends at end-of-turn", lambda o: o.stopped),
    ("no leaked tokens", lambda o: not o.leaked),
    ("not empty", lambda o: not o.empty),
]
# (name, value, better, per-question margin: a question worse by more is listed) per continuous metric
EXPECTED_NLL_MARGIN = 0.5  # nats/token: the expected answer about 1.65x less likely per token
CONTINUOUS: list[tuple[str, Callable[[Outcome], float | None], str, float | None]] = [
    ("repetition", lambda o: o.repetition, "lower", None),
    ("chrF", lambda o: o.chrf, "higher", None),
    ("expected-answer NLL", lambda o: o.expected_nll, "lower", EXPECTED_NLL_MARGIN),
    # the judge's verdict against each run's base, ties half: a paired bootstrap (McNemar has no ties)
    ("judge win rate", lambda o: o.judged, "higher", None),
]


def mcnemar_exact(pass_to_fail: int, fail_to_pass: int) -> float:
    """Exact McNemar p-value (two-sided) from the discordant counts: scipy's binomial test of one count among
    both at p = 1/2. No flips: 1."""
    from scipy.stats import binomtest

    flips = pass_to_fail + fail_to_pass
    return float(binomtest(pass_to_fail, flips, 0.5).pvalue) if flips else 1.0


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the order given: the k-th smallest times (m - k + 1), kept monotone,
    capped at 1. (scipy has only Benjamini-Hochberg's; statsmodels' `multipletests` would pull in pandas.)"""
    m = len(p_values)
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=p_values.__getitem__)):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def _keyed(outcomes: list[Outcome], by_id: bool) -> tuple[dict[str, Outcome], set[str]]:
    """Outcomes by pairing key, in order, and the keys of repeats: a text asked twice keys as `text (2)`."""
    keyed: dict[str, Outcome] = {}
    repeats: set[str] = set()
    for o in outcomes:
        key, n = (o.id if by_id else o.question), 1
        while (key if n == 1 else f"{key} ({n})") in keyed:
            n += 1
        keyed[key if n == 1 else f"{key} ({n})"] = o
        if n > 1:
            repeats.add(f"{key} ({n})")
    return keyed, repeats


def metric_key(metric: str) -> str:
    """A metric's name as `[thresholds.max_regression]` spells it: `exact match` -> `exact_match`."""
    return re.sub(r"[^a-z0-9]+", "_", metric.lower()).strip("_")


def compare_outcomes(
    baseline: list[Outcome],
    candidate: list[Outcome],
    *,
    baseline_name: str = "baseline",
    candidate_name: str = "candidate",
    alpha: float = ALPHA,
    gate: str = "difference",
    margins: Mapping[str, float] | None = None,
) -> Comparison:
    """The candidate against the baseline on the questions both answered (see the module's docstring). `gate`:
    "difference" or "non-inferiority"; `margins`: the largest drop accepted per metric (`metric_key`), in its
    units."""
    if not 0 < alpha < 1:
        raise SftEvalError(f"alpha must be between 0 and 1, not {alpha}")
    if gate not in GATES:
        raise SftEvalError(f"gate must be {' or '.join(map(repr, GATES))}, not {gate!r}")
    margins = dict(margins or {})
    for metric, margin in margins.items():
        if isinstance(margin, bool) or not isinstance(margin, int | float) or not 0 <= margin < math.inf:
            raise SftEvalError(f"the margin of {metric} must be a finite number of at least 0, not {margin!r}")
    by_id = all(o.id for o in (*baseline, *candidate))
    (base, base_repeats), (cand, cand_repeats) = _keyed(baseline, by_id), _keyed(candidate, by_id)
    common = [k for k in base if k in cand]
    if not common:
        raise SftEvalError(
            f"{baseline_name} and {candidate_name} share no question (paired by {'id' if by_id else 'text'}): "
            "they were asked different questions, so there is nothing to compare"
        )
    pairs = [(base[k], cand[k]) for k in common]
    known = [name for name, _ in BINARY] + [name for name, *_ in CONTINUOUS]
    unknown = sorted(set(margins) - {metric_key(n) for n in known})
    if unknown:
        keys = ", ".join(metric_key(n) for n in known)
        raise SftEvalError(f"thresholds.max_regression: unknown metric {unknown[0]!r}; the compared ones are {keys}")
    metrics = [m for name, check in BINARY if (m := _binary(name, check, pairs, alpha, margins)) is not None]
    metrics += [m for spec in CONTINUOUS if (m := _continuous(*spec, pairs, alpha, margins)) is not None]
    bounded = gate == "non-inferiority"
    tested = [m for m in metrics if not m.not_a_number and not (bounded and m.margin is not None)]
    adjusted = dict(zip((m.metric for m in tested), holm([m.p_value for m in tested]), strict=True))
    judged = []
    for m in metrics:
        if m.not_a_number:
            judged.append(m)
        elif bounded and m.margin is not None:  # intersection-union: each margin on its own, no correction
            within = m.drop_bound is not None and m.drop_bound <= m.margin
            judged.append(MetricComparison(**{**asdict(m), "verdict": "non-inferior" if within else NOT_SHOWN}))
        else:
            p_holm = adjusted[m.metric]
            worse = m.difference < 0 if m.better == "higher" else m.difference > 0
            verdict = (
                "no change" if p_holm >= alpha or m.difference == 0 else ("regression" if worse else "improvement")
            )
            judged.append(MetricComparison(**{**asdict(m), "p_holm": p_holm, "verdict": verdict}))
    tokens = paired_bootstrap("new tokens", [b.new_tokens for b, _ in pairs], [c.new_tokens for _, c in pairs])
    return Comparison(
        baseline=baseline_name,
        candidate=candidate_name,
        alpha=alpha,
        questions=len(common),
        paired_by="id" if by_id else "text",
        only_in_baseline=[base[k].question for k in base if k not in cand and k not in base_repeats],
        only_in_candidate=[cand[k].question for k in cand if k not in base and k not in cand_repeats],
        metrics=judged,
        new_tokens={"baseline": tokens.base, "candidate": tokens.tuned, "difference": tokens.difference},
        repeated={
            side: [keyed[k].question for k in keyed if k in repeats and k not in other]
            for side, keyed, repeats, other in (
                ("baseline", base, base_repeats, cand),
                ("candidate", cand, cand_repeats, base),
            )
        },
        gate=gate,
    )


def _binary(
    name: str,
    check: Callable[[Outcome], bool | None],
    pairs: list[tuple[Outcome, Outcome]],
    alpha: float,
    margins: Mapping[str, float],
):
    checked = [(b, c, check(b), check(c)) for b, c in pairs]
    judged = [(b, c, x, y) for b, c, x, y in checked if x is not None and y is not None]
    if not judged:  # e.g. exact match where no question has an expected answer
        return None
    lost = [c.question for _, c, x, y in judged if x and not y]
    gained = [c.question for _, c, x, y in judged if y and not x]
    effect = paired_bootstrap(name, [float(x) for *_, x, _ in judged], [float(y) for *_, y in judged])
    n = len(judged)
    spread = power.spread([float(x) - float(y) for *_, x, y in judged], 0.0, [c.cluster for _, c, *_ in judged])
    discordance = (len(lost) + len(gained)) / n
    mde = power.binary_mde(n, discordance, alpha)
    both = sum(1 for *_, x, y in judged if x and y)
    low, _ = power.newcombe_paired(both, len(lost), len(gained), n - both - len(lost) - len(gained), _z(alpha))
    drop = -effect.difference
    margin = margins.get(metric_key(name))
    needed = None
    if margin is not None and margin > 0:
        plain = power.binary_questions_needed(margin, discordance, alpha)
        needed = None if plain is None else math.ceil(plain * spread.design_effect**2)
    deff = spread.design_effect
    return MetricComparison(
        metric=name,
        kind="binary",
        better="higher",
        test="exact McNemar",
        questions=len(judged),
        baseline=effect.base,
        candidate=effect.tuned,
        difference=effect.difference,
        low=effect.low,
        high=effect.high,
        p_value=mcnemar_exact(len(lost), len(gained)),
        pass_to_fail=lost,
        fail_to_pass=gained,
        **_power_fields(
            name,
            "higher",
            n,
            None if mde is None else mde * deff,
            drop,
            drop + (-low - drop) * deff,
            margin,
            needed,
            spread,
            alpha,
        ),
    )


def _continuous(
    name: str,
    value: Callable[[Outcome], float | None],
    better: str,
    margin: float | None,
    pairs: list[tuple[Outcome, Outcome]],
    alpha: float,
    margins: Mapping[str, float],
):
    values = [(c.question, value(b), value(c), c.cluster) for b, c in pairs]
    valued = [(q, x, y, g) for q, x, y, g in values if x is not None and y is not None]
    if not valued:  # the expected answers' NLL where neither report has it
        return None
    broken = [q for q, x, y, _ in valued if not (math.isfinite(x) and math.isfinite(y))]
    if broken:
        return _not_comparable(name, "continuous", better, "paired bootstrap", len(valued), broken)
    effect = paired_bootstrap(name, [x for _, x, _, _ in valued], [y for _, _, y, _ in valued])
    sign = 1 if better == "lower" else -1
    worse = [q for q, x, y, _ in valued if margin is not None and sign * (y - x) > margin]
    n = len(valued)
    floor = float(np.std([x for _, x, _, _ in valued], ddof=1)) if n > 1 else 0.0  # the baseline's own spread
    spread = power.spread([sign * (y - x) for _, x, y, _ in valued], floor, [g for *_, g in valued])
    se = spread.standard_error * spread.design_effect
    df = spread.df if spread.clustered is not None else None
    mde = power.continuous_mde(se, alpha, df=df) if se > 0 else None
    accepted = margins.get(metric_key(name))
    critical = float(stats.t.ppf(1 - alpha, df)) if df else _z(alpha)
    needed = None if accepted is None else power.continuous_questions_needed(accepted, se * math.sqrt(n), alpha)
    drop = sign * effect.difference
    return MetricComparison(
        metric=name,
        kind="continuous",
        better=better,
        test="paired bootstrap",
        questions=effect.questions,
        baseline=effect.base,
        candidate=effect.tuned,
        difference=effect.difference,
        low=effect.low,
        high=effect.high,
        p_value=effect.p_value,
        worse=worse,
        **_power_fields(name, better, n, mde, drop, drop + critical * se, accepted, needed, spread, alpha),
    )


def _z(alpha: float) -> float:
    """The one-sided normal quantile of 1 - alpha."""
    return float(stats.norm.ppf(1 - alpha))


# How a drop is written per metric: rates in points, chrF in its own points, the rest in their units.
UNITS: dict[str, Callable[[float], str]] = {
    "chrF": lambda x: f"{x:.1f} chrF",
    "repetition": lambda x: f"{x:.3f}",
    "expected-answer NLL": lambda x: f"{x:.2f} nats/token",
}


def shown(metric: str, value: float) -> str:
    """A drop of `metric` for a person: `14 points` of a rate, `3.1 chrF`, `0.12 nats/token`."""
    return UNITS.get(metric, lambda x: f"{100 * x:.{0 if 100 * x >= 10 else 1}f} points")(value)


def _power_fields(
    name: str,
    better: str,
    questions: int,
    mde: float | None,
    drop: float,
    bound: float,
    margin: float | None,
    needed: int | None,
    spread: power.Spread,
    alpha: float,
) -> dict[str, Any]:
    """The detectable-effect fields of one metric, and the sentence that says them."""
    word = worse_word(better)
    if mde is None:
        why = "the exact test cannot reject at this size" if name in dict(BINARY) else "neither run's scores vary"
        sentence = f"with {questions} questions no {word} of {name} is detectable at alpha {alpha:g}: {why}"
    else:
        sentence = (
            f"with {questions} questions a {word} of {shown(name, mde)} would be missed one time in five; smaller "
            f"{word}s more often"
        )
    if margin is not None:
        said = f"the largest accepted {word} ({shown(name, margin)})"
        if needed is None:
            sentence += f"; {said} is not detectable at any size"
        elif mde is not None and margin >= mde:
            sentence += f"; {said} is within reach"
        else:
            sentence += f"; detecting {said} takes about {needed} questions"
    if spread.clustered is not None or spread.note.startswith("too few"):
        sentence += f" ({spread.note})"
    return {
        "min_detectable_effect": mde,
        "undetectable": mde is None,
        "margin": margin,
        "underpowered": margin is not None and (mde is None or margin < mde),
        "drop": drop,
        "drop_bound": bound,
        "questions_for_margin": needed,
        "clustering": spread.note,
        "detectable": sentence,
    }


def _not_comparable(name: str, kind: str, better: str, test: str, questions: int, broken: list[str]):
    """A metric with a score that is not a number on some question: no statistic, said as such."""
    nan = math.nan
    return MetricComparison(
        metric=name,
        kind=kind,
        better=better,
        test=test,
        questions=questions,
        baseline=nan,
        candidate=nan,
        difference=nan,
        low=nan,
        high=nan,
        p_value=nan,
        p_holm=nan,
        verdict=NOT_COMPARABLE,
        not_a_number=broken,
    )


def worse_word(better: str) -> str:
    """What a worse value is called for a metric where `better` ("higher" or "lower") is better: a drop or a rise."""
    return "rise" if better == "lower" else "drop"
