"""Paired comparisons: the statistics on cases with known answers."""

import math
import statistics

import numpy as np
import pytest

from gradual_lightning.report.paired import (
    bootstrap_difference,
    detectable_difference,
    discordant,
    mcnemar_exact,
    paired_accuracy,
    welch_difference,
)

# ---- statistics ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("b, c, p", [
    (0, 6, 0.03125),  # 2 * (1/2)^6
    (6, 0, 0.03125),
    (4, 4, 1.0), (0, 0, 1.0), (1, 1, 1.0),
    (3, 10, 2 * (1 + 13 + 78 + 286) / 2**13),  # 2 * P(X <= 3), X ~ Binomial(13, 1/2)
    (1, 5, 2 * (1 + 6) / 2**6),
])
def test_mcnemar_exact(b, c, p):
    assert mcnemar_exact(b, c) == pytest.approx(p, rel=1e-12)


def test_mcnemar_rejects_negative_counts():
    with pytest.raises(ValueError, match="b=-1"):
        mcnemar_exact(-1, 3)


def _pairs(only_other, only_base, both, neither):
    """(baseline correct, other correct) pairs with the given counts of each kind."""
    return [(False, True)] * only_other + [(True, False)] * only_base + [(True, True)] * both + [(False, False)] * \
        neither


def test_bootstrap_interval_of_a_known_case_and_deterministic():
    pairs = _pairs(30, 10, 30, 30)  # difference (30 - 10) / 100 = 0.2
    diff, low, high = bootstrap_difference([pairs])
    assert diff == pytest.approx(0.2) and low < 0.2 < high and low > 0
    normal_half = 1.959964 * math.sqrt((0.4 - 0.2**2) / 100)  # sd of a pair's difference: sqrt(d - delta^2)
    assert (high - low) / 2 == pytest.approx(normal_half, rel=0.15)
    assert bootstrap_difference([pairs]) == (diff, low, high)  # same seed, same interval
    assert bootstrap_difference([pairs], seed=1)[0] == diff


def test_bootstrap_covers_the_true_difference():
    """Draws from a population with a known difference (P(only other right) = 0.3, P(only baseline right) = 0.1:
    0.2): the 95% interval holds it in about 95% of 200 draws of 2 seeds x 60 questions."""
    rng = np.random.default_rng(7)
    hits = 0
    for _ in range(200):
        strata = []
        for _ in range(2):
            u = rng.random(60)
            strata.append([(bool(x >= 0.3 and x < 0.4) or x >= 0.7, bool(x < 0.3) or x >= 0.7) for x in u])
        _, low, high = bootstrap_difference(strata, resamples=500)
        hits += low <= 0.2 <= high
    assert 0.88 <= hits / 200 <= 0.99


def test_bootstrap_resamples_within_seeds():
    """Seed 1: the other answers all 10 right, the baseline none; seed 2 the reverse. Pooled the difference is 0, and
    resampling questions within each seed cannot change it: the interval is [0, 0] (mixing seeds would not be)."""
    assert bootstrap_difference([_pairs(10, 0, 0, 0), _pairs(0, 10, 0, 0)]) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="at least one pair"):
        bootstrap_difference([[], []])


def test_detectable_difference():
    z = statistics.NormalDist().inv_cdf
    assert detectable_difference(0.15, 40) == pytest.approx((z(0.975) + z(0.8)) * math.sqrt(0.15 / 40))
    assert detectable_difference(0.15, 40) == pytest.approx(2.801585 * math.sqrt(0.15 / 40), rel=1e-6)
    assert detectable_difference(0.2, 180) < detectable_difference(0.2, 60)  # more questions, smaller
    assert math.isnan(detectable_difference(0.0, 60)) and math.isnan(detectable_difference(0.1, 0))  # unknown


def test_paired_accuracy_pools_discordant_counts_over_seeds():
    seed1, seed2 = _pairs(3, 0, 5, 12), _pairs(2, 1, 4, 13)
    r = paired_accuracy([seed1, seed2])
    assert (r.n, r.b, r.c) == (40, 1, 5) and discordant(seed2) == (1, 2)
    assert r.diff == pytest.approx(0.1)
    assert r.p_value == pytest.approx(mcnemar_exact(1, 5)) and r.p_per_stratum == [0.25, 1.0]
    assert r.detectable == pytest.approx(detectable_difference(6 / 40, 40))


def test_welch_difference():
    a, b = [0.5, 0.6, 0.7], [0.55, 0.65, 0.9, 0.8]
    diff, low, high = welch_difference(a, b)
    se = math.sqrt(statistics.variance(a) / 3 + statistics.variance(b) / 4)
    assert diff == pytest.approx(0.125)
    assert (high - low) / 2 == pytest.approx(2.776445 * se, rel=1e-4)  # Welch df 4.96, rounded down: t(0.975, 4)
    one = welch_difference([0.5], b)
    assert one[0] == pytest.approx(0.225) and math.isnan(one[1]) and math.isnan(one[2])
