"""What a paired comparison could not have seen: the smallest drop it detects, the questions a drop needs, an
interval for a non-inferiority margin, and standard errors that respect questions sharing a source.

Plain numbers in, plain numbers out; `compare` applies them to each metric.

- **Binary checks** (a pass rate, compared by the exact McNemar test): the power to detect a drop δ is computed
  exactly, not simulated. Each question flips pass -> fail with probability (ψ + δ)/2 and fail -> pass with
  (ψ - δ)/2, ψ the discordance (the share of questions the two runs disagree on); the number of flips is
  Binomial(N, ψ), the pass -> fail count among them Binomial(flips, (1 + δ/ψ)/2), and the test rejects in the
  drop's direction where scipy's two-sided binomial test at p = 1/2 gives p <= alpha. The minimum detectable
  effect (MDE) is the smallest δ with power >= 80%, found by bisection (power grows with δ).
  The discordance is the observed one, floored at δ itself: a drop of δ needs at least δ of the questions to flip.
  That floor is the case most favourable to the test, so with runs that barely disagree the stated MDE is a lower
  bound, never "detects any drop". Where the exact test has no rejection region at all (fewer than 6 paired
  questions at alpha 0.05: even every question flipping one way gives p = 2 / 2^N > alpha), the drop is
  "undetectable at N questions".
- **Continuous metrics** (chrF, repetition, the expected answer's NLL): MDE = (z_{1-alpha/2} + z_{0.8}) x SE of
  the mean paired difference, the SE floored at the baseline's own spread across questions / sqrt(N) (the paired
  SE when the two runs correlate at 0.5): identical runs do not claim to detect any change.
- **Clustered errors**: questions that share a `cluster` (or `category`) are not independent. The SE of the mean
  paired difference is cluster-robust (CR1: the sum over clusters of the squared within-cluster sums of deviations,
  times G/(G-1)), with Student's t on G - 1 degrees of freedom for few clusters. Under `MIN_CLUSTERS` clusters it
  is not estimated at all ("too few clusters") and the plain SE is used, said as such. A clustered SE larger than
  the plain one scales the MDE and the non-inferiority bound by their ratio (the design effect).
- **Non-inferiority** for a rate: Newcombe's hybrid score interval for a paired difference of proportions (his
  method 10, 1998), built from the two Wilson intervals and the phi correlation of the pairs: unlike the bootstrap
  it keeps its width when no question flips (16 of 16 passing on both sides still bounds the drop well above 0).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

POWER = 0.8  # the power the minimum detectable effect is stated at: missed one time in five
MIN_CLUSTERS = 5  # fewer clusters than this: no clustered standard error is estimated


def mcnemar_cutoff(flips: np.ndarray, alpha: float) -> np.ndarray:
    """For each number of discordant pairs, the smallest pass -> fail count the two-sided exact McNemar test
    rejects at `alpha` (p = 2 P(X >= k) <= alpha, X ~ Binomial(flips, 1/2)); flips + 1 where none is rejected.
    scipy's inverse survival function gives the largest count not rejected; a test holds it to the p-values."""
    flips = np.asarray(flips)
    cutoff = stats.binom.isf(alpha / 2, flips, 0.5).astype(int) + 1
    return np.where(cutoff > flips, flips + 1, cutoff)


def mcnemar_power(questions: int, drop: float, discordance: float, alpha: float) -> float:
    """The chance the exact McNemar test rejects in the direction of a true drop of `drop` (a rate, 0-1) over
    `questions` paired questions whose runs disagree on a share `discordance` (at least `drop`)."""
    psi = min(1.0, max(discordance, drop))
    if questions <= 0 or psi <= 0 or drop <= 0:
        return 0.0
    flips = np.arange(questions + 1)
    weights = stats.binom.pmf(flips, questions, psi)
    cutoff = mcnemar_cutoff(flips, alpha)
    towards = min(1.0, (1 + drop / psi) / 2)
    return float(np.sum(weights * stats.binom.sf(cutoff - 1, flips, towards)))


@functools.lru_cache(maxsize=256)  # every pass rate of a comparison asks the same N and alpha
def binary_mde(questions: int, discordance: float, alpha: float, power: float = POWER) -> float | None:
    """The smallest drop in a pass rate the exact McNemar test detects with `power` (see the module); None where
    no drop is detectable at this many questions."""
    if mcnemar_power(questions, 1.0, 1.0, alpha) < power:
        return None
    low, high = 0.0, 1.0
    for _ in range(40):
        middle = (low + high) / 2
        low, high = (low, middle) if mcnemar_power(questions, middle, discordance, alpha) >= power else (middle, high)
    return high


