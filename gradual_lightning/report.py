"""Sweep report: one table comparing the settings of a Hydra multirun, mean and 95% CI across seeds.

    python -m gradual_lightning.report multirun/<date>/<time>

and automatically at the end of every multirun (`SweepReportCallback`, registered in conf/train.yaml). It reads
each job dir (`.hydra/overrides.yaml`, `metrics.json`, `failed.json`), groups jobs by their overrides without the
seed (and without the other `hydra.job.config.override_dirname.exclude_keys`, as the job dirs and W&B groups do),
and writes into the sweep dir:

- report.md: results per group, knowledge acquired per stage, failed jobs with their errors, the plots;
- report.csv: one row per group, metric and stage: n (seeds with a value), mean, ci_low, ci_high, n_failed;
- knowledge_acquired.png and transitions_final.png (final-stage transition matrix, mean over seeds, per group).

A job that raised leaves `failed.json` (written by train.py in a multirun, so the sweep goes on); a job dir with
neither file did not finish (killed, or still running) and is listed as such.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback

from gradual_lightning.io import atomic_write_text, write_json
from gradual_lightning.training.metrics import mean_ci

log = logging.getLogger(__name__)

METRICS_FILE, FAILED_FILE = "metrics.json", "failed.json"
SCALARS = ("test_accuracy", "retention", "incremental_gain")
BOUNDS = {"test_accuracy": (0.0, 1.0), "retention": (0.0, 1.0)}  # a t interval of a share can leave [0, 1]: clip it
PER_STAGE = ("knowledge_acquired", "knowledge_acquired_untrained")
CSV_COLUMNS = ("group", "metric", "stage", "n", "mean", "ci_low", "ci_high", "n_failed")
PLOTS = ("knowledge_acquired.png", "transitions_final.png")


# ---- the job side: a failed job leaves its error -------------------------------------------------------------
def record_failure(job_dir: str | Path, exc: BaseException) -> Path:
    """Write `failed.json` (error, type, traceback) in a job dir, atomically."""
    return write_json(Path(job_dir) / FAILED_FILE, {
        "error": f"{type(exc).__name__}: {exc}",
        "type": type(exc).__qualname__,
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })


# ---- reading a sweep -----------------------------------------------------------------------------------------
@dataclass
class Job:
    dir: Path
    num: int | None
    overrides: list[str]
    setting: tuple[str, ...]  # overrides without the seed: jobs with the same setting form a group
    seed: Any = None
    metrics: dict | None = None
    error: str | None = None  # set when the job failed or did not finish

    @property
    def ok(self) -> bool:
        return self.metrics is not None and self.error is None

    @property
    def group(self) -> str:
        return _name(self.setting)


def _load_yaml(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def setting_of(overrides: Sequence[str], exclude_keys: Sequence[str] = ("seed",)) -> tuple[str, ...]:
    """What a job's group is made of: its overrides without the excluded keys (seed always), sorted."""
    exclude = {"seed", *exclude_keys}
    return tuple(sorted(o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in exclude))


def group_of(overrides: Sequence[str], exclude_keys: Sequence[str] = ("seed",)) -> str:
    """The group a job belongs to, as Hydra's override_dirname writes it (job dirs, W&B groups)."""
    return _name(setting_of(overrides, exclude_keys))


def _name(setting: Sequence[str]) -> str:
    return ",".join(setting) or "(defaults)"


