"""The comparison of a run with a baseline (`compare.Comparison`, format `sft-eval-compare/1`): what `sft-eval
compare --json` prints and a report's `against_baseline` holds."""

# no `from __future__ import annotations`: Required and NotRequired must be seen when each record is made

from typing import Literal

from typing_extensions import TypedDict  # pydantic reads TypedDicts from typing_extensions on Python 3.11


class MetricData(TypedDict):
    """One metric of a comparison, baseline against candidate (`compare.MetricComparison`); a number is null where
    the metric was not comparable (a score that was not a number)."""

    metric: str
    """Its name."""
    kind: Literal["binary", "continuous"]
    """A pass rate, or a continuous score."""
    better: Literal["higher", "lower"]
    """Which way is better."""
    test: str
    """`exact McNemar` or `paired bootstrap`."""
    questions: int
    """The questions both sides answered."""
    baseline: float | None
    """The baseline's mean."""
    candidate: float | None
    """The candidate's mean."""
    difference: float | None
    """Candidate minus baseline."""
    low: float | None
    """The 95% paired interval's lower end."""
    high: float | None
    """Its upper end."""
    p_value: float | None
    """The test's two-sided p-value."""
    p_holm: float | None
    """Holm-Bonferroni-corrected across the metrics tested."""
    verdict: str
    """`regression`, `improvement`, `no change`, `non-inferior`, `not shown non-inferior` or `not comparable`."""
    pass_to_fail: list[str]
    """Binary checks: the questions that passed on the baseline and fail on the candidate."""
    fail_to_pass: list[str]
    """And the other way."""
    worse: list[str]
    """The expected-answer NLL: questions worse beyond the per-question margin."""
    not_a_number: list[str]
    """Questions whose score is not a number on a side."""
    min_detectable_effect: float | None
    """The drop this comparison detects at 80% power; null when none is detectable."""
    undetectable: bool
    """No drop is detectable with these questions."""
    margin: float | None
    """`[thresholds.max_regression]`'s margin for it, in its units; null without one."""
    underpowered: bool
    """The margin is below the detectable effect: a drop that large would likely be missed."""
    drop: float | None
    """The observed drop (the rise where lower is better)."""
    drop_bound: float | None
    """The drop's one-sided upper bound (non-inferiority)."""
    questions_for_margin: int | None
    """Questions that would detect a drop of `margin` at 80% power."""
    clustering: str
    """How the standard error was estimated (clustered by `cluster`, or not)."""
    detectable: str
    """What it could and could not have seen, in one sentence."""


class ComparisonData(TypedDict):
    """A run against a baseline (`compare.Comparison`, format `sft-eval-compare/1`)."""

    format: Literal["sft-eval-compare/1"]
    """This format's version."""
    baseline: str
    """Where the baseline came from (a report's path, `model.baseline (FOLDER)`)."""
    candidate: str
    """Where the candidate came from (`this run`, a report's path)."""
    alpha: float
    """The significance level."""
    questions: int
    """The questions paired."""
    paired_by: Literal["id", "text"]
    """How questions were paired: by the questions file's `id`, else by text."""
    only_in_baseline: list[str]
    """Questions only the baseline answered (not compared)."""
    only_in_candidate: list[str]
    """Questions only the candidate answered (not compared)."""
    repeated: dict[str, list[str]]
    """By side, questions asked more often there than on the other side (the extra answers not compared)."""
    gate: Literal["difference", "non-inferiority"]
    """The gate the verdict applies (`[thresholds] gate`)."""
    verdict: str
    """`regression`, `not shown non-inferior`, `not comparable`, `no regression` or `non-inferior`."""
    passed: bool
    """Whether the gate passed."""
    regressions: list[str]
    """The metrics that regressed beyond noise."""
    not_shown_non_inferior: list[str]
    """Under the non-inferiority gate: the metrics whose drop is not shown within their margin."""
    not_comparable: list[str]
    """The metrics that could not be compared."""
    improvements: list[str]
    """The metrics that improved beyond noise."""
    metrics: list[MetricData]
    """Every metric compared."""
    new_tokens: dict[str, float]
    """Mean new tokens per answer on each side (shown, not tested)."""
