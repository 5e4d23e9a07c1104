"""The stage-boundary probing callback: the part of gradual learning that looks at what the model knows now.

Before the first stage it probes the base model (pool with sampling, dev and test greedy; cached). When a stage's
fit ends (after DevAccuracyCallback has put back the best epoch) it re-probes the pool with the fine-tuned model,
measures test accuracy, and records counts, transitions from the base categories and acquired knowledge. The
recipe then asks it for the categories the next stage selects from.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.seed import isolate_rng

from gradual_lightning import io as gl_io
from gradual_lightning import tracking
from gradual_lightning.probing.cache import ProbeCache
from gradual_lightning.probing.cached import probe_questions
from gradual_lightning.probing.config import ProbeConfig
from gradual_lightning.probing.mastery import MasteryThresholds
from gradual_lightning.records import QASplits
from gradual_lightning.training import metrics as M
from gradual_lightning.training.evaluation import correct_by_id

log = logging.getLogger(__name__)
# Under trainer=ddp every rank runs this callback with the same results: rank 0 writes the files.
write_json, write_jsonl = rank_zero_only(gl_io.write_json), rank_zero_only(gl_io.write_jsonl)


class StageBoundaryProbe(pl.Callback):
    def __init__(self, data: QASplits, pool_probe: ProbeConfig, reprobe: ProbeConfig, eval_probe: ProbeConfig,
                 thresholds: MasteryThresholds, out_dir: str | Path, *, cache: ProbeCache | None = None,
                 progress: bool = True) -> None:
        self.data, self.thresholds, self.out_dir = data, thresholds, Path(out_dir)
        self.pool_probe, self.reprobe_cfg, self.eval_probe = pool_probe, reprobe, eval_probe
        self.cache, self.progress = cache, progress
        self.exemplars = data.dev if pool_probe.exemplar_source == "dev" else data.train
        # state (plain containers: saved in checkpoints for resume)
        self.base_pool: dict[str, str] = {}
        self.base_test: dict[str, str] = {}
        self.pool_history: list[dict[str, str]] = []   # categories of the pool after stage s (index 0 = base)
        self.test_correct: list[dict[str, bool]] = []  # test correctness after stage s (index 0 = base)
        self.stage_records: list[dict[str, Any]] = []  # what each stage trained on and how it went
        self.trained_ids: set[str] = set()
        self.stage_index = -1
        self.basis = 0  # which pool_history entry stages select from (moves only when a stage re-probes)

    # ---- base ------------------------------------------------------------------------------------------------
    def probe_base(self, model, tokenizer, model_fingerprint: str) -> None:
        """Stage 0: categories of the pool (with sampling) and of the test set, plus base test accuracy."""
        pool, _ = probe_questions(model, tokenizer, self.data.train, self.exemplars, self.pool_probe,
                                  self.thresholds, model_fingerprint=model_fingerprint, cache=self.cache,
                                  desc="base probe pool", progress=self.progress)
        test, _ = probe_questions(model, tokenizer, self.data.test, self.data.dev, self.eval_probe,
                                  self.thresholds, model_fingerprint=model_fingerprint, cache=self.cache,
                                  desc="base probe test", progress=self.progress)
        write_jsonl(self.out_dir / "probe" / "stage0_pool.jsonl", (r.to_dict() for r in pool))
        write_jsonl(self.out_dir / "probe" / "stage0_test.jsonl", (r.to_dict() for r in test))
        self.base_pool = {r.id: r.category for r in pool}
        self.base_test = {r.id: r.category for r in test}
        self.pool_history = [dict(self.base_pool)]
        self.test_correct = [correct_by_id(model, tokenizer, self.data.test, self.data.dev, self.eval_probe,
                                           desc="base test accuracy", progress=self.progress)]

    @property
    def current_pool(self) -> dict[str, str]:
        return self.pool_history[-1]

    # ---- a stage ---------------------------------------------------------------------------------------------
    def categories_for(self, stage) -> dict[str, str]:
        """The categories a stage selects from: the latest probe if it re-probes, else the ones used before
        (a stage without re-probe must not see what the model learned meanwhile)."""
        if stage.reprobe:
            self.basis = len(self.pool_history) - 1
        return self.pool_history[self.basis]

    def begin_stage(self, index: int, stage, selection: Mapping[str, Any], trained_ids,
                    selected_ids: list[str] | None = None) -> None:
        """Record what stage `index` trains on (probe/stage{N}_selected.json: which questions, from which probe)."""
        self.stage_index = index
        if selected_ids is not None:
            write_json(self.out_dir / "probe" / f"stage{index + 1}_selected.json",
                       {"stage": index + 1, "selected_from_probe": self.basis, "selected_ids": list(selected_ids)})
        self.stage_records.append({**selection, "stage": index + 1, "selected_from_probe": self.basis,
                                   "config": stage.to_dict()})
        self.trained_ids = set(trained_ids)

    def on_fit_end(self, trainer: pl.Trainer, pl_module) -> None:
        """Re-probe the pool and measure test accuracy with the weights the stage kept.

        Lightning's teardown has moved the model to the CPU by now: it goes back to the trainer's device for
        probing. Under DDP each rank probes its shard of the questions and all ranks get every result."""
        pl_module.to(trainer.strategy.root_device)
        model, tok = pl_module.hf_model, pl_module.tokenizer
        s = self.stage_index + 1
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        shard = {"rank": trainer.global_rank, "world_size": trainer.world_size} if distributed else {}
        if distributed:
            log.info("stage %d re-probe: rank %d of %d probes its shard of %d pool questions", s, trainer.global_rank,
                     trainer.world_size, len(self.data.train))
        with isolate_rng():
            pool, _ = probe_questions(model, tok, self.data.train, self.exemplars, self.reprobe_cfg,
                                      self.thresholds, desc=f"stage {s} re-probe pool", progress=self.progress,
                                      **shard)
            correct = correct_by_id(model, tok, self.data.test, self.data.dev, self.eval_probe,
                                    desc=f"stage {s} test accuracy", progress=self.progress, **shard)
        rows = [r.to_dict() for r in pool]
        write_jsonl(self.out_dir / "probe" / f"stage{s}_pool.jsonl", rows)
        before = self.pool_history[-1]
        self.pool_history.append({r.id: r.category for r in pool})
        self.test_correct.append(correct)
        self.trained_ids |= set(trainer.datamodule.trained_ids)
        rec = self.stage_records[-1]
        rec.update(self.stage_metrics(s))
        dev_cb = next((c for c in trainer.callbacks if hasattr(c, "best_accuracy")), None)
        if dev_cb is not None:
            rec.update(dev_accuracy=dev_cb.best_accuracy, dev_accuracy_per_epoch=list(dev_cb.history),
                       kept_epoch=dev_cb.best_epoch)
        for logger in trainer.loggers:
            if s == 1:  # the base model's counts as stage 0 of the same curves
                logger.log_metrics({f"stage/pool_counts/{c}": n for c, n in M.category_counts(self.base_pool).items()},
                                   step=0)
            logger.log_metrics({f"stage/{k}": v for k, v in tracking.stage_scalars(rec).items()}, step=s)
        tracking.log_stage(trainer.loggers, s, M.transition_matrix(self.base_pool, self.current_pool),
                           tracking.probe_examples(rows, self.base_pool, before, self.trained_ids))

    def stage_metrics(self, s: int) -> dict[str, Any]:
        base, now = self.base_pool, self.pool_history[s]
        split = M.knowledge_acquired_split(base, now, self.trained_ids)
        return {
            "pool_counts": M.category_counts(now),
            "test_accuracy": M.accuracy(list(self.test_correct[s].values())),
            "knowledge_acquired": M.knowledge_acquired([M.category_counts(base), M.category_counts(now)])[-1],
            "knowledge_acquired_trained": split["trained"],
            "knowledge_acquired_untrained": split["untrained"],
            "forgotten": M.forgotten(base, now),
        }

    # ---- results ---------------------------------------------------------------------------------------------
    def metrics(self) -> dict[str, Any]:
        """metrics.json: names other tools read (see README)."""
        counts = [M.category_counts(c) for c in self.pool_history]
        acquired = M.knowledge_acquired(counts)
        final = self.test_correct[-1]
        return {
            "test_accuracy": M.accuracy(list(final.values())),
            "test_accuracy_per_stage": [M.accuracy(list(c.values())) for c in self.test_correct],
            "test_accuracy_by_base_category": M.accuracy_by_category(final, self.base_test),
            "retention": M.retention(final, self.base_test),
            "pool_counts": counts,
            "knowledge_acquired": acquired,
            "incremental_gain": M.incremental_gain(acquired),
            "forgotten": [M.forgotten(self.base_pool, c) for c in self.pool_history],
            "transitions": [M.transition_matrix(self.base_pool, c) for c in self.pool_history],
            "knowledge_acquired_trained": [0] + [r["knowledge_acquired_trained"] for r in self.stage_records
                                                 if "knowledge_acquired_trained" in r],
            "knowledge_acquired_untrained": [0] + [r["knowledge_acquired_untrained"] for r in self.stage_records
                                                   if "knowledge_acquired_untrained" in r],
            "stages": self.stage_records,
        }

    def state_dict(self) -> dict[str, Any]:
        return {"base_pool": self.base_pool, "base_test": self.base_test, "pool_history": self.pool_history,
                "test_correct": self.test_correct, "stage_records": self.stage_records,
                "trained_ids": sorted(self.trained_ids), "stage_index": self.stage_index, "basis": self.basis}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.base_pool, self.base_test = dict(state["base_pool"]), dict(state["base_test"])
        self.pool_history = [dict(c) for c in state["pool_history"]]
        self.test_correct = [dict(c) for c in state["test_correct"]]
        self.stage_records = [dict(r) for r in state["stage_records"]]
        self.trained_ids, self.stage_index = set(state["trained_ids"]), int(state["stage_index"])
        self.basis = int(state["basis"])