def read_job(job_dir: str | Path) -> Job:
    job_dir = Path(job_dir)
    overrides = [str(o) for o in _load_yaml(job_dir / ".hydra" / "overrides.yaml") or []]
    hydra_yaml = job_dir / ".hydra" / "hydra.yaml"
    hydra_cfg = (_load_yaml(hydra_yaml) or {}).get("hydra", {}) if hydra_yaml.exists() else {}
    job_cfg = hydra_cfg.get("job", {})
    exclude = job_cfg.get("config", {}).get("override_dirname", {}).get("exclude_keys", ())
    num = job_cfg.get("num")
    config_yaml = job_dir / ".hydra" / "config.yaml"
    seed = (_load_yaml(config_yaml) or {}).get("seed") if config_yaml.exists() else None
    job = Job(job_dir, num if isinstance(num, int) else None, overrides, setting_of(overrides, exclude), seed)
    failed, metrics = job_dir / FAILED_FILE, job_dir / METRICS_FILE
    if failed.exists():
        try:
            job.error = str(_load_json(failed).get("error", "failed (no message)"))
        except ValueError as e:
            job.error = f"failed ({FAILED_FILE} unreadable: {e})"
    elif metrics.exists():
        try:
            job.metrics = _load_json(metrics)
            job.seed = job.metrics.get("run", {}).get("seed", seed)
        except ValueError as e:
            job.error = f"{METRICS_FILE} unreadable: {e}"
    else:
        job.error = f"did not finish (no {METRICS_FILE} or {FAILED_FILE}: killed, or still running)"
    return job


def _load_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(str(e)) from e


