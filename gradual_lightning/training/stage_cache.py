"""Stage cache: a stage is trained once, and every job that would train it the same way reuses it.

Schedules share their first stages (one_stage, two_stage, two_stage_control and n_stage all start with the same
stage 1), so a sweep over schedules trains the same stage 1 once per schedule and seed. Here a stage's result is
stored under a key of everything that decides it, and a job with the same key loads it instead of training:

- the run's settings: `checkpoint.run_identity` without the schedule (probe, reprobe, eval, mastery, data, model,
  finetune, seed, max_length, batch_size, the data and model fingerprints) and the training settings
  (`TRAINING_KEYS`; the Trainer without its display keys), with this format's version;
- the device type the stage trains on, the stage's index, its own fields (`Stage.to_dict`: not the schedule's
  name) and the partition it trains on (selection, replay pool, replay count);
- the previous stage's key: a chain, so stage k's key holds stages 1..k-1 (a later stage never changes it).

The entry (`StageResult`) holds what the recipe makes of a stage: the trainable weights after it, the pool's
re-probe rows, test correctness, the questions it trained on, the dev record, the RNG states after it (the next
stage trains as after a trained one) and, where the next stage carries it (`reset_optimizer: false`), the
optimizer state; plus who trained it and how long it took, for the `reused_from` record.

Parallel jobs: the first to reach a key holds a lock (`fcntl.flock` on `<key>.lock`) while it trains; the others
wait, then load. A cache that fails (a directory that cannot be written, a damaged entry, no locks on the file
system) costs a warning and the stage is trained as without a cache. Training code is not part of the key: after
changing it, clear the cache directory or run with `stage_cache=false`.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from gradual_lightning import __version__
from gradual_lightning.io import atomic_write_bytes, user_cache_dir

CACHE_ENV = "GL_STAGE_CACHE"
FORMAT = 2
TRAINING_KEYS = ("train_module", "trainer", "datamodule", "callbacks")
# Trainer settings that change what is shown or written, never the weights
DISPLAY_TRAINER_KEYS = frozenset({"enable_progress_bar", "enable_model_summary", "log_every_n_steps",
                                  "enable_checkpointing", "default_root_dir", "logger"})

log = logging.getLogger(__name__)


def cache_dir(root: str | Path | None = None) -> Path:
    """`$GL_STAGE_CACHE` when set, else `<root>/stages` (`paths.cache_dir`), else the user cache's `stages`."""
    return user_cache_dir(CACHE_ENV, "stages", root=root)


def run_context(identity: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """What every stage key of a run holds: the run identity without the schedule (each stage brings its own
    fields), and the training settings of the resolved config."""
    context = {k: v for k, v in identity.items() if k != "schedule"}
    for k in TRAINING_KEYS:
        context[k] = config.get(k)
    trainer = context.get("trainer")
    if isinstance(trainer, Mapping):
        context["trainer"] = {k: v for k, v in trainer.items() if k not in DISPLAY_TRAINER_KEYS}
    return {"format": FORMAT, "version": __version__, **context}


def stage_key(context: Mapping[str, Any], stage: Mapping[str, Any], partition: Mapping[str, Any],
              previous: str | None, device: str = "cpu") -> str:
    """The key of one stage: the run context, the stage's fields and partition (`Partition` as a dict: its `stage`
    is the index), the previous stage's key (None for the first) and the device type."""
    payload = {"context": context, "stage": stage, "partition": partition, "previous": previous, "device": device}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]


