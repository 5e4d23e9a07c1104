"""checkpoints/last.pt: after every stage, the trainable weights of every stage so far and the ledger, so
`ckpt_path=...` resumes at the next stage with exactly the same partition.

Everything that decided the earlier stages' results (`run_identity`: the probe, re-probe, eval, mastery, data,
model, finetune, schedule and seed settings, and the data and model fingerprints) is stored too; a resume with
different settings fails naming the keys that differ, instead of mixing two configurations in one run.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from gradual_lightning.io import atomic_write_bytes
from gradual_lightning.training.ledger import KnowledgeLedger
from gradual_lightning.training.module import CausalLMModule
from gradual_lightning.training.schedules import Schedule

log = logging.getLogger(__name__)
CKPT_VERSION = 2
IDENTITY_KEYS = ("probe", "reprobe", "eval", "mastery", "data", "model", "finetune", "seed", "max_length",
                 "batch_size")


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from: unreadable, another version, or another configuration."""


def run_identity(config: Mapping[str, Any], schedule: Schedule, data_fingerprint: str,
                 model_fingerprint: str) -> dict[str, Any]:
    """The settings a checkpoint's stages depend on (plain containers)."""
    return {**{k: config.get(k) for k in IDENTITY_KEYS}, "schedule": schedule.to_dict(),
            "data_fingerprint": data_fingerprint, "model_fingerprint": model_fingerprint}


def _differences(saved: Any, now: Any, path: str = "") -> list[str]:
    if isinstance(saved, Mapping) and isinstance(now, Mapping):
        out = []
        for k in sorted(set(saved) | set(now), key=str):
            out += _differences(saved.get(k), now.get(k), f"{path}.{k}" if path else str(k))
        return out
    return [] if saved == now else [f"{path}: checkpoint {saved!r}, now {now!r}"]


def save(path: Path, ledger: KnowledgeLedger, stage_states: list, identity: Mapping[str, Any]) -> None:
    """Atomically: a crash or a full disk leaves the previous checkpoint, never a partial one."""
    buf = io.BytesIO()
    torch.save({"version": CKPT_VERSION, "identity": dict(identity), "stage_states": stage_states,
                "ledger": ledger.state_dict()}, buf)
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError as e:
        raise OSError(e.errno, f"could not write the checkpoint {path} ({e.strerror or e}); the previous checkpoint "
                               f"is unchanged") from e


def restore(path: Path, module: CausalLMModule, ledger: KnowledgeLedger, schedule: Schedule,
            identity: Mapping[str, Any]) -> list:
    """Load the ledger and replay the weights stage by stage (merges included); returns the stage states."""
    if not path.is_file():
        raise CheckpointError(f"ckpt_path={str(path)!r}: no such file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, empty or not a torch file
        raise CheckpointError(f"ckpt_path={str(path)!r} is not a readable checkpoint ({type(e).__name__}, "
                              f"{path.stat().st_size} bytes); it may be truncated: resume from an intact one or "
                              "start afresh") from e
    if not isinstance(ckpt, dict) or ckpt.get("version") != CKPT_VERSION:
        raise CheckpointError(f"ckpt_path={str(path)!r} was written by another version of gradual-lightning "
                              f"(checkpoint version {ckpt.get('version') if isinstance(ckpt, dict) else '?'}, "
                              f"this one reads {CKPT_VERSION})")
    diffs = _differences(ckpt["identity"], dict(identity))
    if diffs:
        keys = sorted({d.split(":")[0].split(".")[0] for d in diffs})
        raise CheckpointError(f"ckpt_path={str(path)!r} was made with other settings of {keys}; resume needs the "
                              "same ones:\n  " + "\n  ".join(diffs[:12]))
    ledger.load_state_dict(ckpt["ledger"])
    states = list(ckpt["stage_states"])
    for i, state in enumerate(states):
        if i > 0 and schedule.stage_at(i, newly_selected=1).merge_adapter:
            module.merge_adapter()
            module.new_adapter()
        module.load_trainable_state(state)
    log.info("resumed from %s after stage %d", path, len(states))
    return states
