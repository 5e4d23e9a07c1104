"""Probe result cache keyed by (model weights, questions, exemplar source, probe config) fingerprints.

An identical probe is loaded instead of recomputed. Categories are not part of the key: they are re-derived from
the stored P values with the current mastery thresholds, so trying another threshold preset costs nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from gradual_lightning.io import read_jsonl, user_cache_dir, write_jsonl
from gradual_lightning.probing.config import ProbeConfig
from gradual_lightning.probing.mastery import MasteryThresholds
from gradual_lightning.probing.runner import ProbeResult, recategorize
from gradual_lightning.records import QARecord, fingerprint_records

CACHE_ENV = "GL_PROBE_CACHE"

log = logging.getLogger(__name__)


def default_cache_dir(root: str | Path | None = None) -> Path:
    """`$GL_PROBE_CACHE` when set, else `<root>/probes` (`paths.cache_dir`), else the user cache's `probes`."""
    return user_cache_dir(CACHE_ENV, "probes", root=root)


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
        """The cached results, or None on a miss: an absent, stale, damaged or unreadable entry (the last with a
        warning) is recomputed, never trusted."""
        path = self.path(key)
        if not path.exists():
            return None
        try:
            results = [ProbeResult(**row) for row in read_jsonl(path)]
        except (ValueError, TypeError):
            return None
        except OSError as e:  # a directory at the entry's path, no permission to read it
            log.warning("probe cache entry %s cannot be read (%s); probing again", path, e)
            return None
        return recategorize(results, thresholds)

    def save(self, key: str, results: Sequence[ProbeResult]) -> Path | None:
        """Write the entry; a cache that cannot be written (read-only, something else at the path) costs a
        warning and returns None, never the results just computed."""
        path = self.path(key)
        try:
            return write_jsonl(path, (r.to_dict() for r in results))
        except OSError as e:
            log.warning("probe cache entry %s cannot be written (%s); the results are kept but not cached", path, e)
            return None
