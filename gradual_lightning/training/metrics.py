"""Run metrics as pure functions of probe results and per-question correctness (names are keys of metrics.json).

A probe result is a `dict[question id, category]`; correctness is a `dict[question id, bool]`. Functions that
compare two probes use only the ids present in both.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence

from gradual_lightning.categories import CATEGORIES, Category
from gradual_lightning.probing.matching import is_abstention


def _check(categories: Iterable[str]) -> None:
    bad = sorted({c for c in categories if c not in CATEGORIES})
    if bad:
        raise ValueError(f"unknown categories {bad}; expected {list(CATEGORIES)}")


def accuracy(correct: Sequence[bool]) -> float | None:
    """Share of True; None when there is nothing to score (so an empty subset is not reported as 0%). Also the rate
    of any other per-question flag (abstained, hallucinated)."""
    return sum(map(bool, correct)) / len(correct) if len(correct) else None


def accuracy_by_category(correct_by_id: Mapping[str, bool], base_category_by_id: Mapping[str, str]) -> dict:
    """Accuracy per base-model category, for the categories present among the scored questions (CATEGORIES order);
    as `accuracy`, the rate of any per-question flag."""
    groups: dict[str, list[bool]] = {}
    for qid, ok in correct_by_id.items():
        if qid in base_category_by_id:
            groups.setdefault(base_category_by_id[qid], []).append(ok)
    _check(groups)
    return {c: accuracy(groups[c]) for c in CATEGORIES if c in groups}


def abstained(answers_by_id: Mapping[str, str], correct_by_id: Mapping[str, bool], text: str) -> dict[str, bool]:
    """Per question answered (and scored): whether the answer is the abstention `text` (`matching.is_abstention`) and
    not correct. A correct answer equal to the text (a gold alias equal to it; train.py refuses such data for
    schedules that train abstention) counts as correct, so correct, abstained and hallucinated never overlap."""
    return {q: is_abstention(a, text) and not correct_by_id[q] for q, a in answers_by_id.items() if q in correct_by_id}


def hallucinated(correct_by_id: Mapping[str, bool], abstained_by_id: Mapping[str, bool]) -> dict[str, bool]:
    """Per question (those in both): a hallucination is a wrong answer that is not an abstention."""
    return {q: not ok and not abstained_by_id[q] for q, ok in correct_by_id.items() if q in abstained_by_id}


def accuracy_answered(correct_by_id: Mapping[str, bool], abstained_by_id: Mapping[str, bool]) -> float | None:
    """Accuracy among the questions answered (not abstained), R-Tuning's precision; None when all abstained."""
    return accuracy([ok for q, ok in correct_by_id.items() if q in abstained_by_id and not abstained_by_id[q]])


def retention(correct_by_id: Mapping[str, bool], base_category_by_id: Mapping[str, str]) -> float | None:
    """Accuracy on the questions the base model knew (base HighlyKnown): how much known knowledge survived."""
    return accuracy([ok for qid, ok in correct_by_id.items() if base_category_by_id.get(qid) == Category.HIGHLY_KNOWN])


def category_counts(categories: Mapping[str, str] | Iterable[str]) -> dict[str, int]:
    """How many questions fall in each category; all four keys in CATEGORIES order, zeros included.

    `categories` is a probe result (question id -> category) or the categories themselves, one per question."""
    values = list(categories.values() if isinstance(categories, Mapping) else categories)
    _check(values)
    counts = dict.fromkeys(CATEGORIES, 0)
    for c in values:
        counts[c] += 1
    return counts


def knowledge_acquired(pool_counts: Sequence[Mapping[str, int]]) -> list[int]:
    """HighlyKnown count after each stage minus the base count; `pool_counts[0]` is the base probe, so entry 0 is 0."""
    if not pool_counts:
        return []
    base = pool_counts[0][Category.HIGHLY_KNOWN]
    return [c[Category.HIGHLY_KNOWN] - base for c in pool_counts]


def incremental_gain(acquired: Sequence[int]) -> float | None:
    """What stage 2 adds relative to stage 1's gain, (acq[2] - acq[1]) / acq[1] (the paper's "24% more").

    None when there is no stage 2 or stage 1 gained nothing (the ratio is undefined)."""
    if len(acquired) < 3 or acquired[1] == 0:
        return None
    return (acquired[2] - acquired[1]) / acquired[1]


def _common(base: Mapping[str, str], current: Mapping[str, str]) -> list[str]:
    _check(base.values())
    _check(current.values())
    return [q for q in base if q in current]


def forgotten(base: Mapping[str, str], current: Mapping[str, str]) -> int:
    """Questions HighlyKnown under the base model that are no longer HighlyKnown."""
    hk = Category.HIGHLY_KNOWN
    return sum(base[q] == hk and current[q] != hk for q in _common(base, current))


def transition_matrix(base: Mapping[str, str], current: Mapping[str, str]) -> list[list[int]]:
    """4x4 counts in CATEGORIES order: row = base category, column = current category."""
    index = {c: i for i, c in enumerate(CATEGORIES)}
    m = [[0] * len(CATEGORIES) for _ in CATEGORIES]
    for q in _common(base, current):
        m[index[base[q]]][index[current[q]]] += 1
    return m


def knowledge_acquired_split(base: Mapping[str, str], current: Mapping[str, str],
                             trained_ids: Iterable[str]) -> dict[str, int]:
    """Net HighlyKnown gain, (HighlyKnown now) - (HighlyKnown at base), separately among the questions trained on in
    any stage so far and those never trained on (does learning spread to questions the model never saw?)."""
    trained = set(trained_ids)
    hk = Category.HIGHLY_KNOWN
    out = {"trained": 0, "untrained": 0}
    for q in _common(base, current):
        out["trained" if q in trained else "untrained"] += (current[q] == hk) - (base[q] == hk)
    return out


def _t_cdf(x: float, df: int, steps: int = 2000) -> float:
    """Student t CDF for x >= 0 by Simpson's rule on the density (no scipy here)."""
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    h = x / steps
    pdf = [c * (1 + (i * h) ** 2 / df) ** (-(df + 1) / 2) for i in range(steps + 1)]
    return 0.5 + h / 3 * (pdf[0] + pdf[-1] + 4 * sum(pdf[1:-1:2]) + 2 * sum(pdf[2:-1:2]))


def t_quantile(p: float, df: int) -> float:
    """The p-quantile (p > 0.5) of Student's t with `df` degrees of freedom, by bisection on the CDF."""
    if df >= 1000:
        return statistics.NormalDist().inv_cdf(p)
    lo, hi = 0.0, 1.0
    while _t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided Student-t confidence interval over seeds: (mean, low, high).

    With one value the interval is unknown: (mean, nan, nan)."""
    if not values:
        raise ValueError("mean_ci needs at least one value")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    n, m = len(values), statistics.fmean(values)
    if n < 2:
        return m, math.nan, math.nan
    half = t_quantile(0.5 + confidence / 2, n - 1) * statistics.stdev(values) / math.sqrt(n)
    return m, m - half, m + half
