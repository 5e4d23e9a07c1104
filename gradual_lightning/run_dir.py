"""What a run dir may hold, and where a run resumes from.

- Resume: `prepare_run_dir` decides what a run starts from: `resume=auto` continues from the run dir's own
  checkpoints/last.pt when there is one; `ckpt_path=` resumes from any checkpoint, and when that is another run's,
  the earlier stages' probe files are copied over so the new run dir is complete.
- Run dirs: a dir that holds an earlier run's results is refused unless the run resumes (above) or `overwrite=true`
  clears those results first, so two runs' files never mix in one dir.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path
from typing import Any

from gradual_lightning.io import atomic_write_bytes, write_json
from gradual_lightning.lifecycle import CHECKPOINT
from gradual_lightning.report.jobs import FAILED_FILE

log = logging.getLogger(__name__)

# What marks a run dir as holding a run's results (Hydra's .hydra/ and the log do not: Hydra writes them first).
RESULT_MARKERS = ("metrics.json", "run.json", "probe", "checkpoints")
# What overwrite=true clears: the results a run writes into its dir (never anything else in it).
RESULTS = (*RESULT_MARKERS, "adapter", FAILED_FILE, "wandb", "csv", "lightning_logs")
_STAGE_FILE = re.compile(r"stage(\d+)_(selected\.json|pool\.jsonl)$")


class RunDirError(ValueError):
    """A run dir that cannot be used as asked (it holds another run's results, or the options contradict)."""


def resume_mode(value: Any) -> bool:
    """The `resume` key: false (default) or auto."""
    if value in (None, False, "false", "never"):
        return False
    if value == "auto":
        return True
    raise RunDirError(f"resume={value!r}: expected false or auto")


def results_in(run_dir: Path) -> list[str]:
    return [n for n in RESULT_MARKERS if (run_dir / n).exists()]


def clear_results(run_dir: Path) -> list[str]:
    """Delete what a run wrote into `run_dir` (RESULTS only) and empty this job's log files in it."""
    cleared = []
    for name in RESULTS:
        p = run_dir / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
        else:
            continue
        cleared.append(name)
    for h in logging.getLogger().handlers:  # Hydra's job log (<job name>.log), opened in append mode
        f = getattr(h, "baseFilename", None)
        if f and Path(f).parent.resolve() == run_dir.resolve() and Path(f).exists():
            Path(f).write_bytes(b"")
    return cleared


def checkpoint_stages(path: Path) -> int | None:
    """How many stages a checkpoint holds (memory-mapped: the weights are not read); None if it cannot be read."""
    try:
        import torch

        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return len(ckpt["stage_states"])
    except Exception:  # unreadable: checkpoint.restore says why, with the path
        return None


def auto_checkpoint(run_dir: str | Path, ckpt_path: str | None, resume: Any) -> str | None:
    """The checkpoint a run resumes from, without touching the dir: with resume=auto the run dir's own
    checkpoints/last.pt when there is one, else `ckpt_path`."""
    own = Path(run_dir) / CHECKPOINT
    return str(own) if resume_mode(resume) and own.is_file() else ckpt_path


def prepare_run_dir(run_dir: str | Path, *, ckpt_path: str | None, resume: Any = False,
                    overwrite: bool = False) -> str | None:
    """Check `run_dir` before a run and return the checkpoint the run resumes from (or None).

    - resume=auto and `run_dir/checkpoints/last.pt` exists: resume from it (it wins over `ckpt_path`, which a
      requeued job resuming from another run's checkpoint still names, but which is older than its own).
    - resume=auto and no checkpoint, in a dir with an unfinished attempt's files (no metrics.json): start afresh,
      clearing them (a job stopped before its first stage finished).
    - a dir holding results, no checkpoint to resume from: refused, unless overwrite=true (clears them first).
    - resuming: the dir is made to match the checkpoint: the earlier stages' probe files are copied from the
      checkpoint's run dir when it is another one; files of later stages and metrics.json are removed (the run
      writes them again).
    """
    run_dir = Path(run_dir)
    auto = resume_mode(resume)
    own = run_dir / CHECKPOINT
    if overwrite and auto:
        raise RunDirError("overwrite=true and resume=auto contradict each other: choose one")
    if overwrite:
        if ckpt_path and _is_within(Path(ckpt_path), run_dir):
            raise RunDirError(f"overwrite=true would delete ckpt_path={ckpt_path!r}, which lies in the run dir "
                              f"{run_dir}: resume with ckpt_path alone, or copy the checkpoint elsewhere first")
        cleared = clear_results(run_dir)
        if cleared:
            log.warning("overwrite=true: cleared %s from %s", ", ".join(cleared), run_dir)
    held = results_in(run_dir)
    if auto and own.is_file():
        if ckpt_path and Path(ckpt_path).resolve() != own.resolve():
            log.info("resume=auto: continuing from %s (ckpt_path=%s is older)", own, ckpt_path)
        ckpt_path = str(own)
    elif auto and held and not ckpt_path and not (run_dir / "metrics.json").exists():
        log.warning("resume=auto: %s holds no checkpoint (an attempt stopped before its first stage finished): "
                    "starting afresh, clearing %s", run_dir, ", ".join(clear_results(run_dir)))
        held = []
    if held and not ckpt_path:
        has_ckpt = own.is_file()
        raise RunDirError(
            f"run dir {run_dir} already holds a run's results ({', '.join(held)}); a new run would mix its files "
            "with them. Either resume that run: "
            + (f"resume=auto (continues after its last finished stage, from {own}) or " if has_ckpt else "")
            + "ckpt_path=<a run dir>/checkpoints/last.pt"
            + ("" if has_ckpt else " (this dir holds no checkpoint of its own)")
            + "; or start afresh in it with overwrite=true (deletes its results first); or choose another "
            "hydra.run.dir.")
    if ckpt_path and Path(ckpt_path).is_file():
        sync_to_checkpoint(Path(ckpt_path), run_dir)
    return ckpt_path


def _is_within(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def sync_to_checkpoint(ckpt: Path, run_dir: Path) -> None:
    """Make `run_dir` hold the probe files of the stages `ckpt` holds, and none of later stages (nor a
    metrics.json): copied from the checkpoint's run dir (`<run>/checkpoints/last.pt`) when it is another dir."""
    stages = checkpoint_stages(ckpt)
    src_run = ckpt.resolve().parent.parent if ckpt.resolve().parent.name == "checkpoints" else None
    if stages is None:  # unreadable: the restore fails with the reason; leave the dir as it is
        return
    probe = run_dir / "probe"
    if src_run is not None and src_run != run_dir.resolve():
        copied = _copy_probe_files(src_run / "probe", probe, stages)
        if copied:
            log.info("resuming from %s: copied %d probe files of its stages 0-%d into %s", ckpt, copied, stages, probe)
        else:
            log.warning("resuming from %s: no probe files next to it (%s); %s will hold only the stages this run "
                        "runs", ckpt, src_run / "probe", probe)
    removed = [f"probe/{p.name}" for p in sorted(probe.glob("stage*_*")) if (_stage_of(p) or 0) > stages]
    for name in removed:
        (run_dir / name).unlink()
    if (run_dir / "metrics.json").exists():
        (run_dir / "metrics.json").unlink()
        removed.append("metrics.json")
    if removed:
        log.info("resuming after stage %d: removed %s from %s (the run writes them again)", stages,
                 ", ".join(removed), run_dir)


def _stage_of(path: Path) -> int | None:
    m = _STAGE_FILE.match(path.name)
    return int(m.group(1)) if m else None


def _copy_probe_files(src: Path, dst: Path, stages: int) -> int:
    """stage0_pool/test.jsonl, stage{1..stages}_selected.json / _pool.jsonl, and test_correct.json and
    test_answers.json (one entry per stage, 0 = base) cut to the same stages. Each copy is atomic."""
    import json

    n = 0
    names = ["stage0_pool.jsonl", "stage0_test.jsonl",
             *(f"stage{s}_{kind}" for s in range(1, stages + 1) for kind in ("selected.json", "pool.jsonl"))]
    for name in names:
        if (src / name).is_file():
            atomic_write_bytes(dst / name, (src / name).read_bytes())
            n += 1
    for name in ("test_correct.json", "test_answers.json"):
        if (src / name).is_file():
            try:
                per_stage = json.loads((src / name).read_text(encoding="utf-8"))
                write_json(dst / name, per_stage[:stages + 1])
                n += 1
            except (OSError, ValueError, TypeError) as e:
                log.warning("could not copy %s (%s)", src / name, e)
    return n
