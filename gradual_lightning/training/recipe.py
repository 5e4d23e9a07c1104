"""The gradual-learning recipe, top to bottom: probe the base model, then for each stage select -> fit -> re-probe
-> record -> write files -> checkpoint.

State lives in plain objects: the `KnowledgeLedger` (what the run knows about every question), the `Prober` (how it
asks the model) and the module's trainable weights. Lightning does the fitting: one Trainer per stage, since a stage
has its own epochs, lr schedule and (after a merge) its own trainable parameters, and a second `fit` on a Trainer
that already reached max_epochs would stop at once. The stage's Trainer also says where this rank computes, so the
base model is probed on the device the first stage trains on.

With a stage cache (`stage_cache.py`), a stage that another run already trained with the same key (same settings,
same earlier stages, same partition) is loaded instead of fitted and re-probed: its weights, re-probe, test
correctness, dev record and the RNG states after it, so the run goes on as after a trained stage. Its record says
`reused_from`; it is checkpointed like any other stage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from gradual_lightning.lifecycle import CHECKPOINT, CheckpointSaveError
from gradual_lightning.probing.prober import Prober
from gradual_lightning.training import checkpoint, run_files
from gradual_lightning.training.callbacks import DevAccuracyCallback
from gradual_lightning.training.datamodule import GradualDataModule
from gradual_lightning.training.ledger import KnowledgeLedger, Partition
from gradual_lightning.training.module import CausalLMModule
from gradual_lightning.training.schedules import Schedule, Stage
from gradual_lightning.training.stage_cache import StageCache, StageResult, rng_states, set_rng_states

log = logging.getLogger(__name__)

TrainerFactory = Callable[[Stage, list[pl.Callback]], pl.Trainer]


def run_schedule(schedule: Schedule, module: CausalLMModule, dm: GradualDataModule, prober: Prober,
                 ledger: KnowledgeLedger, make_trainer: TrainerFactory, out_dir: Path, *, loggers: list,
                 identity: dict[str, Any], ckpt_path: str | None = None,
                 stage_cache: StageCache | None = None) -> dict[str, Any]:
    ckpt_file = out_dir / CHECKPOINT
    stage_states = checkpoint.restore(Path(ckpt_path), module, ledger, schedule, identity) if ckpt_path else []
    previous_key = None  # the stage cache key of the last finished stage
    optimizer_state = None  # the last stage's, for a next stage with reset_optimizer: false
    for stage in schedule.stages_from(len(ledger.stages), ledger.newly_selected):
        if stage.index > 0 and stage.merge_adapter:
            module.merge_adapter()
            module.new_adapter()
        carried = None if stage.reset_optimizer or stage.merge_adapter else optimizer_state
        dev = DevAccuracyCallback(prober.dev_accuracy, keep=stage.keep)
        trainer = make_trainer(stage, [dev])
        module.to(trainer.strategy.root_device)  # the model loads on the CPU: probe where it trains

        if not ledger.has_base:  # what the base model knows
            base = prober.probe_base(module.hf_model)
            ledger.record_base({r.id: r.category for r in base.pool}, {r.id: r.category for r in base.test},
                               base.test_correct, pool_p=_p_values([r.to_dict() for r in base.pool]),
                               test_answers=base.test_answers)
            run_files.write_base(out_dir, base.pool, base.test)

        partition = ledger.select(stage)
        run_files.write_selection(out_dir, partition)
        log.info(run_files.describe(partition, stage, schedule.num_stages))
        s = stage.index + 1
        next_stage = schedule.stage_at(stage.index + 1, newly_selected=1)
        keep_optimizer = next_stage is not None and not next_stage.reset_optimizer
        train = partial(_train_stage, stage, partition, module, dm, prober, trainer, dev, ledger, carried=carried,
                        keep_optimizer=keep_optimizer, out_dir=out_dir)

        cache = stage_cache if stage_cache is not None and trainer.world_size == 1 else None
        if stage_cache is not None and cache is None:  # every rank would have to agree on a reuse
            log.info("stage %d: the stage cache is not used with %d processes (DDP)", s, trainer.world_size)
        if cache is None:
            result, reused, key = train(), False, None
        else:
            device = trainer.strategy.root_device.type
            if previous_key is None and stage.index > 0:  # resumed: the chain of keys from the ledger's records
                previous_key = _restored_key(cache, ledger, device)
            key = cache.key(stage.to_dict(), asdict(partition), previous_key, device)
            result, reused = cache.fetch_or_compute(
                key, train, usable=partial(_fits, module=module, ledger=ledger, needs_optimizer=keep_optimizer))
        if reused:
            module.load_trainable_state(result.trainable_state)
            set_rng_states(result.rng)  # later stages train as after a trained stage
            log.info("stage %d reused from the stage cache (%s): trained by %s in %.1f s; not trained again", s,
                     cache.path(key), result.run_dir, result.wall_s)
        optimizer_state = result.optimizer_state
        previous_key = key

        rows = result.pool_rows
        ledger.record(stage, partition, pool={r["id"]: r["category"] for r in rows}, test_correct=result.test_correct,
                      trained_ids=result.trained_ids, dev=result.dev, pool_p=_p_values(rows),
                      test_answers=result.test_answers, reused_from=result.reused_record(key) if reused else None)
        run_files.write_stage(out_dir, ledger, rows)
        run_files.log_stage(loggers, ledger, rows)
        stage_states.append(module.trainable_state())
        if trainer.is_global_zero:
            try:
                checkpoint.save(ckpt_file, ledger, stage_states, identity)
            except OSError as e:  # disk full: the finished stages' results still reach metrics.json (train.py)
                raise CheckpointSaveError(e, ledger.metrics(), stage=s) from e
    return ledger.metrics()


def _train_stage(stage: Stage, partition: Partition, module: CausalLMModule, dm: GradualDataModule, prober: Prober,
                 trainer: pl.Trainer, dev: DevAccuracyCallback, ledger: KnowledgeLedger, *, carried: dict | None,
                 keep_optimizer: bool, out_dir: Path) -> StageResult:
    """fit -> re-probe -> test accuracy: what the stage leaves (the ledger records it)."""
    start = time.monotonic()
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
    return StageResult(trainable_state=module.trainable_state(), pool_rows=[r.to_dict() for r in pool],
                       test_correct=prober.test_correct(answers), test_answers=dict(answers),
                       trained_ids=sorted(trained),
                       dev=dev.result() if partition else None, rng=rng_states(),
                       optimizer_state=(module.optimizer_state() if partition else carried) if keep_optimizer
                       else None,
                       run_dir=str(out_dir), wall_s=time.monotonic() - start)


def _fits(result: StageResult, module: CausalLMModule, ledger: KnowledgeLedger, *, needs_optimizer: bool) -> bool:
    """Whether a stage cache entry can stand for this stage here: the same trainable parameters (names and shapes),
    the same pool, and the optimizer state where the next stage carries it."""
    params = {n: tuple(p.shape) for n, p in module.named_parameters() if p.requires_grad}
    shapes = {n: tuple(t.shape) for n, t in result.trainable_state.items()}
    problem = ("other trainable parameters" if shapes != params else
               "another pool" if sorted(r["id"] for r in result.pool_rows) != sorted(ledger.pool_ids) else
               "no optimizer state, which the next stage carries" if needs_optimizer and
               result.optimizer_state is None else None)
    if problem:
        log.warning("stage cache entry from %s holds %s; the stage is trained again", result.run_dir, problem)
    return problem is None


def _restored_key(cache: StageCache, ledger: KnowledgeLedger, device: str) -> str | None:
    """The key of the last stage a checkpoint restored, made again from the ledger's records (each stage's fields
    and partition), as if those stages had run on `device`."""
    key = None
    for rec in ledger.stages:
        key = cache.key(rec.config, asdict(rec.partition), key, device)
    return key


def _p_values(rows: list[dict]) -> dict[str, list]:
    """What the ledger keeps of a pool probe besides categories: [p_greedy, p_sampled] per question (loss weights)."""
    return {r["id"]: [r["p_greedy"], r["p_sampled"]] for r in rows}


def _shard(trainer: pl.Trainer) -> dict[str, int]:
    """Under DDP each rank probes its share of the questions (the prober gathers the results on every rank)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return {"rank": trainer.global_rank, "world_size": trainer.world_size}
    return {}