@functools.lru_cache(maxsize=256)  # every pass rate of a comparison asks the same N and alpha
def binary_questions_needed(
    drop: float, discordance: float, alpha: float, power: float = POWER, limit: int = 100_000
) -> int | None:
    """The fewest paired questions whose exact McNemar test detects a drop of `drop` with `power`; None beyond
    `limit`. Power is not monotone in N for an exact test (its level steps), so the answer is the first N from
    which it stays at or above `power` for ten more questions."""
    if drop <= 0:
        return None
    psi = max(discordance, drop)
    guess = max(6, int((stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) ** 2 * psi / drop**2 * 0.7))
    low = 6
    high = guess
    while mcnemar_power(high, drop, psi, alpha) < power:
        low, high = high, high * 2
        if high > limit:
            return None
    while low < high:  # the first N with enough power, by bisection
        middle = (low + high) // 2
        low, high = (middle + 1, high) if mcnemar_power(middle, drop, psi, alpha) < power else (low, middle)
    n = low
    while any(mcnemar_power(m, drop, psi, alpha) < power for m in range(n + 1, n + 11)):
        n += 1
    return n


def continuous_mde(standard_error: float, alpha: float, power: float = POWER, df: float | None = None) -> float:
    """(t or z)_{1-alpha/2} + z_power times the standard error of a mean paired difference."""
    critical = stats.t.ppf(1 - alpha / 2, df) if df else stats.norm.ppf(1 - alpha / 2)
    return float((critical + stats.norm.ppf(power)) * standard_error)


def continuous_questions_needed(drop: float, spread: float, alpha: float, power: float = POWER) -> int | None:
    """Questions for a continuous metric's drop with `power`, from the paired differences' standard deviation."""
    if drop <= 0 or spread <= 0:
        return None
    return math.ceil(((stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) * spread / drop) ** 2)


@dataclass(frozen=True)
class Spread:
    """The standard error of a mean paired difference as the comparison uses it."""

    standard_error: float  # the plain one, floored (see the module)
    clustered: float | None  # the cluster-robust one (CR1), or None: not estimated
    clusters: int  # distinct clusters among the questions (each question its own when none are named)
    df: float | None  # Student's t degrees of freedom for the clustered SE (G - 1); None: normal
    note: str  # how it was estimated, for a person

    @property
    def design_effect(self) -> float:
        """How much wider the clustered SE is than the plain one (never below 1: clustering never narrows)."""
        if self.clustered is None or self.standard_error <= 0:
            return 1.0
        return max(1.0, self.clustered / self.standard_error)


def spread(differences: Sequence[float], floor: float, clusters: Sequence[str] | None = None) -> Spread:
    """The SE of the mean of `differences` (floored at `floor` / sqrt(N)) and, where `clusters` name at least
    `MIN_CLUSTERS` groups, its cluster-robust CR1 version."""
    d = np.asarray(differences, dtype=float)
    n = len(d)
    plain = max(float(d.std(ddof=1)) if n > 1 else 0.0, floor) / math.sqrt(max(n, 1))
    if clusters is None or not n or not all(clusters):
        return Spread(plain, None, n, None, "not clustered: the questions name no cluster or category")
    groups = len(set(clusters))
    if groups < MIN_CLUSTERS:
        note = f"too few clusters to cluster: {groups}, at least {MIN_CLUSTERS} needed"
        return Spread(plain, None, groups, None, note)
    deviations = d - d.mean()
    sums = np.array([deviations[[c == g for c in clusters]].sum() for g in sorted(set(clusters))])
    robust = math.sqrt(groups / (groups - 1) * float(np.sum(sums**2))) / n
    note = f"clustered by {groups} clusters: CR1, Student's t on {groups - 1} degrees of freedom"
    return Spread(plain, robust, groups, groups - 1, note)


def wilson(successes: int, total: int, z: float) -> tuple[float, float]:
    """Wilson's score interval for a proportion."""
    if total == 0:
        return 0.0, 1.0
    p = successes / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z / (1 + z * z / total) * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_paired(both: int, lost: int, gained: int, neither: int, z: float) -> tuple[float, float]:
    """Newcombe's hybrid score interval (method 10, with his continuity-corrected phi; as in Altman et al.,
    "Statistics with confidence", 2000) for candidate - baseline, two paired pass rates: `both` pass on both sides,
    `lost` pass -> fail, `gained` fail -> pass, `neither` fail on both. `z` is the normal quantile of each side."""
    n = both + lost + gained + neither
    cand, base = (both + gained) / n, (both + lost) / n
    l1, u1 = wilson(both + gained, n, z)
    l2, u2 = wilson(both + lost, n, z)
    a = (both + gained) * (lost + neither) * (both + lost) * (gained + neither)
    b = both * neither - gained * lost
    c = b - n / 2 if b > n / 2 else b if b < 0 else 0.0
    phi = c / math.sqrt(a) if a else 0.0
    difference = cand - base
    below = math.sqrt(max(0.0, (cand - l1) ** 2 - 2 * phi * (cand - l1) * (u2 - base) + (u2 - base) ** 2))
    above = math.sqrt(max(0.0, (base - l2) ** 2 - 2 * phi * (base - l2) * (u1 - cand) + (u1 - cand) ** 2))
    return max(-1.0, difference - below), min(1.0, difference + above)
