"""The Prober: what the model knows, asked the same way at every point of a run.

- `probe_base(model)`: the base model, before any stage: pool categories (with sampling), test categories
  (greedy, `probe.num_prompts` prompts) and base test accuracy; the probes go through the cache.
- `reprobe(model)`: the pool after a stage (`reprobe` settings: greedy only by default).
- `test_answers(model)`: the greedy answer to one fixed, seeded k-shot prompt per test question (exemplars from the
  dev split, never the question itself); `test_correct(answers)` scores them with the matcher, so a stage decodes its
  test answers once and gets both. `test_accuracy(model)` / `dev_accuracy(model)`: answers and scores in one call.
Under DDP every rank probes its shard (`rank`, `world_size`) and all ranks get every result. The model is put in
eval mode for probing and back afterwards (`backend.probe_model`, which also casts a copy to `probe.dtype`); probing
after a stage runs inside `isolate_rng`, so it does not shift the training RNG. Probing is decoded by the backend
`probe.backend` names (`backend.py`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

from pytorch_lightning.utilities.seed import isolate_rng

from gradual_lightning.probing.backend import make_backend, probe_model
from gradual_lightning.probing.cache import ProbeCache, probe_key
from gradual_lightning.probing.config import ProbeConfig
from gradual_lightning.probing.mastery import MasteryThresholds
from gradual_lightning.probing.matching import is_correct
from gradual_lightning.probing.runner import ProbeResult, run_probe
from gradual_lightning.records import QARecord, QASplits

log = logging.getLogger(__name__)


def accuracy_config(probe_cfg: ProbeConfig, method: str = "generate") -> ProbeConfig:
    """The probe config of an accuracy check: one fixed prompt per question, greedy only. `method` generate decodes
    the answers (test: answers are recorded); score checks greedy correctness by one teacher-forced forward, which
    under exact match is the same verdict (dev: only correctness is needed). hybrid has no sampling to replace
    here, so it decodes."""
    return replace(probe_cfg, num_prompts=1, num_samples=0, exemplar_sets="fixed",
                   method="generate" if method == "hybrid" else method)


def probe_questions(model, tokenizer, questions: Sequence[QARecord], exemplar_source: Sequence[QARecord],
                    cfg: ProbeConfig, thresholds: MasteryThresholds, *, model_fingerprint: str | None = None,
                    cache: ProbeCache | None = None, desc: str = "probe", progress: bool = True, rank: int = 0,
                    world_size: int = 1) -> tuple[list[ProbeResult], bool]:
    """Results for `questions`, and whether they came from the cache (probe.py and the Prober use this one call).

    Without a model fingerprint (a model being fine-tuned in memory) nothing is cached."""
    key = probe_key(model_fingerprint, questions, exemplar_source, cfg) if model_fingerprint and cache else None
    if key:
        hit = cache.load(key, thresholds)
        if hit is not None and [r.id for r in hit] == [q.id for q in questions]:
            log.info("%s: %d results from cache %s", desc, len(hit), cache.path(key))
            return hit, True
    with probe_model(model, cfg.dtype) as probed:
        backend = make_backend(cfg.backend, probed, tokenizer, max_new_tokens=cfg.max_new_tokens,
                               batch_size=cfg.batch_size)
        results = run_probe(backend, questions, exemplar_source, cfg, thresholds, tokenizer=tokenizer,
                            desc=desc, progress=progress, rank=rank, world_size=world_size)
    if key and rank == 0:
        cache.save(key, results)
    return results, False


@dataclass
class BaseProbe:
    pool: list[ProbeResult]
    test: list[ProbeResult]
    test_correct: dict[str, bool]
    test_answers: dict[str, str]


class Prober:
    def __init__(self, data: QASplits, tokenizer, pool_probe: ProbeConfig, reprobe: ProbeConfig,
                 eval_probe: ProbeConfig, thresholds: MasteryThresholds, *, model_fingerprint: str | None = None,
                 cache: ProbeCache | None = None, progress: bool = True) -> None:
        self.data, self.tokenizer, self.thresholds = data, tokenizer, thresholds
        self.pool_probe, self.reprobe_cfg, self.eval_probe = pool_probe, reprobe, eval_probe
        self.model_fingerprint, self.cache, self.progress = model_fingerprint, cache, progress
        self.exemplars = data.dev if pool_probe.exemplar_source == "dev" else data.train

    def _probe(self, model, questions, exemplars, cfg, desc, *, cached=False, rank=0, world_size=1):
        with isolate_rng():  # probing must not shift the training RNG
            return probe_questions(model, self.tokenizer, questions, exemplars, cfg, self.thresholds,
                                   model_fingerprint=self.model_fingerprint if cached else None,
                                   cache=self.cache if cached else None, desc=desc, progress=self.progress,
                                   rank=rank, world_size=world_size)[0]

    def probe_base(self, model) -> BaseProbe:
        """Stage 0: categories of the pool (with sampling) and of the test set, plus base test accuracy."""
        pool = self._probe(model, self.data.train, self.exemplars, self.pool_probe, "base probe pool", cached=True)
        test = self._probe(model, self.data.test, self.data.dev, self.eval_probe, "base probe test", cached=True)
        answers = self.test_answers(model, desc="base test accuracy")
        return BaseProbe(pool, test, self.test_correct(answers), answers)

    def reprobe(self, model, *, desc: str = "re-probe pool", rank: int = 0, world_size: int = 1) -> list[ProbeResult]:
        """The pool's categories with the model as it is now (fine-tuned: never cached)."""
        return self._probe(model, self.data.train, self.exemplars, self.reprobe_cfg, desc, rank=rank,
                           world_size=world_size)

    def test_answers(self, model, *, desc: str = "test accuracy", rank: int = 0,
                     world_size: int = 1) -> dict[str, str]:
        return self._answers(model, self.data.test, desc, rank=rank, world_size=world_size, progress=self.progress)

    def test_correct(self, answers: dict[str, str]) -> dict[str, bool]:
        """Test question id -> whether its answer (from `test_answers`) is correct."""
        return self._score(self.data.test, answers)

    def test_accuracy(self, model, *, desc: str = "test accuracy", rank: int = 0,
                      world_size: int = 1) -> dict[str, bool]:
        return self.test_correct(self.test_answers(model, desc=desc, rank=rank, world_size=world_size))

    def dev_accuracy(self, model, *, desc: str = "dev") -> dict[str, bool]:
        """Dev question id -> correct, by `eval.method` (score: teacher forcing, no decoding; the callback runs
        this every epoch)."""
        cfg = accuracy_config(self.eval_probe, self.eval_probe.method)
        return {r.id: r.p_greedy > 0 for r in self._run(model, self.data.dev, cfg, desc)}

    def _score(self, questions: Sequence[QARecord], answers: dict[str, str]) -> dict[str, bool]:
        match = accuracy_config(self.eval_probe).match
        return {q.id: is_correct(answers[q.id], q.answers, match) for q in questions if q.id in answers}

    def _answers(self, model, questions, desc, *, rank=0, world_size=1, progress=False) -> dict[str, str]:
        """question id -> the greedy answer to its fixed k-shot prompt (decoded)."""
        results = self._run(model, questions, accuracy_config(self.eval_probe), desc, rank=rank,
                            world_size=world_size, progress=progress)
        return {r.id: r.greedy[0] for r in results}

    def _run(self, model, questions, cfg, desc, *, rank=0, world_size=1, progress=False) -> list[ProbeResult]:
        """One accuracy probe (`accuracy_config`) of `questions`, exemplars from dev, eval mode, isolated RNG."""
        if not questions:
            return []
        with isolate_rng(), probe_model(model, cfg.dtype) as probed:
            backend = make_backend(cfg.backend, probed, self.tokenizer, max_new_tokens=cfg.max_new_tokens,
                                   batch_size=cfg.batch_size)
            return run_probe(backend, questions, self.data.dev, cfg, tokenizer=self.tokenizer, desc=desc,
                             progress=progress, rank=rank, world_size=world_size)
