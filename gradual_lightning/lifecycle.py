"""A run's life outside the recipe: how it ends when it is stopped, and what it leaves saying so.

- SIGTERM (SLURM, `kill`, `docker stop`): `sigterm_raises()` makes the signal raise `Terminated` (a SystemExit with
  code 143 = 128 + 15) in the main thread, wherever the run is: inside a Lightning fit (Lightning's own handler runs
  first, then ours, which it composes), or while probing. Lightning alone would only stop the fit with a
  `SIGTERMException`, a SystemExit whose code is None: the process, or a whole multirun, would exit 0.
  `record_interruption` writes failed.json (atomically) saying where the run stopped (`where_stopped`, read from the
  stage files the recipe writes) and which checkpoint holds its finished stages.
- Where a run may start and resume: `run_dir.py`.
- A checkpoint that cannot be written (disk full): the recipe raises `CheckpointSaveError` with the metrics of the
  stages that finished, and train.py writes them to metrics.json before failing.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gradual_lightning.io import write_json
from gradual_lightning.report.jobs import FAILED_FILE

log = logging.getLogger(__name__)

CHECKPOINT = Path("checkpoints") / "last.pt"  # relative to a run dir (training/checkpoint.py writes it)


# ---- SIGTERM ---------------------------------------------------------------------------------------------------
class Terminated(SystemExit):
    """The process received a termination signal. A SystemExit with code 128 + signal number (143 for SIGTERM):
    uncaught, the process exits with that status; Hydra lets it through (it catches Exceptions only)."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(128 + int(signum))
        self.signum = int(signum)

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    def __str__(self) -> str:
        return f"terminated by {self.signal_name}"


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """While active, SIGTERM raises `Terminated` in the main thread (once: a second SIGTERM while the first is
    handled is logged and ignored, so the record of the first gets written). A handler that was there before
    (submitit's, which only logs) still runs first. Lightning's SignalConnector keeps this handler during a fit: it
    runs its own notifier, then the handlers it found."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    raised = False

    def handler(signum: int, frame: Any) -> None:
        nonlocal raised
        if callable(previous):
            previous(signum, frame)
        if raised:
            log.warning("another %s while stopping: ignored", signal.Signals(signum).name)
            return
        raised = True
        log.error("received %s: stopping the run", signal.Signals(signum).name)
        raise Terminated(signum)

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def as_terminated(exc: BaseException) -> Terminated | None:
    """`exc` as a Terminated: ours, or Lightning's SIGTERMException (raised when our handler was not installed)."""
    if isinstance(exc, Terminated):
        return exc
    try:
        from pytorch_lightning.utilities.exceptions import SIGTERMException
    except ImportError:  # pragma: no cover
        return None
    return Terminated(signal.SIGTERM) if isinstance(exc, SIGTERMException) else None


# ---- where a run stopped -----------------------------------------------------------------------------------------
def finished_stages(run_dir: Path) -> int:
    """How many stages finished in `run_dir`, by the files the recipe writes (probe/stage{N}_pool.jsonl, written
    after stage N's re-probe, just before its checkpoint)."""
    n = 0
    while (Path(run_dir) / "probe" / f"stage{n + 1}_pool.jsonl").exists():
        n += 1
    return n


def where_stopped(run_dir: Path) -> tuple[str, int | None, int]:
    """(words, the stage in progress or None, finished stages) for a run that stopped in `run_dir`."""
    probe = Path(run_dir) / "probe"
    done = finished_stages(run_dir)
    if not (probe / "stage0_pool.jsonl").exists():
        return "before stage 1 (loading, or probing the base model)", None, done
    if (probe / f"stage{done + 1}_selected.json").exists():
        return f"during stage {done + 1}", done + 1, done
    if done == 0:
        return "before stage 1 (after the base probe)", None, done
    return f"after stage {done} (between stages, or writing the final results)", None, done


def record_interruption(run_dir: str | Path, exc: BaseException, *, how: str | None = None) -> Path:
    """failed.json for a run stopped by a signal (or another SystemExit / KeyboardInterrupt): where it stopped,
    what its checkpoint holds and how to resume. Written atomically; the sweep report lists the job from it."""
    run_dir = Path(run_dir)
    how = how or (str(exc) if isinstance(exc, Terminated) else f"interrupted ({type(exc).__name__}"
                  + (f" {exc.code}" if isinstance(exc, SystemExit) else "") + ")")
    words, stage, done = where_stopped(run_dir)
    ckpt = run_dir / CHECKPOINT
    has_ckpt = ckpt.is_file() and done > 0
    record = {
        "error": f"{how} {words}" + (f"; {CHECKPOINT} holds the stages up to {done}" if has_ckpt else ""),
        "type": type(exc).__qualname__,
        "terminated": isinstance(exc, Terminated),
        "signal": exc.signal_name if isinstance(exc, Terminated) else None,
        "exit_code": exc.code if isinstance(exc, SystemExit) else None,
        "stage": stage,
        "finished_stages": done,
        "checkpoint": str(ckpt) if has_ckpt else None,
        "resume": f"python train.py <same overrides> hydra.run.dir={run_dir} resume=auto" if has_ckpt else None,
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    path = write_json(run_dir / FAILED_FILE, record)
    log.error("%s (%s)", record["error"], path)
    return path


# ---- checkpoint writes that fail -------------------------------------------------------------------------------
class CheckpointSaveError(OSError):
    """checkpoints/last.pt could not be written after stage `stage` (disk full, quota, ...). Carries the metrics of
    the stages that finished (stage `stage` included): train.py writes them to metrics.json, then fails."""

    def __init__(self, cause: OSError, metrics: dict[str, Any], stage: int) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause))
        self.metrics, self.stage = metrics, stage

    def __str__(self) -> str:
        return f"after stage {self.stage}: {self.strerror}"


def write_partial_metrics(run_dir: str | Path, err: CheckpointSaveError) -> Path | None:
    """metrics.json with the finished stages' results and a note (`incomplete`) of why the run stopped there; None
    when it cannot be written either (the disk is still full): the error says so."""
    run_dir = Path(run_dir)
    metrics = dict(err.metrics)
    try:
        import json

        run = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
        metrics["run"] = {k: run.get(k) for k in ("seed", "data_fingerprint", "model_fingerprint")}
    except (OSError, ValueError):
        pass
    metrics["incomplete"] = {
        "finished_stages": err.stage,
        "reason": f"the checkpoint after stage {err.stage} could not be written: {err.strerror}",
        "checkpoint": (f"{CHECKPOINT} holds the stages up to {err.stage - 1}" if err.stage > 1
                       else "no checkpoint was written"),
    }
    try:
        return write_json(run_dir / "metrics.json", metrics)
    except OSError as e:
        log.error("could not write %s either (%s): stage %d's results are in probe/ only", run_dir / "metrics.json",
                  e, err.stage)
        return None


# ---- run dirs and resume ---------------------------------------------------------------------------------------
