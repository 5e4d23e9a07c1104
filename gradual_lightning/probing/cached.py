"""Probe with the cache in front: the one call probe.py and the training callback use."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from gradual_lightning.probing.cache import ProbeCache, probe_key
from gradual_lightning.probing.config import ProbeConfig
from gradual_lightning.probing.engine import GenerationEngine
from gradual_lightning.probing.mastery import MasteryThresholds
from gradual_lightning.probing.runner import ProbeResult, run_probe
from gradual_lightning.records import QARecord

log = logging.getLogger(__name__)


def probe_questions(
    model,
    tokenizer,
    questions: Sequence[QARecord],
    exemplar_source: Sequence[QARecord],
    cfg: ProbeConfig,
    thresholds: MasteryThresholds,
    *,
    model_fingerprint: str | None = None,
    cache: ProbeCache | None = None,
    desc: str = "probe",
    progress: bool = True,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[list[ProbeResult], bool]:
    """Results for `questions`, and whether they came from the cache.

    Without a model fingerprint (a model being fine-tuned in memory) nothing is cached.
    """
    key = probe_key(model_fingerprint, questions, exemplar_source, cfg) if model_fingerprint and cache else None
    if key:
        hit = cache.load(key, thresholds)
        if hit is not None and [r.id for r in hit] == [q.id for q in questions]:
            log.info("%s: %d results from cache %s", desc, len(hit), cache.path(key))
            return hit, True
    was_training = model.training
    model.eval()
    try:
        engine = GenerationEngine(model, tokenizer, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size)
        results = run_probe(engine, questions, exemplar_source, cfg, thresholds, tokenizer=tokenizer,
                            desc=desc, progress=progress, rank=rank, world_size=world_size)
    finally:
        model.train(was_training)
    if key and rank == 0:
        cache.save(key, results)
    return results, False
