"""Weights & Biases extras on top of Lightning's WandbLogger: per-stage tables and images, final metrics in the run
summary, and the run's group. Every function takes the trainer's loggers and plain dicts, and does nothing for
loggers that are not W&B (CSV, none), so callers need no `if wandb` branches.

Importing this module registers the `${gl.wandb_group:}` resolver used by conf/logger/wandb.yaml, and
`${gl.short:<text>,<max bytes>}`, which conf/train.yaml's `hydra.sweep.subdir` uses to keep job dir names under the
file system's limit of 255 bytes.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from gradual_lightning.categories import CATEGORIES

MAX_GROUP_LEN = 128  # as W&B project names; longer group names are cut, and end in a hash to stay unique
_HASH_LEN = 8
EXAMPLE_COLUMNS = ("id", "question", "answers", "greedy", "p_greedy", "base", "before", "after", "trained")
_PER_STAGE_SKIP = ("transitions", "stages")  # logged as tables per stage, not as summary numbers


# ---- names ---------------------------------------------------------------------------------------------------
def shorten(name: str, max_bytes: int) -> str:
    """`name` if its UTF-8 form fits in `max_bytes`, else a prefix plus `~` and a hash of the whole name, `max_bytes`
    long at most: distinct names stay distinct (W&B groups, job dir names)."""
    max_bytes = int(max_bytes)
    if max_bytes <= _HASH_LEN + 1:
        raise ValueError(f"shorten: max_bytes={max_bytes} leaves no room for the prefix and the hash")
    data = name.encode("utf-8")
    if len(data) <= max_bytes:
        return name
    prefix = data[:max_bytes - _HASH_LEN - 1].decode("utf-8", errors="ignore")  # never half a character
    return f"{prefix}~{hashlib.sha1(data).hexdigest()[:_HASH_LEN]}"


def group_name(multirun: bool, sweep_dir: str, override_dirname: str) -> str | None:
    """`<sweep>/<overrides without seed>` in a multirun (the seeds of one setting share a group; the sweep is the
    last two parts of its dir, e.g. 2025-01-31/12-00-00); a single run: its overrides without seed, or no group."""
    if multirun:
        name = f"{'/'.join(Path(sweep_dir).parts[-2:])}/{override_dirname or 'defaults'}"
    elif override_dirname:
        name = override_dirname
    else:
        return None
    return shorten(name, MAX_GROUP_LEN)


def _wandb_group_resolver() -> str | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    return group_name(hc.mode == RunMode.MULTIRUN, str(hc.sweep.dir), hc.job.override_dirname)


OmegaConf.register_new_resolver("gl.wandb_group", _wandb_group_resolver, replace=True)
OmegaConf.register_new_resolver("gl.short", shorten, replace=True)


# ---- flattening ----------------------------------------------------------------------------------------------
def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def stage_scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """A stage record's numbers for `log_metrics`: top-level numbers plus `pool_counts/<category>`."""
    out = {k: v for k, v in record.items() if _is_number(v)}
    out.update({f"pool_counts/{c}": n for c, n in record.get("pool_counts", {}).items()})
    return out


def summary_values(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """metrics.json flattened for a run summary: lists are per stage (`knowledge_acquired/stage2`, plus `/final`),
    dicts by key (`pool_counts/stage1/HighlyKnown`); None values and the per-stage tables are left out."""
    out: dict[str, Any] = {}

    def put(key: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                put(f"{key}/{k}", v)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                put(f"{key}/stage{i}", v)
            if value and not isinstance(value[-1], Mapping | list):
                put(f"{key}/final", value[-1])
        elif value is not None:
            out[key] = value

    for key, value in metrics.items():
        if key not in _PER_STAGE_SKIP:
            put(key, value)
    return out


def probe_examples(rows: Sequence[Mapping[str, Any]], base: Mapping[str, str], before: Mapping[str, str],
                   trained_ids: Iterable[str], limit: int = 20) -> list[list[Any]]:
    """A few rows of a stage's probe (EXAMPLE_COLUMNS): questions whose category changed first, then the rest."""
    trained = set(trained_ids)
    ordered = sorted(rows, key=lambda r: (r["category"] == before.get(r["id"]), r["id"]))
    return [[r["id"], r["question"], " | ".join(r["answers"]), " | ".join(map(str, r["greedy"])),
             r["p_greedy"], base.get(r["id"]), before.get(r["id"]), r["category"], r["id"] in trained]
            for r in ordered[:limit]]


# ---- W&B -----------------------------------------------------------------------------------------------------
def wandb_runs(loggers: Iterable[Any]) -> list[Any]:
    """The W&B runs behind the W&B loggers among `loggers` (started on first use); empty without one."""
    try:
        from pytorch_lightning.loggers import WandbLogger
    except ImportError:  # pragma: no cover - wandb not installed: nothing to log to
        return []
    return [lg.experiment for lg in loggers if isinstance(lg, WandbLogger)]


def _image(fig):
    import wandb
    from PIL import Image

    from gradual_lightning.plots import png_bytes

    return wandb.Image(Image.open(io.BytesIO(png_bytes(fig))))


def log_stage(loggers: Iterable[Any], stage: int, transitions: Sequence[Sequence[int]],
              examples: Sequence[Sequence[Any]]) -> None:
    """W&B only: stage `stage`'s transition matrix (base -> now) as a table and a heatmap, and probe examples."""
    runs = wandb_runs(loggers)
    if not runs:
        return
    import wandb

    from gradual_lightning.plots import transitions_figure

    table = [[c, *row] for c, row in zip(CATEGORIES, transitions)]
    heatmap = _image(transitions_figure({f"base -> after stage {stage}": transitions}))
    for run in runs:
        run.log({f"transitions/stage{stage}": wandb.Table(columns=["base \\ now", *CATEGORIES], data=table),
                 f"transitions_heatmap/stage{stage}": heatmap,
                 f"probe_examples/stage{stage}": wandb.Table(columns=list(EXAMPLE_COLUMNS),
                                                             data=[list(r) for r in examples])})


def log_summary(loggers: Iterable[Any], metrics: Mapping[str, Any]) -> None:
    """W&B only: the final metrics (metrics.json, flattened) in the run summary."""
    for run in wandb_runs(loggers):
        run.summary.update(summary_values(metrics))
