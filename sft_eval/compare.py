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
- A score that is not a number (NaN or infinite: a model whose weights diverged) is never a number in a statistic:
  its metric is "not comparable", names the questions, is left out of Holm, and fails the comparison as a
  regression does (it cannot say there is none).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from sft_eval.errors import SftEvalError
from sft_eval.report.format import ReportData
from sft_eval.sanity import Evaluation, paired_bootstrap

COMPARE_FORMAT = "sft-eval-compare/1"
NOT_COMPARABLE = "not comparable"
ALPHA = 0.05
SHOWN_FLIPS = 10  # questions the text lists per flip direction (the JSON lists them all)


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
            expected_nll=(card.get("expected_nll") or {}).get(which),
            chrf=card[which].get("chrf"),
        )
        for card in context["cards"]
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    def verdict(self) -> str:
        """ "regression", "not comparable" (no regression found, but a metric could not be compared) or
        "no regression"; either of the first two fails the comparison."""
        return "regression" if self.regressions else NOT_COMPARABLE if self.not_comparable else "no regression"

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": COMPARE_FORMAT,
            "baseline": self.baseline,
            "candidate": self.candidate,
            "alpha": self.alpha,
            "questions": self.questions,
            "paired_by": self.paired_by,
            "only_in_baseline": self.only_in_baseline,
            "only_in_candidate": self.only_in_candidate,
            "repeated": self.repeated,
            "verdict": self.verdict,
            "regressions": [m.metric for m in self.regressions],
            "not_comparable": [m.metric for m in self.not_comparable],
            "improvements": [m.metric for m in self.improvements],
            "metrics": [m.to_dict() for m in self.metrics],
            "new_tokens": self.new_tokens,
        }


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


def compare_outcomes(
    baseline: list[Outcome],
    candidate: list[Outcome],
    *,
    baseline_name: str = "baseline",
    candidate_name: str = "candidate",
    alpha: float = ALPHA,
) -> Comparison:
    """The candidate against the baseline on the questions both answered (see the module's docstring)."""
    if not 0 < alpha < 1:
        raise SftEvalError(f"alpha must be between 0 and 1, not {alpha}")
    by_id = all(o.id for o in (*baseline, *candidate))
    (base, base_repeats), (cand, cand_repeats) = _keyed(baseline, by_id), _keyed(candidate, by_id)
    common = [k for k in base if k in cand]
    if not common:
        raise SftEvalError(
            f"{baseline_name} and {candidate_name} share no question (paired by {'id' if by_id else 'text'}): "
            "they were asked different questions, so there is nothing to compare"
        )
    pairs = [(base[k], cand[k]) for k in common]
    metrics = [m for name, check in BINARY if (m := _binary(name, check, pairs)) is not None]
    metrics += [m for spec in CONTINUOUS if (m := _continuous(*spec, pairs)) is not None]
    tested = [m for m in metrics if not m.not_a_number]
    adjusted = dict(zip((m.metric for m in tested), holm([m.p_value for m in tested]), strict=True))
    judged = []
    for m in metrics:
        if m.not_a_number:
            judged.append(m)
            continue
        p_holm = adjusted[m.metric]
        worse = m.difference < 0 if m.better == "higher" else m.difference > 0
        verdict = "no change" if p_holm >= alpha or m.difference == 0 else ("regression" if worse else "improvement")
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
    )


def _binary(name: str, check: Callable[[Outcome], bool | None], pairs: list[tuple[Outcome, Outcome]]):
    judged = [(b, c, check(b), check(c)) for b, c in pairs]
    judged = [(b, c, x, y) for b, c, x, y in judged if x is not None and y is not None]
    if not judged:  # e.g. exact match where no question has an expected answer
        return None
    lost = [c.question for _, c, x, y in judged if x and not y]
    gained = [c.question for _, c, x, y in judged if y and not x]
    effect = paired_bootstrap(name, [float(x) for *_, x, _ in judged], [float(y) for *_, y in judged])
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
    )


def _continuous(
    name: str,
    value: Callable[[Outcome], float | None],
    better: str,
    margin: float | None,
    pairs: list[tuple[Outcome, Outcome]],
):
    valued = [(c.question, value(b), value(c)) for b, c in pairs]
    valued = [(q, x, y) for q, x, y in valued if x is not None and y is not None]
    if not valued:  # the expected answers' NLL where neither report has it
        return None
    broken = [q for q, x, y in valued if not (math.isfinite(x) and math.isfinite(y))]
    if broken:
        return _not_comparable(name, "continuous", better, "paired bootstrap", len(valued), broken)
    effect = paired_bootstrap(name, [x for _, x, _ in valued], [y for *_, y in valued])
    sign = 1 if better == "lower" else -1
    worse = [q for q, x, y in valued if margin is not None and sign * (y - x) > margin]
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
    )


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


def _listed(questions: list[str], limit: int = SHOWN_FLIPS) -> str:
    shown = ", ".join(repr(q[:60] + ("..." if len(q) > 60 else "")) for q in questions[:limit])
    return shown + (f" and {len(questions) - limit} more" if len(questions) > limit else "")


