"""The judge's verdicts on the tuned model's answers against the base's (`judgement.judge_run`): the report's
`judge` record."""

# no `from __future__ import annotations`: Required and NotRequired must be seen when each record is made

from typing import Literal

from typing_extensions import TypedDict  # pydantic reads TypedDicts from typing_extensions on Python 3.11


class JudgeCalibration(TypedDict):
    """The judge on the calibration pairs, whose right verdict is known (docs/judge.md)."""

    pairs: int
    """Calibration pairs asked (each in both orders)."""
    accuracy: float
    """The share the judge got right (a pair's verdict combines both orders: a verdict that changes is a tie)."""
    flip_rate: float | None
    """The share of calibration pairs whose verdict changed with the order; null for a reward judge."""
    by_kind: dict[str, float]
    """The accuracy per kind of pair: `fact` (a right fact against a wrong one), `loop` (a stop against a loop),
    `padded` (a short answer against the same padded: the right verdict is a tie)."""


class JudgeCategory(TypedDict):
    """The judge's win rate over one question category (with at least 5 pairs)."""

    category: str
    """The category."""
    pairs: int
    """Its pairs."""
    win_rate: float | None
    """The tuned model's win rate there (ties half); null without a verdict."""


class JudgeVerdict(TypedDict):
    """One question's pair, judged in both orders."""

    question: str
    """The question."""
    verdict: Literal["win", "tie", "loss"] | None
    """The tuned answer's verdict against the base's, both orders combined; null: no verdict."""
    first: Literal["win", "tie", "loss"] | None
    """With the tuned answer shown first."""
    second: Literal["win", "tie", "loss"] | None
    """With the tuned answer shown second."""
    replies: list[str]
    """The judge's two replies (its reasons), in that order; a reward judge's two rewards, as text."""
    rewards: list[float] | None
    """A reward judge's rewards: the tuned answer's, the base's; null for a chat judge."""


class JudgeData(TypedDict):
    """The tuned model's answers against the base's, as the recipe's `[judge]` sees them."""

    kind: str
    """The judge's kind: `chat` or `reward`."""
    judge: str
    """Which judge: its model and server, or its folder."""
    against: str
    """The model the tuned answers are held against: `base`, or `baseline` (`[model] baseline`)."""
    pairs: int
    """Pairs judged: one per question."""
    win_rate: float | None
    """The tuned model's win rate (ties half) over the pairs with a verdict; null with none."""
    low: float | None
    """The 95% paired bootstrap interval's lower end."""
    high: float | None
    """Its upper end."""
    p_value: float
    """The two-sided sign test on the decisive pairs."""
    wins: int
    """Pairs the tuned answer won."""
    ties: int
    """Ties (a verdict that changes with the order is one)."""
    losses: int
    """Pairs the tuned answer lost."""
    missing: int
    """Pairs the judge gave no verdict for (counted, never guessed)."""
    length_controlled_win_rate: float | None
    """The win rate with the length difference held at zero; null when not identifiable (`length_note`)."""
    length_note: str
    """Why the length-controlled win rate is null; empty when it is not."""
    flip_rate: float | None
    """The share of pairs whose verdict changed when the answers swapped places; null for a reward judge (it sees
    each answer alone) or when no pair has a verdict in both orders."""
    first_position_rate: float | None
    """The share of decisive single-order verdicts that picked the answer shown first (0.5: no position bias); null
    for a reward judge."""
    trusted: bool
    """The judge's calibration accuracy reaches `min_judge_calibration`: its win rate is judged."""
    calibration: JudgeCalibration
    """The judge on the calibration pairs."""
    agreement_kappa: float | None
    """Cohen's kappa of its verdicts against the reference metrics' (exact match, else chrF beyond 5 points), on
    the questions with an expected answer; null with fewer than 5."""
    warnings: list[str]
    """What to keep in mind reading its verdicts: a chat judge from the judged models' family."""
    tie_margin: float | None
    """A reward judge's tie margin (a reward difference within it is a tie); null for a chat judge."""
    categories: list[JudgeCategory]
    """Per question category (with at least 5 pairs); empty with fewer than two categories."""
    verdicts: list[JudgeVerdict]
    """Every question's verdict, in the cards' order."""
    cached: int
    """Judge replies read from the answer cache rather than asked."""
