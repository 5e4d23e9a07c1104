"""Jobs grouped by setting, and each group's statistics across its seeds (mean and 95% Student t interval)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from gradual_lightning.report.jobs import RATES, Job, group_name
from gradual_lightning.training.metrics import mean_ci

# a t interval of a share can leave [0, 1]: clip it
BOUNDS = {m: (0.0, 1.0) for m in ("test_accuracy", "retention", *RATES)}


@dataclass
class Stat:
    n: int
    mean: float = math.nan
    low: float = math.nan
    high: float = math.nan

    @classmethod
    def of(cls, values: Sequence[float | None], bounds: tuple[float, float] | None = None) -> Stat:
        """Mean and 95% CI of the values that are not None; with `bounds`, the interval is clipped to them."""
        vals = [float(v) for v in values if v is not None]
        if not vals:
            return cls(0)
        mean, low, high = mean_ci(vals)
        if bounds is not None and not math.isnan(low):
            low, high = max(low, bounds[0]), min(high, bounds[1])
        return cls(len(vals), mean, low, high)


@dataclass
class Group:
    setting: tuple[str, ...]
    jobs: list[Job] = field(default_factory=list)
    label: str = ""  # for tables and legends: the setting without the overrides every group shares

    @property
    def name(self) -> str:
        return group_name(self.setting)

    @property
    def finished(self) -> list[Job]:
        return [j for j in self.jobs if j.ok]

    @property
    def failed(self) -> list[Job]:
        return [j for j in self.jobs if not j.ok]

    def scalar(self, metric: str) -> Stat:
        return Stat.of([j.metrics.get(metric) for j in self.finished], BOUNDS.get(metric))

    def per_stage(self, metric: str) -> list[Stat]:
        """Stat per stage over the seeds that reached it (schedules that repeat may stop at different stages)."""
        series = [j.metrics.get(metric) or [] for j in self.finished]
        return [Stat.of([s[i] for s in series if i < len(s)]) for i in range(max(map(len, series), default=0))]

    def final(self, metric: str) -> Stat:
        return Stat.of([(j.metrics.get(metric) or [None])[-1] for j in self.finished])

    def mean_final_transitions(self) -> list[list[float]] | None:
        mats = [j.metrics["transitions"][-1] for j in self.finished if j.metrics.get("transitions")]
        if not mats:
            return None
        return [[sum(m[r][c] for m in mats) / len(mats) for c in range(len(mats[0][r]))] for r in range(len(mats[0]))]


def group_jobs(jobs: Sequence[Job]) -> list[Group]:
    """Jobs grouped by setting, in job order; labels leave out the overrides common to all groups. Unreadable jobs
    belong to no group (their setting, or their numbers, are not known)."""
    groups: dict[tuple[str, ...], Group] = {}
    for job in (j for j in jobs if not j.unreadable):
        groups.setdefault(job.setting, Group(job.setting)).jobs.append(job)
    common = set(common_overrides(list(groups.values())))
    for g in groups.values():
        g.label = ",".join(o for o in g.setting if o not in common) or g.name
    return list(groups.values())


def common_overrides(groups: Sequence[Group]) -> list[str]:
    """The overrides every group shares (none with a single group: its label is its whole setting)."""
    if len(groups) < 2:
        return []
    return sorted(set.intersection(*(set(g.setting) for g in groups)))


@dataclass
class Sharing:
    """What the stage cache saved a sweep: of the finished jobs' stages, those loaded from another job's training
    (`reused_from` in metrics.json's stage records) and the wall time they took where they were trained."""

    stages: int
    reused: int
    saved_s: float


def compute_sharing(jobs: Sequence[Job]) -> Sharing:
    stages = [st for j in jobs if j.ok for st in (j.metrics.get("stages") or []) if isinstance(st, dict)]
    reused = [st["reused_from"] for st in stages if isinstance(st.get("reused_from"), dict)]
    seconds = [r.get("wall_s") for r in reused]
    return Sharing(len(stages), len(reused),
                   sum(float(x) for x in seconds if isinstance(x, int | float) and not isinstance(x, bool)))
