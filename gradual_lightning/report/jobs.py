"""The job side of a sweep: what a job leaves in its dir (`failed.json` when it raised, or when it was terminated:
then with `"terminated": true`) and how the report reads a job dir back (`.hydra/*.yaml`, `metrics.json`,
`failed.json`) into a `Job`; for paired comparisons, on demand, the per-question test outcomes (`probe/`: correctness,
and abstentions where the job dir keeps its answers) and the data fingerprint (`metrics.json` run, else `run.json`)."""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml

from gradual_lightning.categories import CATEGORIES
from gradual_lightning.io import write_json
from gradual_lightning.probing.matching import ABSTENTION_TEXT
from gradual_lightning.training.metrics import abstained

METRICS_FILE, FAILED_FILE, RUN_FILE = "metrics.json", "failed.json", "run.json"
TEST_CORRECT_FILE, BASE_TEST_FILE = "probe/test_correct.json", "probe/stage0_test.jsonl"
TEST_ANSWERS_FILE = "probe/test_answers.json"  # written since the sweep report pairs abstentions per question
# What the report reads of metrics.json: numbers of the final model, and lists with one number per stage.
SCALARS = ("test_accuracy", "retention", "incremental_gain")
# Optional numbers of the final model (metrics.json written before they existed lacks them): shares of the test set.
RATES = ("test_hallucination_rate", "test_abstention_rate")
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
    error: str | None = None  # set when the job failed or did not finish, or why its dir is unreadable
    unreadable: bool = False  # a file of its dir could not be read: the job belongs to no group
    terminated: bool = False  # stopped by a signal (SIGTERM): its failed.json says where (gradual_lightning.lifecycle)

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


class _Unreadable(ValueError):
    """A file of a job dir that cannot be parsed, or has not the shape the report reads."""

    def __init__(self, file: str, why: str) -> None:
        super().__init__(f"{file} unreadable: {why}")