def find_jobs(sweep_dir: str | Path) -> list[Job]:
    """Every job dir under `sweep_dir` (any depth: a dir holding `.hydra/overrides.yaml`), in job order."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep dir {str(sweep_dir)!r} does not exist")
    dirs = sorted({p.parent.parent for p in sweep_dir.rglob("overrides.yaml") if p.parent.name == ".hydra"})
    jobs = [read_job(d) for d in dirs]
    return sorted(jobs, key=lambda j: (j.num is None, j.num if j.num is not None else 0, str(j.dir)))


# ---- statistics ----------------------------------------------------------------------------------------------
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
        return _name(self.setting)

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
    """Jobs grouped by setting, in job order; labels leave out the overrides common to all groups."""
    groups: dict[tuple[str, ...], Group] = {}
    for job in jobs:
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


# ---- writing -------------------------------------------------------------------------------------------------
def _num(x: float) -> str:
    return "" if math.isnan(x) else f"{x:.6g}"


def csv_text(groups: Sequence[Group]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for g in groups:
        rows = [(m, "", g.scalar(m)) for m in SCALARS]
        rows += [(m, i, st) for m in PER_STAGE for i, st in enumerate(g.per_stage(m))]
        for metric, stage, st in rows:
            w.writerow([g.name, metric, stage, st.n, _num(st.mean), _num(st.low), _num(st.high), len(g.failed)])
    return buf.getvalue()


def _cell(st: Stat, digits: int) -> str:
    if st.n == 0:
        return "-"
    if math.isnan(st.low):
        return f"{st.mean:.{digits}f}"
    return f"{st.mean:.{digits}f} [{st.low:.{digits}f}, {st.high:.{digits}f}]"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_text(sweep_dir: Path, jobs: Sequence[Job], groups: Sequence[Group], plots: Sequence[str]) -> str:
    n_ok = sum(j.ok for j in jobs)
    common = common_overrides(groups)
    lines = [f"# Sweep report: `{sweep_dir}`", "",
             f"{len(jobs)} jobs: {n_ok} finished, {len(jobs) - n_ok} failed or unfinished. Cells: mean "
             "[95% CI, Student t] across seeds (no interval with one seed; accuracies' intervals clipped to [0, 1]); "
             "knowledge acquired = HighlyKnown questions of the pool after the stage minus before training."
             + (f" Overrides of every job: `{' '.join(common)}`." if common else ""), "",
             "| group | seeds | failed | test accuracy | retention | knowledge acquired (final) | incremental gain "
             "| acquired, untrained (final) |",
             "|---|---|---|---|---|---|---|---|"]
    for g in groups:
        seeds = f" ({', '.join(str(j.seed) for j in g.finished)})" if g.finished else ""
        lines.append(f"| {_md_escape(g.label)} | {len(g.finished)}{seeds} | {len(g.failed)} "
                     f"| {_cell(g.scalar('test_accuracy'), 3)} | {_cell(g.scalar('retention'), 3)} "
                     f"| {_cell(g.final('knowledge_acquired'), 1)} | {_cell(g.scalar('incremental_gain'), 2)} "
                     f"| {_cell(g.final('knowledge_acquired_untrained'), 1)} |")
    for metric, title in (("knowledge_acquired", "Knowledge acquired per stage"),
                          ("knowledge_acquired_untrained", "Knowledge acquired per stage, never-trained questions")):
        stats = {g.label: g.per_stage(metric) for g in groups}
        width = max(map(len, stats.values()), default=0)
        if width:
            lines += ["", f"## {title}", "", "| group | " + " | ".join(f"stage {i}" for i in range(width)) + " |",
                      "|---" * (width + 1) + "|"]
            lines += ["| " + " | ".join([_md_escape(label), *(_cell(s, 1) for s in st), *["-"] * (width - len(st))])
                      + " |" for label, st in stats.items()]
    failed = [j for j in jobs if not j.ok]
    if failed:
        lines += ["", "## Failed jobs", "", "| job | overrides | error |", "|---|---|---|"]
        lines += [f"| `{j.dir.relative_to(sweep_dir)}` | {_md_escape(' '.join(j.overrides))} "
                  f"| {_md_escape(j.error or '')} |" for j in failed]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def write_plots(out_dir: Path, groups: Sequence[Group]) -> list[str]:
    from gradual_lightning.plots import knowledge_acquired_figure, save_png, transitions_figure

    done = [g for g in groups if g.finished]
    if not done:
        return []
    series = {g.label: [(s.mean, s.low, s.high) for s in g.per_stage("knowledge_acquired")] for g in done}
    save_png(knowledge_acquired_figure(series), out_dir / PLOTS[0])
    written = [PLOTS[0]]
    mats = {f"{g.label}\n(final stage, mean of {len(g.finished)})": m for g in done
            if (m := g.mean_final_transitions()) is not None}
    if mats:
        save_png(transitions_figure(mats), out_dir / PLOTS[1])
        written.append(PLOTS[1])
    return written


@dataclass
class Report:
    sweep_dir: Path
    jobs: list[Job]
    groups: list[Group]
    files: list[Path]  # report.md first

    @property
    def failed(self) -> list[Job]:
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


# ---- Hydra callback and CLI ----------------------------------------------------------------------------------
class SweepReportCallback(Callback):
    """Writes the sweep report when a multirun ends. With `fail_on_job_error`, a sweep in which a job failed exits
    with status 1 after the report is written (so scripts and CI see it); the other jobs have run regardless."""

    def __init__(self, fail_on_job_error: bool = True) -> None:
        self.fail_on_job_error = fail_on_job_error

    def on_multirun_end(self, config, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            report = write_report(sweep_dir)
        except Exception:  # the jobs' results are on disk: say how to retry instead of hiding it in a warning
            log.exception("sweep report failed; retry with: python -m gradual_lightning.report %s", sweep_dir)
            return
        log.info("sweep report: %s", report.files[0])
        if report.failed:
            log.error("%d of %d jobs failed (see %s):\n%s", len(report.failed), len(report.jobs), report.files[0],
                      "\n".join(f"  {j.dir}: {j.error}" for j in report.failed))
            if self.fail_on_job_error:
                sys.exit(1)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gradual_lightning.report", description=__doc__.split("\n\n")[0])
    p.add_argument("sweep_dir", help="a Hydra multirun dir, e.g. multirun/2025-01-31/12-00-00")
    p.add_argument("--out", default=None, help="where to write the report (default: the sweep dir)")
    p.add_argument("--no-plots", action="store_true", help="tables only (report.md, report.csv)")
    args = p.parse_args(argv)
    try:
        report = write_report(args.sweep_dir, args.out, plots=not args.no_plots)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report.files[0].read_text(encoding="utf-8"))
    print("wrote " + ", ".join(str(f) for f in report.files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
