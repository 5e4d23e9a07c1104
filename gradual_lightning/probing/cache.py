"""Probe result cache keyed by (model weights, questions, exemplar source, probe config) fingerprints.

An identical probe is loaded instead of recomputed. Categories are not part of the key: they are re-derived from
the stored P values with the current mastery thresholds, so trying another threshold preset costs nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from gradual_lightning.io import read_jsonl, user_cache_dir, write_jsonl
from gradual_lightning.probing.config import ProbeConfig
from gradual_lightning.probing.mastery import MasteryThresholds
from gradual_lightning.probing.runner import ProbeResult, recategorize
from gradual_lightning.records import QARecord, fingerprint_records

CACHE_ENV = "GL_PROBE_CACHE"


def default_cache_dir() -> Path:
    return user_cache_dir(CACHE_ENV, "probes")


def probe_key(model_fingerprint: str, questions: Sequence[QARecord], source: Sequence[QARecord],
              cfg: ProbeConfig) -> str:
    payload = {
        "model": model_fingerprint,
        "questions": fingerprint_records(questions),
        "exemplar_source": fingerprint_records(source),
        "probe": cfg.cache_key(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


class ProbeCache:
    def __init__(self, directory: str | Path | None = None):
        self.directory = Path(directory) if directory else default_cache_dir()

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.jsonl"

    def load(self, key: str, thresholds: MasteryThresholds) -> list[ProbeResult] | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            results = [ProbeResult(**row) for row in read_jsonl(path)]
        except (ValueError, TypeError):
            return None  # a stale or damaged entry is recomputed, never trusted
        return recategorize(results, thresholds)

    def save(self, key: str, results: Sequence[ProbeResult]) -> Path:
        return write_jsonl(self.path(key), (r.to_dict() for r in results))