def describe(comparison: Comparison) -> list[str]:
    """The comparison as text lines: the verdict, then each metric with its effect, interval, p-values and flips."""
    c = comparison
    lines = [
        f"baseline {c.baseline}",
        f"candidate {c.candidate}",
        f"{c.questions} question(s) paired by {c.paired_by}; alpha {c.alpha} after Holm-Bonferroni over "
        f"{len(c.metrics)} metrics",
    ]
    for m in c.metrics:
        if m.not_a_number:
            lines.append(
                f"{m.verdict.upper()} {m.metric}: {len(m.not_a_number)} of {m.questions} question(s) have a score "
                f"that is not a number (NaN or infinite) on a side, so no statistic is computed: "
                f"{_listed(m.not_a_number)}"
            )
            continue
        lines.append(
            f"{m.verdict.upper() if m.verdict == 'regression' else m.verdict:11} {m.metric}: {m.baseline:.3f} -> "
            f"{m.candidate:.3f} ({m.difference:+.3f}, 95% interval {m.low:+.3f} to {m.high:+.3f}; {m.test} "
            f"p={m.p_value:.3g}, Holm p={m.p_holm:.3g}; {m.better} is better)"
        )
        if m.pass_to_fail:
            lines.append(f"            pass -> fail ({len(m.pass_to_fail)}): {_listed(m.pass_to_fail)}")
        if m.fail_to_pass:
            lines.append(f"            fail -> pass ({len(m.fail_to_pass)}): {_listed(m.fail_to_pass)}")
        if m.worse:
            lines.append(f"            worse by over {EXPECTED_NLL_MARGIN:g} ({len(m.worse)}): {_listed(m.worse)}")
    tokens = c.new_tokens
    lines.append(f"new tokens per answer: {tokens['baseline']:.1f} -> {tokens['candidate']:.1f} (shown, not tested)")
    for side, missing in (("baseline", c.only_in_baseline), ("candidate", c.only_in_candidate)):
        if missing:
            lines.append(f"only in the {side}, not compared ({len(missing)}): {_listed(missing)}")
    for side, extra in c.repeated.items():
        if extra:
            lines.append(f"asked again in the {side}, the extra answer not compared ({len(extra)}): {_listed(extra)}")
    regressed = ", ".join(m.metric for m in c.regressions)
    improved = ", ".join(m.metric for m in c.improvements)
    unknown = ", ".join(m.metric for m in c.not_comparable)
    if regressed:
        lines.append(f"regression: {regressed}" + (f"; not comparable: {unknown}" if unknown else ""))
    elif unknown:
        lines.append(f"not comparable: {unknown} (a score that is not a number: no verdict on it)")
    else:
        lines.append("no regression" + (f"; improved: {improved}" if improved else ""))
    return lines


def code_span(text: str) -> str:
    """`text` as one inline code span of GitHub-flavoured Markdown, whatever it holds: fenced by one backtick more
    than its longest run of backticks (CommonMark), padded with a space where it starts or ends with one, on one
    line. Inside a code span nothing is markup: a question holding `<img>` or a link is shown, never rendered."""
    flat = " ".join(text.split())
    fence = "`" * (max((len(run) for run in re.findall(r"`+", flat)), default=0) + 1)
    pad = " " if flat.startswith("`") or flat.endswith("`") else ""
    return f"{fence}{pad}{flat}{pad}{fence}"


def markdown(comparison: Comparison) -> str:
    """The verdict as GitHub-flavoured Markdown (for `$GITHUB_STEP_SUMMARY`)."""
    c = comparison
    head = (
        f"regression in {', '.join(m.metric for m in c.regressions)}"
        if c.regressions
        else f"not comparable: {', '.join(m.metric for m in c.not_comparable)}"
        if c.not_comparable
        else "no regression"
    )
    rows = [
        f"| {m.metric} | – | – | {len(m.not_a_number)} score(s) not a number | – | – | – | {m.verdict} |"
        if m.not_a_number
        else f"| {m.metric} | {m.baseline:.3f} | {m.candidate:.3f} | {m.difference:+.3f} [{m.low:+.3f}, {m.high:+.3f}] "
        f"| {m.test} {m.p_value:.3g} | {m.p_holm:.3g} | {len(m.pass_to_fail)} / {len(m.fail_to_pass)} | {m.verdict} |"
        for m in c.metrics
    ]
    flips = [
        f"- **{m.metric}** pass -> fail: " + ", ".join(code_span(q[:80]) for q in m.pass_to_fail)
        for m in c.metrics
        if m.pass_to_fail
    ] + [
        f"- **{m.metric}** worse by over {EXPECTED_NLL_MARGIN:g}: " + ", ".join(code_span(q[:80]) for q in m.worse)
        for m in c.metrics
        if m.worse
    ]
    return "\n".join(
        [
            f"### sft-eval compare: {head}",
            "",
            f"{code_span(c.candidate)} against {code_span(c.baseline)}: {c.questions} questions paired by "
            f"{c.paired_by}, alpha "
            f"{c.alpha} after Holm-Bonferroni.",
            "",
            "| metric | baseline | candidate | difference [95% interval] | p | Holm p | pass->fail / fail->pass "
            "| verdict |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            *flips,
            *(
                [f"- only in one side, not compared: {len(c.only_in_baseline) + len(c.only_in_candidate)} question(s)"]
                if c.only_in_baseline or c.only_in_candidate
                else []
            ),
            "",
        ]
    )


def write_step_summary(comparison: Comparison, environ: Iterable[tuple[str, str]] | None = None) -> Path | None:
    """Append the Markdown verdict to `$GITHUB_STEP_SUMMARY` where GitHub Actions sets it; the path, or None."""
    summary = dict(environ if environ is not None else os.environ.items()).get("GITHUB_STEP_SUMMARY")
    if not summary:
        return None
    path = Path(summary)
    try:
        with path.open("a", encoding="utf-8") as out:
            out.write(markdown(comparison) + "\n")
    except OSError as exc:
        raise SftEvalError(f"GITHUB_STEP_SUMMARY: cannot append to {path}: {exc.strerror or exc}") from None
    return path
