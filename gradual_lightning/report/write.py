"""`write_report`: read a sweep's job dirs, group them, and write the report files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gradual_lightning.io import atomic_write_text
from gradual_lightning.report.jobs import Job, find_jobs
from gradual_lightning.report.render import csv_text, markdown_text, write_plots
from gradual_lightning.report.stats import Group, group_jobs


@dataclass
class Report:
    sweep_dir: Path
    jobs: list[Job]
    groups: list[Group]
    files: list[Path]  # report.md first

    @property
    def failed(self) -> list[Job]:
        """Jobs without results: failed, unfinished or unreadable."""
        return [j for j in self.jobs if not j.ok]


def write_report(sweep_dir: str | Path, out_dir: str | Path | None = None, plots: bool = True) -> Report:
    """Read the sweep's jobs and write report.md, report.csv and (with `plots`) the PNGs, into the sweep dir by
    default."""
    sweep_dir = Path(sweep_dir)
    jobs = find_jobs(sweep_dir)
    if not jobs:
        raise FileNotFoundError(f"no Hydra job dirs (.hydra/overrides.yaml) under {str(sweep_dir)!r}")
    out = Path(out_dir) if out_dir is not None else sweep_dir
    groups = group_jobs(jobs)
    plots = write_plots(out, groups) if plots else []
    files = [atomic_write_text(out / "report.md", markdown_text(sweep_dir, jobs, groups, plots)),
             atomic_write_text(out / "report.csv", csv_text(groups)), *(out / p for p in plots)]
    return Report(sweep_dir, jobs, groups, files)
