"""The gradual-learning recipe, top to bottom: probe the base model, then for each stage select -> fit -> re-probe
-> record -> write files -> checkpoint.

State lives in plain objects: the `KnowledgeLedger` (what the run knows about every question), the `Prober` (how it
asks the model) and the module's trainable weights. Lightning does the fitting: one Trainer per stage, since a stage
has its own epochs, lr schedule and (after a merge) its own trainable parameters, and a second `fit` on a Trainer
that already reached max_epochs would stop at once. The stage's Trainer also says where this rank computes, so the
base model is probed on the device the first stage trains on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from gradual_lightning.lifecycle import CHECKPOINT, CheckpointSaveError
from gradual_lightning.probing.prober import Prober
from gradual_lightning.training import checkpoint, run_files
from gradual_lightning.training.callbacks import DevAccuracyCallback
from gradual_lightning.training.datamodule import GradualDataModule
from gradual_lightning.training.ledger import KnowledgeLedger
from gradual_lightning.training.module import CausalLMModule
from gradual_lightning.training.schedules import Schedule, Stage

log = logging.getLogger(__name__)

TrainerFactory = Callable[[Stage, list[pl.Callback]], pl.Trainer]


def run_schedule(schedule: Schedule, module: CausalLMModule, dm: GradualDataModule, prober: Prober,
                 ledger: KnowledgeLedger, make_trainer: TrainerFactory, out_dir: Path, *, loggers: list,
                 identity: dict[str, Any], ckpt_path: str | None = None) -> dict[str, Any]:
    ckpt_file = out_dir / CHECKPOINT
    stage_states = checkpoint.restore(Path(ckpt_path), module, ledger, schedule, identity) if ckpt_path else []
    for stage in schedule.stages_from(len(ledger.stages), ledger.newly_selected):
        if stage.index > 0 and stage.merge_adapter:
            module.merge_adapter()
            module.new_adapter()
        carried = None if stage.reset_optimizer or stage.merge_adapter else module.optimizer_state()
        dev = DevAccuracyCallback(prober.dev_accuracy, keep=stage.keep)
        trainer = make_trainer(stage, [dev])
        module.to(trainer.strategy.root_device)  # the model loads on the CPU: probe where it trains

        if not ledger.has_base:  # what the base model knows
            base = prober.probe_base(module.hf_model)
            ledger.record_base({r.id: r.category for r in base.pool}, {r.id: r.category for r in base.test},
                               base.test_correct, pool_p=_p_values(base.pool), test_answers=base.test_answers)
            run_files.write_base(out_dir, base.pool, base.test)

        partition = ledger.select(stage)
        run_files.write_selection(out_dir, partition)
        log.info(run_files.describe(partition, stage, schedule.num_stages))
        if partition:
            dm.set_partition(partition)
            module.set_stage_hparams(lr=stage.lr)
            module.carry_optimizer_state(carried)
            module.train()  # probing left the model in eval mode; LoRA dropout must be on while training
            trainer.fit(module, datamodule=dm)
            module.to(trainer.strategy.root_device)  # Lightning's teardown moved it to the CPU
        else:
            log.warning("stage %d selects nothing to train on: no training, the model is re-probed as it is",
                        stage.index + 1)

        s = stage.index + 1
        shard = _shard(trainer)
        if shard:
            log.info("stage %d re-probe: rank %d of %d probes its shard of %d pool questions", s, shard["rank"],
                     shard["world_size"], len(ledger.pool_ids))
        pool = prober.reprobe(module.hf_model, desc=f"stage {s} re-probe pool", **shard)
        answers = prober.test_answers(module.hf_model, desc=f"stage {s} test accuracy", **shard)
        trained = partition.trained_ids(stage.epochs, seed=dm.seed, batch_size=dm.batch_size) if partition else set()
        ledger.record(stage, partition, pool={r.id: r.category for r in pool},
                      test_correct=prober.test_correct(answers), trained_ids=trained,
                      dev=dev.result() if partition else None, pool_p=_p_values(pool), test_answers=answers)

        rows = [r.to_dict() for r in pool]
        run_files.write_stage(out_dir, ledger, rows)
        run_files.log_stage(loggers, ledger, rows)
        stage_states.append(module.trainable_state())
        if trainer.is_global_zero:
            try:
                checkpoint.save(ckpt_file, ledger, stage_states, identity)
            except OSError as e:  # disk full: the finished stages' results still reach metrics.json (train.py)
                raise CheckpointSaveError(e, ledger.metrics(), stage=s) from e
    return ledger.metrics()


def _p_values(rows) -> dict[str, list]:
    """What the ledger keeps of a pool probe besides categories: [p_greedy, p_sampled] per question (loss weights)."""
    return {r.id: [r.p_greedy, r.p_sampled] for r in rows}


def _shard(trainer: pl.Trainer) -> dict[str, int]:
    """Under DDP each rank probes its share of the questions (the prober gathers the results on every rank)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return {"rank": trainer.global_rank, "world_size": trainer.world_size}
    return {}
