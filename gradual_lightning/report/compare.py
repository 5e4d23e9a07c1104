"""Every group against a baseline group, on the seeds both ran: paired per question where the two jobs of a seed
share the data split, unpaired (across seeds) where no seed does.

A seed pairs when both groups finished a job with it, the two jobs' data fingerprints are known and equal, and
both dirs hold the per-question test outcomes (`probe/test_correct.json`, `probe/stage0_test.jsonl`). Paired:
test accuracy, retention (accuracy on the test questions the base model had as HighlyKnown) and accuracy on the
other base categories are compared per question (`paired.paired_accuracy`); a category split keeps the questions
both jobs' base probes put in that category. Knowledge acquired on the pool, among trained and never-trained
questions (metrics.json, final stage), is compared as per-seed differences with a Student t interval. The test
hallucination (a wrong answer that is not the abstention text) and abstention rates are compared per question like
accuracy where every paired job dir keeps its test answers (`probe/test_answers.json`), else as per-seed differences
of metrics.json's rates (t interval). When no seed pairs, every metric is compared unpaired: per-seed values of
metrics.json, Welch interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gradual_lightning.categories import CATEGORIES, Category
from gradual_lightning.report.jobs import RATES, Job, TestOutcomes, data_fingerprint, read_test_outcomes
from gradual_lightning.report.paired import Pair, paired_accuracy, welch_difference
from gradual_lightning.report.stats import Group
from gradual_lightning.training.metrics import hallucinated, mean_ci

PAIRED_BOOTSTRAP, PAIRED_T, UNPAIRED = "paired bootstrap", "paired t", "unpaired Welch"
# metric -> base category of the test questions it scores (None: all); retention is base HighlyKnown
ACCURACIES = {"test_accuracy": None, "retention": Category.HIGHLY_KNOWN.value,
              **{f"accuracy_{c}": c for c in CATEGORIES if c != Category.HIGHLY_KNOWN}}
ACQUIRED = ("knowledge_acquired_trained", "knowledge_acquired_untrained")
SHARES = (*ACCURACIES, *RATES)  # shares of the test set: differences lie in [-1, 1]
METRICS = (*SHARES, *ACQUIRED)


@dataclass
class Difference:
    """One metric of a group minus the baseline's, with its 95% interval and how it was computed."""

    metric: str
    diff: float
    low: float
    high: float
    method: str  # PAIRED_BOOTSTRAP, PAIRED_T or UNPAIRED
    n_seeds: int  # paired: the seeds paired; unpaired: the group's seeds with a value (the baseline's in n_baseline)
    n_baseline: int | None = None
    n_questions: int | None = None  # paired accuracies: pairs pooled over seeds
    p_value: float | None = None  # paired accuracies: exact McNemar on the discordant pairs summed over seeds
    p_per_seed: dict[Any, float] = field(default_factory=dict)
    detectable: float | None = None  # paired accuracies: the difference found with 80% power at alpha 0.05
    discordant: tuple[int, int] | None = None  # (baseline only right, group only right), pooled over seeds


@dataclass
class Comparison:
    group: Group
    baseline: Group
    paired_seeds: list = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # seeds left out of the pairing, and why
    differences: list[Difference] = field(default_factory=list)

    @property
    def paired(self) -> bool:
        return bool(self.paired_seeds)

    def get(self, metric: str) -> Difference | None:
        return next((d for d in self.differences if d.metric == metric), None)


class BaselineError(ValueError):
    """A baseline that matches no group, or several."""


def pick_baseline(groups: Sequence[Group], spec: str | None = None) -> Group:
    """The baseline group: by `spec`, a group's name or label, or overrides it holds ("schedule=one_stage", several
    joined by ","); without `spec`, the first group with a finished job. A spec that matches no group, or several,
    is a BaselineError naming the groups."""
    if not groups:
        raise ValueError("no group to take as the baseline")
    if spec is None:
        return next((g for g in groups if g.finished), groups[0])
    wanted = {s.strip() for s in spec.split(",") if s.strip()}
    matches = [g for g in groups if spec in (g.name, g.label)] or [g for g in groups if wanted <= set(g.setting)]
    if len(matches) != 1:
        found = "no group" if not matches else f"{len(matches)} groups"
        raise BaselineError(f"baseline {spec!r} matches {found}; the groups are: {', '.join(g.name for g in groups)}")
    return matches[0]


def compare_groups(groups: Sequence[Group], baseline: str | None = None, *, resamples: int = 2000,
                   seed: int = 0) -> list[Comparison]:
    """Each group but the baseline against the baseline (none with fewer than two groups)."""
    if len(groups) < 2:
        return []
    base = pick_baseline(groups, baseline)
    return [compare(base, g, resamples=resamples, seed=seed) for g in groups if g is not base]


