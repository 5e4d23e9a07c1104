"""Gradual fine-tuning: probe, train on a stage's categories, re-probe, repeat. See conf/train.yaml."""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from gradual_lightning import tracking  # also registers ${gl.wandb_group:}
from gradual_lightning.data import load_data
from gradual_lightning.io import write_json
from gradual_lightning.models import load_model
from gradual_lightning.probing.cache import ProbeCache
from gradual_lightning.probing.config import ProbeConfig
from gradual_lightning.probing.mastery import MasteryThresholds
from gradual_lightning.provenance import run_record
from gradual_lightning.report import FAILED_FILE, record_failure
from gradual_lightning.training.datamodule import GradualDataModule
from gradual_lightning.training.recipe import run_schedule
from gradual_lightning.training.schedules import from_config as schedule_from_config
from gradual_lightning.training.summary import print_summary

log = logging.getLogger("train")


def run(cfg: DictConfig, out_dir: Path) -> dict:
    # validate everything cheap before loading anything heavy
    schedule = schedule_from_config(cfg.schedule, cfg.get("stage_overrides"))
    thresholds = MasteryThresholds.from_config(cfg.mastery)
    probe_cfg = ProbeConfig.from_config(cfg.probe)
    reprobe_cfg = replace(probe_cfg, **cfg.reprobe)
    eval_cfg = replace(probe_cfg, **cfg.eval)
    pl.seed_everything(cfg.seed, workers=True)

    data = load_data(cfg.data)
    lm = load_model(cfg.model)
    record = run_record(cfg, seed=cfg.seed, data_fingerprint=data.fingerprint(), model_fingerprint=lm.fingerprint)
    main_process = rank_zero_only.rank == 0  # under trainer=ddp every rank runs this script; one writes
    if main_process:
        write_json(out_dir / "run.json", record)
    module = instantiate(cfg.train_module, model=lm.model, tokenizer=lm.tokenizer,
                         finetune=OmegaConf.to_container(cfg.finetune, resolve=True))
    dm = GradualDataModule(data.train, data.dev, data.test, batch_size=cfg.batch_size, seed=cfg.seed)
    dm.connect(lm.tokenizer, max_length=cfg.max_length)
    loggers = list(instantiate(cfg.logger).values()) if cfg.get("logger") else []
    for lg in loggers:
        lg.log_hyperparams(record["config"])

    from gradual_lightning.training.stage_probe import StageBoundaryProbe

    boundary = StageBoundaryProbe(data, probe_cfg, reprobe_cfg, eval_cfg, thresholds, out_dir,
                                  cache=ProbeCache() if cfg.cache else None, progress=cfg.progress)
    metrics = run_schedule(cfg, schedule, module, dm, boundary, lm.fingerprint, out_dir, loggers, eval_cfg,
                           ckpt_path=cfg.ckpt_path)
    metrics["run"] = {k: record[k] for k in ("seed", "data_fingerprint", "model_fingerprint")}
    if not main_process:
        return metrics
    write_json(out_dir / "metrics.json", metrics)
    if cfg.finetune.mode == "lora":
        module.hf_model.save_pretrained(out_dir / "adapter")
    for lg in loggers:
        lg.log_metrics({k: v for k, v in metrics.items() if isinstance(v, int | float)})
    tracking.log_summary(loggers, metrics)
    print_summary(metrics, out_dir)
    return metrics


def _finish_wandb(exit_code: int) -> None:
    """One W&B run per job, even when a job fails (sequential multirun jobs must not share a run)."""
    try:
        import wandb
    except ImportError:
        return
    wandb.finish(exit_code=exit_code)


def objective(metrics: dict, key: str | None) -> float | None:
    """The value main() hands a sweeper: `metrics[key]` (`cfg.optimized_metric`), a dev metric, never a test one
    (selecting on test would leave no unbiased test number). None when no key is set."""
    if key is None:
        return None
    if key.startswith("test"):
        raise ValueError(f"optimized_metric={key!r} is a test metric: a sweeper must optimise a dev metric "
                         "(optimized_metric=dev_accuracy); test numbers are for the final report only")
    value = metrics.get(key)
    if value is None and key == "dev_accuracy":  # the final stage's, until run() reports it at the top level
        stages = metrics.get("stages") or [{}]
        value = stages[-1].get("dev_accuracy")
    if value is None:
        raise ValueError(f"optimized_metric={key!r}: this run's metrics have no such value "
                       f"(top-level keys: {', '.join(sorted(metrics))})")
    return value


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    os.environ.setdefault("WANDB_MODE", "online" if os.environ.get("WANDB_API_KEY") else "offline")
    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    (out_dir / FAILED_FILE).unlink(missing_ok=True)  # from an earlier attempt in this dir
    exit_code = 1
    try:
        metrics = run(cfg, out_dir)
        exit_code = 0
    except Exception as e:
        if hc.mode != RunMode.MULTIRUN:
            raise
        # In a sweep a failed job must not stop the others or the report (Hydra's launchers would abort the sweep):
        # record the error in the job dir, where the sweep report finds it, and carry on.
        record_failure(out_dir, e)
        log.exception("job %s failed; the sweep goes on (error in %s)", hc.job.num, out_dir / FAILED_FILE)
        return None
    finally:
        _finish_wandb(exit_code)
    return objective(metrics, cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
