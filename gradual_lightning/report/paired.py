"""Statistics for comparing two settings: pure functions, no I/O.

Paired: two schedules run with the same seed answer the same test questions (same data split, same base model),
so each question gives a pair of outcomes (baseline correct?, other correct?). Seeds are strata: the questions of
one seed are paired with each other only. Only the discordant pairs carry information about the difference:
`b` = baseline right and other wrong, `c` = baseline wrong and other right; over n pairs the accuracy difference
(other - baseline) is (c - b) / n.

Unpaired (jobs that do not share the split): the difference of the means of per-seed values, Welch interval.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from gradual_lightning.training.metrics import t_quantile

Pair = tuple[bool, bool]  # (baseline correct, other correct) on one question


def discordant(pairs: Sequence[Pair]) -> tuple[int, int]:
    """(b, c): questions only the baseline answers right, and questions only the other answers right."""
    b = sum(1 for base, other in pairs if base and not other)
    c = sum(1 for base, other in pairs if other and not base)
    return b, c


def mcnemar_exact(b: int, c: int) -> float:
    """Exact McNemar test: two-sided binomial test of b successes in b + c trials at p = 1/2.

    p = min(1, 2 * P(X <= min(b, c))), X ~ Binomial(b + c, 1/2) (the doubled smaller tail); 1 with no discordant
    pair. Examples: b=0, c=6 -> 2 / 64 = 0.03125; b = c -> 1."""
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def bootstrap_difference(strata: Sequence[Sequence[Pair]], *, resamples: int = 2000, seed: int = 0,
                         confidence: float = 0.95) -> tuple[float, float, float]:
    """Accuracy difference (other - baseline) over all pairs of all strata, and a percentile interval from a
    stratified bootstrap: each resample draws, within every stratum (seed), as many questions as it has, with
    replacement; seeds are never mixed. Deterministic: numpy's PCG64 seeded with `seed`, strata drawn in order.

    Returns (difference, low, high). The interval reflects which questions were drawn, not which training seeds:
    the seeds are taken as given (strata), as the paired test does. With few discordant pairs it is too narrow
    (none: [0, 0]); the exact McNemar p does not have that weakness."""
    diffs = [np.array([int(o) - int(b) for b, o in s], dtype=np.int64) for s in strata if len(s)]
    n = sum(len(d) for d in diffs)
    if n == 0:
        raise ValueError("bootstrap_difference needs at least one pair")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    totals = np.zeros(resamples, dtype=np.int64)
    for d in diffs:
        totals += d[rng.integers(0, len(d), size=(resamples, len(d)))].sum(axis=1)
    alpha = 1 - confidence
    low, high = np.quantile(totals / n, [alpha / 2, 1 - alpha / 2])
    return float(sum(int(d.sum()) for d in diffs) / n), float(low), float(high)


def detectable_difference(discordant_rate: float, n: int, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest accuracy difference a two-sided paired test at level `alpha` finds with probability `power`,
    given the share of discordant pairs `discordant_rate` = (b + c) / n among n pairs:

        (z_{1 - alpha/2} + z_{power}) * sqrt(discordant_rate / n)     (alpha 0.05, power 0.8: 2.80 * sqrt(d / n))

    A normal approximation: a pair's difference is -1, 0 or +1, its variance d - delta^2 ~ d for small delta, so the
    standard error of the mean difference is sqrt(d / n). It takes the observed d as the true one and ignores the
    clustering of questions within seeds. No pair (n = 0) or no discordant pair (d = 0, the variance is not known
    from the data): nan, not a "detectable difference of 0"."""
    if n <= 0 or discordant_rate <= 0:
        return math.nan
    z = statistics.NormalDist().inv_cdf
    return (z(1 - alpha / 2) + z(power)) * math.sqrt(discordant_rate / n)


@dataclass
class PairedAccuracy:
    """Paired comparison of accuracies over strata (seeds) of question pairs."""

    diff: float
    low: float
    high: float
    n: int  # pairs (questions x seeds)
    b: int  # pooled: baseline right, other wrong
    c: int  # pooled: baseline wrong, other right
    p_value: float  # exact McNemar on the pooled discordant counts
    p_per_stratum: list[float] = field(default_factory=list)
    detectable: float = math.nan  # at 80% power, alpha 0.05 (detectable_difference)


def paired_accuracy(strata: Sequence[Sequence[Pair]], *, resamples: int = 2000, seed: int = 0) -> PairedAccuracy:
    """Difference with its stratified-bootstrap 95% interval, McNemar per stratum and pooled, detectable difference.

    Pooled McNemar: the discordant counts summed over strata, b = sum b_s and c = sum c_s, then one exact test.
    Valid because under "no difference" every discordant pair of every seed goes either way with probability 1/2,
    independently: the pooled b is Binomial(b + c, 1/2) (the stratified McNemar test of 1:1 matched pairs)."""
    diff, low, high = bootstrap_difference(strata, resamples=resamples, seed=seed)
    counts = [discordant(s) for s in strata]
    b, c = sum(x for x, _ in counts), sum(y for _, y in counts)
    n = sum(len(s) for s in strata)
    return PairedAccuracy(diff, low, high, n, b, c, mcnemar_exact(b, c), [mcnemar_exact(x, y) for x, y in counts],
                          detectable_difference((b + c) / n, n))


def welch_difference(baseline: Sequence[float], other: Sequence[float],
                     confidence: float = 0.95) -> tuple[float, float, float]:
    """Unpaired: mean(other) - mean(baseline) with a Welch t interval (unequal variances), (diff, low, high).

    se = sqrt(s_a^2 / n_a + s_b^2 / n_b); degrees of freedom by Welch-Satterthwaite, rounded down (a slightly wider,
    conservative interval; from 1000 on the normal quantile). Fewer than two values on a side: no interval (nan)."""
    if not baseline or not other:
        raise ValueError("welch_difference needs at least one value on each side")
    diff = statistics.fmean(other) - statistics.fmean(baseline)
    if len(baseline) < 2 or len(other) < 2:
        return diff, math.nan, math.nan
    va, vb = statistics.variance(baseline) / len(baseline), statistics.variance(other) / len(other)
    if va + vb == 0:
        return diff, diff, diff
    df = (va + vb) ** 2 / (va**2 / (len(baseline) - 1) + vb**2 / (len(other) - 1))
    half = t_quantile(0.5 + confidence / 2, max(1, math.floor(df))) * math.sqrt(va + vb)
    return diff, diff - half, diff + half
