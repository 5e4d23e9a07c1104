"""The job side of a sweep: what a job leaves in its dir (`failed.json` when it raised) and how the report reads
a job dir back (`.hydra/*.yaml`, `metrics.json`, `failed.json`) into a `Job`."""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gradual_lightning.io import write_json

METRICS_FILE, FAILED_FILE = "metrics.json", "failed.json"
# What the report reads of metrics.json: numbers of the final model, and lists with one number per stage.
SCALARS = ("test_accuracy", "retention", "incremental_gain")
PER_STAGE = ("knowledge_acquired", "knowledge_acquired_untrained")


def record_failure(job_dir: str | Path, exc: BaseException) -> Path:
    """Write `failed.json` (error, type, traceback) in a job dir, atomically."""
    return write_json(Path(job_dir) / FAILED_FILE, {
        "error": f"{type(exc).__name__}: {exc}",
        "type": type(exc).__qualname__,
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })


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
        return group_name(self.setting)


def setting_of(overrides: Sequence[str], exclude_keys: Sequence[str] = ("seed",)) -> tuple[str, ...]:
    """What a job's group is made of: its overrides without the excluded keys (seed always), sorted."""
    exclude = {"seed", *exclude_keys}
    return tuple(sorted(o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in exclude))


def group_of(overrides: Sequence[str], exclude_keys: Sequence[str] = ("seed",)) -> str:
    """The group a job belongs to, as Hydra's override_dirname writes it (job dirs, W&B groups)."""
    return group_name(setting_of(overrides, exclude_keys))


def group_name(setting: Sequence[str]) -> str:
    """A setting as one string; the empty setting (no overrides but the seed) is "(defaults)"."""
    return ",".join(setting) or "(defaults)"


def _load_yaml(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def _load_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(str(e)) from e


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


def find_jobs(sweep_dir: str | Path) -> list[Job]:
    """Every job dir under `sweep_dir` (any depth: a dir holding `.hydra/overrides.yaml`), in job order."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep dir {str(sweep_dir)!r} does not exist")
    dirs = sorted({p.parent.parent for p in sweep_dir.rglob("overrides.yaml") if p.parent.name == ".hydra"})
    jobs = [read_job(d) for d in dirs]
    return sorted(jobs, key=lambda j: (j.num is None, j.num if j.num is not None else 0, str(j.dir)))
