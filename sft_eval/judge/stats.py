"""What a judge's pairwise verdicts say, and how far to trust them: the win rate with a paired bootstrap interval and
a sign test, the flip and first-position rates of a judge asked in both orders, a length-controlled win rate, and
the judge's agreement with reference metrics (Cohen's kappa). Plain numbers in, plain numbers out.

A verdict is the candidate's side of a pair: "win", "tie" or "loss" (a tie counts half in every rate, as AlpacaEval
counts it), or None: the judge gave no verdict (counted and said, never guessed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import optimize, stats

Verdict = Literal["win", "tie", "loss"]
VERDICTS: tuple[Verdict, ...] = ("win", "tie", "loss")
SCORE = {"win": 1.0, "tie": 0.5, "loss": 0.0}


@dataclass(frozen=True)
class WinRate:
    """The candidate's win rate over the pairs with a verdict: `rate` (ties half), its 95% paired bootstrap interval
    [`low`, `high`], the two-sided sign test's `p_value` on the decisive pairs, and the counts."""

    rate: float
    low: float
    high: float
    p_value: float
    wins: int
    ties: int
    losses: int
    missing: int  # pairs the judge gave no verdict for

    @property
    def pairs(self) -> int:
        return self.wins + self.ties + self.losses

    @property
    def beyond_noise(self) -> bool:
        """The interval excludes one half: the candidate is judged better (or worse) than the luck of the pairs."""
        return self.low > 0.5 or self.high < 0.5


def win_rate(
    verdicts: Sequence[str | None], *, resamples: int = 2000, seed: int = 0, confidence: float = 0.95
) -> WinRate:
    """The win rate of `verdicts` (ties half), a percentile bootstrap interval over the pairs (resampled together:
    each pair is one question) and the exact two-sided sign test on the decisive ones."""
    given = [v for v in verdicts if v is not None]
    wins, ties, losses = (sum(v == k for v in given) for k in VERDICTS)
    missing = len(verdicts) - len(given)
    if not given:
        return WinRate(math.nan, math.nan, math.nan, 1.0, 0, 0, 0, missing)
    scores = np.array([SCORE[v] for v in given])
    rng = np.random.default_rng(seed)
    means = scores[rng.integers(0, len(scores), size=(resamples, len(scores)))].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    decisive = wins + losses
    p_value = float(stats.binomtest(wins, decisive, 0.5).pvalue) if decisive else 1.0
    return WinRate(float(scores.mean()), float(low), float(high), p_value, wins, ties, losses, missing)


@dataclass(frozen=True)
class OrderEffects:
    """A judge asked each pair in both orders: how often its verdict changed with the order (`flip_rate`, over the
    pairs with a verdict in both orders) and how often a decisive verdict picked the answer shown first
    (`first_position_rate`; 0.5 for a judge with no position bias)."""

    flip_rate: float
    first_position_rate: float
    both_orders: int  # pairs with a verdict in both orders
    decisive: int  # single-order verdicts that picked a side


def order_effects(first: Sequence[str | None], second: Sequence[str | None]) -> OrderEffects:
    """`first[i]`: the verdict (the candidate's side) with the candidate shown first; `second[i]`: with it shown
    second, already turned to the candidate's side. A pair flips when the two differ."""
    both = [(a, b) for a, b in zip(first, second, strict=True) if a is not None and b is not None]
    flips = sum(a != b for a, b in both)
    # first shown: the candidate in `first`, the baseline in `second`; "picked the first" is a win there, a loss here
    picks = [v == "win" for v in first if v in ("win", "loss")] + [v == "loss" for v in second if v in ("win", "loss")]
    return OrderEffects(
        flip_rate=flips / len(both) if both else math.nan,
        first_position_rate=sum(picks) / len(picks) if picks else math.nan,
        both_orders=len(both),
        decisive=len(picks),
    )


def combined(first: Verdict | None, second: Verdict | None) -> Verdict | None:
    """One verdict of a pair asked in both orders: the two agree, or it is a tie (a verdict that changes with the
    order is no preference); one order alone when the other has none; None with neither."""
    if first is None or second is None:
        return first if second is None else second
    return first if first == second else "tie"


@dataclass(frozen=True)
class LengthControlled:
    """The win rate with the answers' length difference held at zero: a logistic model of the verdict (ties half)
    on tanh(length difference / its standard deviation), L2-regularised, read at zero difference. Not identifiable
    (`rate` None, `why` says) when the differences do not straddle zero: every candidate answer longer (or every one
    shorter) leaves nothing to tell the length's effect from the candidate's."""

    rate: float | None
    length_coefficient: float | None
    why: str = ""


def length_controlled(
    verdicts: Sequence[str | None], length_differences: Sequence[float], l2: float = 1.0
) -> LengthControlled:
    """`length_differences[i]`: the candidate's answer's length minus the other's (tokens or characters), pair by
    pair with `verdicts`."""
    pairs = [(SCORE[v], float(d)) for v, d in zip(verdicts, length_differences, strict=True) if v is not None]
    if not pairs:
        return LengthControlled(None, None, "no verdicts")
    y = np.array([p[0] for p in pairs])
    d = np.array([p[1] for p in pairs])
    if (d > 0).any() != (d < 0).any():  # some differences, all on one side: the length and the model are confounded
        side = "longer" if (d > 0).any() else "shorter"
        return LengthControlled(None, None, f"not identifiable: every candidate answer is {side} than the other")
    if not d.any():
        return LengthControlled(float(y.mean()), 0.0, "")
    x = np.tanh(d / d.std())

    def loss(beta: np.ndarray) -> float:
        z = beta[0] + beta[1] * x
        # the binomial deviance with fractional targets (a tie counts half), plus the penalty on the length's slope
        return float(np.sum(np.logaddexp(0, z) - y * z) + 0.5 * l2 * beta[1] ** 2)

    def gradient(beta: np.ndarray) -> np.ndarray:
        p = 1 / (1 + np.exp(-(beta[0] + beta[1] * x)))
        return np.array([np.sum(p - y), np.sum((p - y) * x) + l2 * beta[1]])

    fitted = optimize.minimize(loss, np.zeros(2), jac=gradient, method="BFGS")
    intercept, slope = fitted.x
    return LengthControlled(float(1 / (1 + math.exp(-intercept))), float(slope), "")


def cohens_kappa(judge: Sequence[str], reference: Sequence[str]) -> float:
    """Agreement of the judge's verdicts with the reference metrics' (win/tie/loss each), beyond chance: 1 is
    complete agreement, 0 what chance gives. NaN when chance alone explains all (one category on both sides)."""
    n = len(judge)
    if n == 0:
        return math.nan
    observed = sum(a == b for a, b in zip(judge, reference, strict=True)) / n
    expected = sum((judge.count(k) / n) * (list(reference).count(k) / n) for k in VERDICTS)
    return math.nan if expected == 1 else (observed - expected) / (1 - expected)