# ---- RNG states ----------------------------------------------------------------------------------------------
def rng_states() -> dict[str, Any]:
    """Python, NumPy, torch (and CUDA) generator states as plain data (a torch file loads them weights_only)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    states = {"python": random.getstate(), "numpy": [name, keys.tolist(), pos, has_gauss, gauss],
              "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: Mapping[str, Any]) -> None:
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    name, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


# ---- entries -------------------------------------------------------------------------------------------------
@dataclass
class StageResult:
    """What one stage leaves: enough for a reused stage to be recorded exactly as a trained one."""

    trainable_state: dict[str, torch.Tensor]
    pool_rows: list[dict[str, Any]]  # the pool re-probed after the stage (ProbeResult.to_dict rows)
    test_correct: dict[str, bool]
    test_answers: dict[str, str]  # the greedy test answers the correctness came from (abstention metrics)
    trained_ids: list[str]
    dev: dict[str, Any] | None
    rng: dict[str, Any] = field(default_factory=dict)
    optimizer_state: dict | None = None  # only where the next stage carries it
    run_dir: str = ""  # who trained it
    wall_s: float = 0.0  # how long the stage took there (fit, re-probe, test accuracy)

    def reused_record(self, key: str) -> dict[str, Any]:
        """metrics.json's `reused_from` of a stage loaded from this entry."""
        return {"key": key, "run_dir": self.run_dir, "wall_s": round(self.wall_s, 3)}


class StageCache:
    def __init__(self, directory: str | Path, context: Mapping[str, Any]) -> None:
        self.directory = Path(directory)
        self.context = dict(context)

    def key(self, stage: Mapping[str, Any], partition: Mapping[str, Any], previous: str | None,
            device: str = "cpu") -> str:
        return stage_key(self.context, stage, partition, previous, device)

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.pt"

    def load(self, key: str) -> StageResult | None:
        """The entry, or None: absent, or damaged (with a warning; it is trained again and rewritten)."""
        path = self.path(key)
        if not path.exists():
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
            if entry.get("format") != FORMAT or entry.get("key") != key:
                raise ValueError(f"format {entry.get('format')!r}, key {entry.get('key')!r}")
            return StageResult(**entry["result"])
        except Exception as e:  # truncated, not a torch file, another layout, unreadable
            log.warning("stage cache entry %s cannot be used (%s: %s); the stage is trained again", path,
                        type(e).__name__, e)
            return None

    def save(self, key: str, result: StageResult) -> Path | None:
        """Write the entry atomically; a failure costs a warning, never the stage just trained."""
        buf = io.BytesIO()
        try:
            torch.save({"format": FORMAT, "key": key, "result": asdict(result)}, buf)
            return atomic_write_bytes(self.path(key), buf.getvalue())
        except Exception as e:
            log.warning("stage cache entry %s cannot be written (%s: %s); the stage is kept but not cached",
                        self.path(key), type(e).__name__, e)
            return None

    @contextmanager
    def locked(self, key: str) -> Iterator[None]:
        """Hold `<key>.lock` (exclusive) for the body: one job trains a key, the others wait. Without a lock (the
        directory cannot be written, the file system has no locks) the body runs anyway, with a warning."""
        handle = self._acquire(key)
        try:
            yield
        finally:
            if handle is not None:
                handle.close()  # closing the file releases the lock (so does the process ending)

    def _acquire(self, key: str) -> IO | None:
        path = self.directory / f"{key}.lock"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            handle = open(path, "a")  # noqa: SIM115 (held until `locked` ends)
        except OSError as e:
            log.warning("stage cache lock %s cannot be opened (%s); going on without the cache's lock", path, e)
            return None
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("another job trains the same stage (lock %s held); waiting to reuse it", path)
                start = time.monotonic()
                fcntl.flock(handle, fcntl.LOCK_EX)
                log.info("waited %.1f s for %s", time.monotonic() - start, path)
        except OSError as e:
            handle.close()
            log.warning("stage cache lock %s cannot be taken (%s); going on without the cache's lock", path, e)
            return None
        except BaseException:  # SIGTERM while waiting
            handle.close()
            raise
        return handle

    def fetch_or_compute(self, key: str, compute: Callable[[], StageResult],
                         usable: Callable[[StageResult], bool] = lambda r: True) -> tuple[StageResult, bool]:
        """Under the key's lock: the stored entry if there is one that `usable` accepts (reused: True), else
        `compute()`, stored (reused: False)."""
        with self.locked(key):
            entry = self.load(key)
            if entry is not None and usable(entry):
                return entry, True
            result = compute()
            self.save(key, result)
            return result, False