def _load(job_dir: Path, file: str, parse: Callable[[IO[str]], Any]) -> Any:
    try:
        with open(job_dir / file, encoding="utf-8") as f:
            return parse(f)
    except (OSError, ValueError, yaml.YAMLError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise _Unreadable(file, _why(e)) from e


def _why(e: Exception) -> str:
    """An error's message on one line; YAML's without the absolute path it quotes."""
    if isinstance(e, yaml.MarkedYAMLError) and e.problem:
        mark = e.problem_mark
        return e.problem + (f" (line {mark.line + 1}, column {mark.column + 1})" if mark else "")
    return str(e)


def _kind(x: Any) -> str:
    return type(x).__name__  # the Python type a JSON or YAML value was parsed as: dict, list, str, int, ...


def _get(tree: Any, file: str, *keys: str) -> Any:
    """`tree[keys[0]][keys[1]]...` of a parsed file; None where a key (or the file) is missing."""
    for i, key in enumerate(keys):
        if tree is None:
            return None
        if not isinstance(tree, dict):
            raise _Unreadable(file, f"{'.'.join(keys[:i]) or 'the file'}: expected a mapping, got {_kind(tree)}")
        tree = tree.get(key)
    return tree


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _is_square(t: Any, n: int) -> bool:
    return isinstance(t, list) and len(t) == n and all(
        isinstance(row, list) and len(row) == n and all(map(_is_number, row)) for row in t)


def _metrics_problem(m: Any) -> str | None:
    """Why a parsed metrics.json cannot be reported, or None: the keys the report reads, with the types it reads
    them as (one wrong value would otherwise stop the report of the whole sweep)."""
    if not isinstance(m, dict):
        return f"expected a JSON object, got {_kind(m)}"
    missing = [k for k in (*SCALARS, *PER_STAGE) if k not in m]
    if missing:
        return f"no {', '.join(map(repr, missing))}"
    for k in (*SCALARS, *RATES):
        if m.get(k) is not None and not _is_number(m[k]):
            return f"{k!r} is not a number"
    for k in PER_STAGE:
        if not isinstance(m[k], list) or not all(v is None or _is_number(v) for v in m[k]):
            return f"{k!r} is not a list of numbers"
    transitions, n = m.get("transitions", []), len(CATEGORIES)
    if not isinstance(transitions, list) or not all(_is_square(t, n) for t in transitions):
        return f"'transitions' is not a list of {n}x{n} matrices"  # groups average them cell by cell
    if not isinstance(m.get("run", {}), dict):
        return "'run' is not a JSON object"
    return None


def read_job(job_dir: str | Path) -> Job:
    """A job dir as a Job. A file of it that the report reads but cannot parse, or that has the wrong shape, makes
    the job `unreadable` (the reason in `error`) rather than raising: one broken dir must not stop a sweep's report."""
    job = Job(Path(job_dir), None, [], ())
    try:
        _read_hydra_files(job)
        _read_outcome(job)
    except _Unreadable as e:
        job.metrics, job.error, job.unreadable = None, str(e), True
    return job


def _read_hydra_files(job: Job) -> None:
    """Number, overrides, setting and seed, from the job's `.hydra/` (hydra.yaml and config.yaml are optional)."""
    hydra_yaml, config_yaml, overrides_yaml = ".hydra/hydra.yaml", ".hydra/config.yaml", ".hydra/overrides.yaml"
    hydra = _load(job.dir, hydra_yaml, yaml.safe_load) if (job.dir / hydra_yaml).exists() else None
    num = _get(hydra, hydra_yaml, "hydra", "job", "num")
    job.num = num if isinstance(num, int) else None
    exclude = _get(hydra, hydra_yaml, "hydra", "job", "config", "override_dirname", "exclude_keys") or []
    if not isinstance(exclude, list):
        raise _Unreadable(hydra_yaml, "exclude_keys is not a list")
    overrides = _load(job.dir, overrides_yaml, yaml.safe_load) or []
    if not isinstance(overrides, list):
        raise _Unreadable(overrides_yaml, f"expected a list of overrides, got {_kind(overrides)}")
    job.overrides = [str(o) for o in overrides]
    job.setting = setting_of(job.overrides, [str(k) for k in exclude])
    config = _load(job.dir, config_yaml, yaml.safe_load) if (job.dir / config_yaml).exists() else None
    job.seed = _get(config, config_yaml, "seed")


def _read_outcome(job: Job) -> None:
    """failed.json (the job raised), else metrics.json (it finished), else it did not finish."""
    if (job.dir / FAILED_FILE).exists():
        try:  # the job failed either way: an unreadable failed.json only loses the message
            failure = _load(job.dir, FAILED_FILE, json.load)
            if not isinstance(failure, dict):
                raise _Unreadable(FAILED_FILE, f"expected a JSON object, got {_kind(failure)}")
            job.error = str(failure.get("error", "failed (no message)"))
            job.terminated = failure.get("terminated") is True
        except _Unreadable as e:
            job.error = f"failed ({e})"
    elif (job.dir / METRICS_FILE).exists():
        metrics = _load(job.dir, METRICS_FILE, json.load)
        problem = _metrics_problem(metrics)
        if problem:
            raise _Unreadable(METRICS_FILE, problem)
        job.metrics = metrics
        job.seed = metrics.get("run", {}).get("seed", job.seed)
    else:
        job.error = f"did not finish (no {METRICS_FILE} or {FAILED_FILE}: killed, or still running)"


def find_jobs(sweep_dir: str | Path) -> list[Job]:
    """Every job dir under `sweep_dir` (any depth: a dir holding `.hydra/overrides.yaml`), in job order."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep dir {str(sweep_dir)!r} does not exist")
    dirs = sorted({p.parent.parent for p in sweep_dir.rglob("overrides.yaml") if p.parent.name == ".hydra"})
    jobs = [read_job(d) for d in dirs]
    return sorted(jobs, key=lambda j: (j.num is None, j.num if j.num is not None else 0, str(j.dir)))


@dataclass
class TestOutcomes:
    """What a finished job says per test question: is the final model right, the base model's category, and (where
    the job dir keeps its answers) did the final model abstain."""

    correct: dict[str, bool]
    base_category: dict[str, str]
    abstained: dict[str, bool] | None = None


def _per_stage(job: Job, file: str, kind: type, what: str) -> list[dict]:
    stages = _load(job.dir, file, json.load)
    if not isinstance(stages, list) or not stages or not all(
            isinstance(s, dict) and all(isinstance(v, kind) for v in s.values()) for s in stages):
        raise _Unreadable(file, f"expected a non-empty list of {{question id: {what}}}")
    return stages


def read_test_outcomes(job: Job) -> TestOutcomes:
    """The final entry of `probe/test_correct.json` (one {id: bool} per stage, 0 = base), the categories of
    `probe/stage0_test.jsonl` and, where the dir has `probe/test_answers.json`, the abstentions among the final
    answers (the job's `abstention_text`). Raises ValueError (the file and what is wrong with it) when they cannot be
    read."""
    stages = _per_stage(job, TEST_CORRECT_FILE, bool, "true/false")
    rows = _load(job.dir, BASE_TEST_FILE, lambda f: [json.loads(line) for line in f if line.strip()])
    if not all(isinstance(r, dict) and isinstance(r.get("id"), str) and r.get("category") in CATEGORIES for r in rows):
        raise _Unreadable(BASE_TEST_FILE, f"expected one {{id, category}} per line, category one of {list(CATEGORIES)}")
    outcomes = TestOutcomes(dict(stages[-1]), {r["id"]: r["category"] for r in rows})
    if (job.dir / TEST_ANSWERS_FILE).exists():
        answers = _per_stage(job, TEST_ANSWERS_FILE, str, "answer")[-1]
        found = abstained(answers, outcomes.correct, str((job.metrics or {}).get("abstention_text") or ABSTENTION_TEXT))
        outcomes.abstained = found if found.keys() == outcomes.correct.keys() else None  # answers for every question
    return outcomes


def data_fingerprint(job: Job) -> str | None:
    """The fingerprint of the job's data split: metrics.json's `run`, else run.json's; None where neither says."""
    fingerprint = (job.metrics or {}).get("run", {}).get("data_fingerprint")
    if fingerprint is None and (job.dir / RUN_FILE).exists():
        try:
            fingerprint = _get(_load(job.dir, RUN_FILE, json.load), RUN_FILE, "data_fingerprint")
        except _Unreadable:
            return None
    return None if fingerprint is None else str(fingerprint)
