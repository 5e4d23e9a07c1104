"""The gradual-learning recipe, top to bottom: base probe, then for each stage select -> train -> re-probe.

One Trainer per stage: a stage has its own epochs, lr schedule and (after a merge) its own trainable parameters,
and a second `fit` on a Trainer that already reached max_epochs would stop at once. After every stage the run
writes `checkpoints/last.pt` (trainable weights of every stage so far, DataModule partition, probe results), so
`ckpt_path=...` resumes at the next stage with exactly the same partition.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate

from gradual_lightning.training.callbacks import DevAccuracyCallback
from gradual_lightning.training.datamodule import GradualDataModule
from gradual_lightning.training.module import CausalLMModule
from gradual_lightning.training.schedules import Schedule
from gradual_lightning.training.stage_probe import StageBoundaryProbe

log = logging.getLogger(__name__)
CKPT_VERSION = 1


def _save_checkpoint(path: Path, module: CausalLMModule, dm: GradualDataModule, boundary: StageBoundaryProbe,
                     stage_states: list, schedule: Schedule) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"version": CKPT_VERSION, "schedule": schedule.to_dict(), "stage_states": stage_states,
                "datamodule": dm.state_dict(), "boundary": boundary.state_dict()}, tmp)
    tmp.replace(path)


def _restore(path: Path, module: CausalLMModule, dm: GradualDataModule, boundary: StageBoundaryProbe,
             schedule: Schedule) -> list:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if ckpt.get("version") != CKPT_VERSION or ckpt["schedule"] != schedule.to_dict():
        raise ValueError(f"ckpt_path={str(path)!r} was written by another schedule or version; resume needs the "
                         "same schedule config")
    dm.load_state_dict(ckpt["datamodule"])
    boundary.load_state_dict(ckpt["boundary"])
    for i, state in enumerate(ckpt["stage_states"]):  # replay the weights stage by stage (merges included)
        if i > 0 and schedule.stage_at(i, newly_selected=1).merge_adapter:
            module.merge_adapter()
            module.new_adapter()
        module.load_trainable_state(state)
    log.info("resumed from %s after stage %d", path, len(ckpt["stage_states"]))
    return list(ckpt["stage_states"])


def run_schedule(cfg, schedule: Schedule, module: CausalLMModule, dm: GradualDataModule,
                 boundary: StageBoundaryProbe, model_fingerprint: str, out_dir: Path, loggers: list,
                 dev_probe, ckpt_path: str | None = None) -> dict[str, Any]:
    ckpt_dir = out_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    stage_states: list = []
    if ckpt_path:
        stage_states = _restore(Path(ckpt_path), module, dm, boundary, schedule)
    else:
        module.to(_trainer_device(cfg))  # the model loads on the CPU: probe the base model where it will train
        boundary.probe_base(module.hf_model, module.tokenizer, model_fingerprint)
    index = len(stage_states)
    while True:
        template = schedule.stage_at(min(index, len(schedule.stages) - 1)) if index < schedule.num_stages else None
        newly = None
        if template is not None and index >= len(schedule.stages):
            newly = dm.newly_selected(template, boundary.current_pool, boundary.base_pool)
        stage = schedule.stage_at(index, newly_selected=newly)
        if stage is None:
            break
        if index > 0 and stage.merge_adapter:
            module.merge_adapter()
            module.new_adapter()
        carried = None if stage.reset_optimizer or stage.merge_adapter else module.optimizer_state()
        selection = dm.set_stage(index, stage, boundary.categories_for(stage), boundary.base_pool)
        boundary.begin_stage(index, stage, selection, dm.trained_ids, dm.selected_ids)
        log.info("stage %d/%d: %s", index + 1, schedule.num_stages, selection)
        module.set_stage_hparams(lr=stage.lr)
        module.carry_optimizer_state(carried)
        dev_cb = DevAccuracyCallback(dm.dev, dm.dev, dev_probe, keep=stage.keep)
        trainer = instantiate(cfg.trainer, max_epochs=stage.epochs, callbacks=[dev_cb, boundary],
                              logger=loggers or False, default_root_dir=str(out_dir), enable_checkpointing=False)
        if selection["n_selected"] + selection["n_replay"] == 0:
            log.warning("stage %d selects nothing to train on; it is skipped (its probe is repeated as is)", index + 1)
            boundary.on_fit_end(_NoFit(dm, trainer), module)
        else:
            module.train()  # probing left the model in eval mode; LoRA dropout must be on while training
            trainer.fit(module, datamodule=dm)
        stage_states.append(module.trainable_state())
        if trainer.is_global_zero:  # under DDP every rank holds the same state: one writer
            _save_checkpoint(ckpt_dir / "last.pt", module, dm, boundary, stage_states, schedule)
        index += 1
    return boundary.metrics()


class _NoFit:
    """Stands in for a Trainer at the boundary of a stage that had nothing to train on."""

    def __init__(self, dm, trainer):
        self.datamodule, self.callbacks, self.loggers = dm, [], []
        self.strategy, self.global_rank, self.world_size = trainer.strategy, trainer.global_rank, trainer.world_size


def _trainer_device(cfg) -> torch.device:
    """The device the stages' Trainers train on (this rank's, under DDP), from the same trainer config."""
    return instantiate(cfg.trainer, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                       enable_model_summary=False).strategy.root_device
