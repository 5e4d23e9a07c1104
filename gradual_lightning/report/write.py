"""`write_report`: read a sweep's job dirs, group them, and write the report files."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from gradual_lightning.io import atomic_write_text
from gradual_lightning.report.compare import Comparison, compare_groups
from gradual_lightning.report.jobs import Job, find_jobs
from gradual_lightning.report.render import csv_text, markdown_text, write_plots
from gradual_lightning.report.stats import Group, group_jobs


@dataclass
class Report:
    sweep_dir: Path
    jobs: list[Job]
    groups: list[Group]
    files: list[Path]  # report.md first
    comparisons: list[Comparison] = field(default_factory=list)  # every other group against the baseline

    @property
    def failed(self) -> list[Job]:
        """Jobs without results: failed, unfinished or unreadable."""
        return [j for j in self.jobs if not j.ok]


def write_report(sweep_dir: str | Path, out_dir: str | Path | None = None, plots: bool = True,
                 baseline: str | None = None) -> Report:
    """Read the sweep's jobs and write report.md, report.csv and (with `plots`) the PNGs, into the sweep dir by
    default. `baseline` picks the group the others are compared with (`compare.pick_baseline`: a group's name or
    label, or overrides it holds, e.g. "schedule=one_stage"; default the first group); one that matches no group,
    or several, is a BaselineError (a ValueError), raised before anything is written."""
    sweep_dir = Path(sweep_dir)
    jobs = find_jobs(sweep_dir)
    if not jobs:
        raise FileNotFoundError(f"no Hydra job dirs (.hydra/overrides.yaml) under {str(sweep_dir)!r}")
    out = Path(out_dir) if out_dir is not None else sweep_dir
    groups = group_jobs(jobs)
    comparisons = compare_groups(groups, baseline)
    plots = write_plots(out, groups, comparisons) if plots else []
    files = [atomic_write_text(out / "report.md", markdown_text(sweep_dir, jobs, groups, plots, comparisons)),
             atomic_write_text(out / "report.csv", csv_text(groups, comparisons)), *(out / p for p in plots)]
    return Report(sweep_dir, jobs, groups, files, comparisons)