def compare(baseline: Group, group: Group, *, resamples: int = 2000, seed: int = 0) -> Comparison:
    comp = Comparison(group, baseline)
    ours, theirs = _by_seed(baseline), _by_seed(group)
    pairs = []  # (seed, baseline job, group job, baseline outcomes, group outcomes)
    for s in [*ours, *(s for s in theirs if s not in ours)]:
        if s not in ours or s not in theirs:
            comp.notes.append(f"seed {s}: finished in {group.label if s in theirs else baseline.label} only")
            continue
        why, outcomes = _pair(ours[s], theirs[s])
        if why:
            comp.notes.append(f"seed {s}: {why}")
        else:
            pairs.append((s, ours[s], theirs[s], *outcomes))
    comp.paired_seeds = [s for s, *_ in pairs]
    comp.differences = (_paired(pairs, resamples, seed) if pairs
                        else _unpaired(baseline.finished, group.finished))
    return comp


def _by_seed(group: Group) -> dict[Any, Job]:
    jobs: dict[Any, Job] = {}
    for j in group.finished:
        jobs.setdefault(j.seed, j)
    return jobs


def _pair(a: Job, b: Job) -> tuple[str | None, tuple[TestOutcomes, TestOutcomes] | tuple]:
    """(None, outcomes of both) when the two jobs pair, else (why not, ())."""
    fa, fb = data_fingerprint(a), data_fingerprint(b)
    if fa is None or fb is None:
        return "no data_fingerprint (run.json, metrics.json run)", ()
    if fa != fb:
        return f"data_fingerprint differs ({fa[:12]} vs {fb[:12]}): not the same split", ()
    try:
        outcomes = read_test_outcomes(a), read_test_outcomes(b)
    except ValueError as e:
        return str(e), ()
    if not set(outcomes[0].correct) & set(outcomes[1].correct):
        return "no test question in common", ()
    return None, outcomes


def _outcome(o: TestOutcomes, metric: str) -> dict[str, bool] | None:
    """Per test question, the event a metric counts: right (accuracies), abstained, hallucinated; None where the
    job dir does not say."""
    if metric in ACCURACIES:
        return o.correct
    if o.abstained is None:
        return None
    return o.abstained if metric == "test_abstention_rate" else hallucinated(o.correct, o.abstained)


def _strata(pairs: list, metric: str, category: str | None = None) -> list[list[Pair]] | None:
    """Per paired seed, (baseline's event, group's event) on the common test questions (of one base category);
    None where a job dir does not say."""
    strata = []
    for _, _, _, a, b in pairs:
        x, y = _outcome(a, metric), _outcome(b, metric)
        if x is None or y is None:
            return None
        ids = sorted(set(x) & set(y))
        if category is not None:
            ids = [q for q in ids if a.base_category.get(q) == category == b.base_category.get(q)]
        strata.append([(x[q], y[q]) for q in ids])
    return strata


def _paired(pairs: list, resamples: int, seed: int) -> list[Difference]:
    out, per_seed = [], list(ACQUIRED)
    for metric, category in [*ACCURACIES.items(), *((m, None) for m in RATES)]:
        strata = _strata(pairs, metric, category)
        if strata is None:  # rates of job dirs without their answers
            per_seed.append(metric)
            continue
        if not any(strata):
            continue
        kept = [(s, st) for (s, *_), st in zip(pairs, strata) if st]
        r = paired_accuracy([st for _, st in kept], resamples=resamples, seed=seed)
        out.append(Difference(metric, r.diff, r.low, r.high, PAIRED_BOOTSTRAP, len(kept), n_questions=r.n,
                              p_value=r.p_value, p_per_seed={s: p for (s, _), p in zip(kept, r.p_per_stratum)},
                              detectable=r.detectable, discordant=(r.b, r.c)))
    for metric in per_seed:
        diffs = [(y - x) for _, a, b, *_ in pairs
                 if (x := _value(a, metric)) is not None and (y := _value(b, metric)) is not None]
        if diffs:
            out.append(Difference(metric, *mean_ci(diffs), PAIRED_T, len(diffs)))
    return out


def _unpaired(baseline: Sequence[Job], group: Sequence[Job]) -> list[Difference]:
    out = []
    for metric in METRICS:
        a = [v for j in baseline if (v := _value(j, metric)) is not None]
        b = [v for j in group if (v := _value(j, metric)) is not None]
        if a and b:
            diff, low, high = welch_difference(a, b)
            if metric in SHARES and not math.isnan(low):  # a difference of shares lies in [-1, 1]
                low, high = max(low, -1.0), min(high, 1.0)
            out.append(Difference(metric, diff, low, high, UNPAIRED, len(b), n_baseline=len(a)))
    return out


def _value(job: Job, metric: str) -> float | None:
    """A job's number for `metric`, from metrics.json (knowledge acquired: the final stage's)."""
    m = job.metrics or {}
    if metric in ACQUIRED:
        series = m.get(metric)
        value = series[-1] if isinstance(series, list) and series else None
    elif metric in ("test_accuracy", "retention", *RATES):
        value = m.get(metric)
    else:
        by_category = m.get("test_accuracy_by_base_category")
        value = by_category.get(ACCURACIES[metric]) if isinstance(by_category, dict) else None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
