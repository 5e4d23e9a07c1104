"""Gradual fine-tuning: probe, train on a stage's categories, re-probe, repeat. See conf/train.yaml."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.utilities import rank_zero_only

from gradual_lightning import lifecycle, run_dir, tracking  # tracking also registers ${gl.wandb_group:}
from gradual_lightning.data import load_data
from gradual_lightning.io import write_json
from gradual_lightning.models import load_model
from gradual_lightning.probing.cache import ProbeCache
from gradual_lightning.probing.cache import default_cache_dir as probe_cache_dir
from gradual_lightning.probing.config import ProbeConfig
from gradual_lightning.probing.mastery import MasteryThresholds
from gradual_lightning.probing.matching import is_correct
from gradual_lightning.probing.prober import Prober
from gradual_lightning.provenance import run_record
from gradual_lightning.quiet import quiet_libraries
from gradual_lightning.records import SPLITS, QASplits
from gradual_lightning.report import FAILED_FILE, record_failure
from gradual_lightning.training.checkpoint import run_identity
from gradual_lightning.training.ledger import KnowledgeLedger
from gradual_lightning.training.module import FinetuneConfig
from gradual_lightning.training.recipe import run_schedule
from gradual_lightning.training.schedules import Schedule, check_reprobe_sees, explicit_stage_fields
from gradual_lightning.training.schedules import from_config as schedule_from_config
from gradual_lightning.training.stage_cache import StageCache, run_context
from gradual_lightning.training.stage_cache import cache_dir as stage_cache_dir
from gradual_lightning.training.summary import print_summary
from gradual_lightning.validation import ConfigError, check_value

log = logging.getLogger("train")


def validate(cfg: DictConfig) -> tuple[Schedule, MasteryThresholds, ProbeConfig, ProbeConfig, ProbeConfig]:
    """Every setting checked before anything heavy loads: a typo or a wrong type fails in a second, naming the key,
    not after the model loaded or the base probe ran."""
    check_value("seed", cfg.seed, "int")
    check_value("batch_size", cfg.batch_size, "int", minimum=1)
    check_value("max_length", cfg.max_length, "int", minimum=1, optional=True)
    for key in ("progress", "cache", "stage_cache"):
        check_value(key, cfg[key], "bool")
    check_objective(cfg.get("optimized_metric"))
    explicit = explicit_stage_fields(_command_line_overrides())
    schedule = schedule_from_config(cfg.schedule, cfg.get("stage_overrides"), explicit=explicit)
    thresholds = MasteryThresholds.from_config(cfg.mastery)
    probe_cfg = ProbeConfig.from_config(cfg.probe)
    reprobe_cfg = ProbeConfig.from_config(cfg.reprobe, "reprobe", base=probe_cfg)
    check_reprobe_sees(schedule, reprobe_cfg.num_samples)
    eval_cfg = ProbeConfig.from_config(cfg.eval, "eval", base=probe_cfg)
    FinetuneConfig.from_config(OmegaConf.to_container(cfg.finetune, resolve=True))
    _check_factories(cfg.train_module)
    if cfg.ckpt_path and not Path(cfg.ckpt_path).is_file():
        raise ConfigError(f"ckpt_path={cfg.ckpt_path!r}: no such file")
    return schedule, thresholds, probe_cfg, reprobe_cfg, eval_cfg


def _check_factories(train_module: DictConfig) -> None:
    """Build the optimizer and lr scheduler once on a dummy parameter (a bad kind or argument fails here)."""
    param = torch.nn.Parameter(torch.zeros(1))
    arguments = {"optimizer": {"params": [param]},
                 "scheduler": {"optimizer": torch.optim.SGD([param], lr=1.0), "total_steps": 10}}
    for key, kwargs in arguments.items():
        if train_module.get(key) is None:
            continue
        try:
            instantiate(train_module[key])(**kwargs)
        except Exception as e:
            raise ConfigError(f"train_module.{key}: {type(e).__name__}: {e}") from e


def run(cfg: DictConfig, out_dir: Path) -> dict:
    quiet_libraries()
    schedule, thresholds, probe_cfg, reprobe_cfg, eval_cfg = validate(cfg)
    pl.seed_everything(cfg.seed, workers=True)

    data = load_data(cfg.data)
    if schedule.abstains:
        check_abstention_text(schedule, data, eval_cfg.match)
    lm = load_model(cfg.model)
    record = run_record(cfg, seed=cfg.seed, data_fingerprint=data.fingerprint(), model_fingerprint=lm.fingerprint)
    main_process = rank_zero_only.rank == 0  # under trainer=ddp every rank runs this script; one writes
    if main_process:
        write_json(out_dir / "run.json", record)
    module = instantiate(cfg.train_module, model=lm.model, tokenizer=lm.tokenizer,
                         finetune=OmegaConf.to_container(cfg.finetune, resolve=True))
    dm = instantiate(cfg.datamodule, _partial_=True)(pool=data.train, dev=data.dev, test=data.test)  # records as is
    dm.connect(lm.tokenizer, max_length=cfg.max_length)
    loggers = list(instantiate(cfg.logger).values()) if cfg.get("logger") else []
    for lg in loggers:
        lg.log_hyperparams(record["config"])

    def make_trainer(stage, stage_callbacks):
        callbacks = list(instantiate(cfg.callbacks).values()) if cfg.get("callbacks") else []  # fresh per stage
        # reload_dataloaders_every_n_epochs=1: each epoch's plan (and replay draw) is made afresh; the DataModule
        # shards its own epoch plan under DDP, so Lightning must not add a sampler. Neither is left to the config.
        return instantiate(cfg.trainer, max_epochs=stage.epochs, callbacks=[*stage_callbacks, *callbacks],
                           logger=loggers or False, default_root_dir=str(out_dir), enable_checkpointing=False,
                           reload_dataloaders_every_n_epochs=1, use_distributed_sampler=False)

    prober = Prober(data, lm.tokenizer, probe_cfg, reprobe_cfg, eval_cfg, thresholds,
                    model_fingerprint=lm.fingerprint,
                    cache=ProbeCache(probe_cache_dir(cfg.paths.cache_dir)) if cfg.cache else None,
                    progress=cfg.progress)
    ledger = KnowledgeLedger([r.id for r in data.train], seed=cfg.seed, abstention_text=schedule.abstention_text)
    identity = run_identity(record["config"], schedule, record["data_fingerprint"], lm.fingerprint)
    stage_cache = StageCache(stage_cache_dir(cfg.paths.cache_dir), run_context(identity, record["config"])) \
        if cfg.stage_cache else None
    metrics = run_schedule(schedule, module, dm, prober, ledger, make_trainer, out_dir, loggers=loggers,
                           identity=identity, ckpt_path=cfg.ckpt_path, stage_cache=stage_cache)
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


def check_abstention_text(schedule: Schedule, data: QASplits, match: str) -> None:
    """A schedule that trains abstention needs a text no question accepts as its answer: otherwise abstaining would
    score as correct (and a gold answer would be trained as an abstention)."""
    for split in SPLITS:
        for q in data[split]:
            if is_correct(schedule.abstention_text, q.answers, match):
                raise ConfigError(f"schedule.abstention_text={schedule.abstention_text!r} is a correct answer to "
                                  f"{split} question {q.id!r} (answers {list(q.answers)!r}, probe.match={match}): "
                                  "abstaining would count as correct; choose another abstention_text")


def _command_line_overrides() -> list[str]:
    """The user's overrides of this job (Hydra's task overrides; none outside a Hydra app)."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def _finish_wandb(exit_code: int) -> None:
    """One W&B run per job, even when a job fails (sequential multirun jobs must not share a run)."""
    try:
        import wandb
    except ImportError:
        return
    wandb.finish(exit_code=exit_code)


def check_objective(key: str | None) -> None:
    """`optimized_metric` must be a dev metric, never a test one (selecting on test would leave no unbiased test
    number)."""
    if key is not None and (not isinstance(key, str) or key.startswith("test")):
        raise ConfigError(f"optimized_metric={key!r} is not a dev metric: a sweeper must optimise a dev metric "
                          "(optimized_metric=dev_accuracy); test numbers are for the final report only")


def objective(metrics: dict, key: str | None) -> float | None:
    """The value main() hands a sweeper: `metrics[key]` (`cfg.optimized_metric`). None when no key is set."""
    check_objective(key)
    if key is None:
        return None
    value = metrics.get(key)
    if value is None:
        raise ValueError(f"optimized_metric={key!r}: this run's metrics have no such value "
                         f"(top-level keys: {', '.join(sorted(metrics))})")
    return value


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    os.environ.setdefault("WANDB_MODE", "online" if os.environ.get("WANDB_API_KEY") else "offline")
    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    main_process = rank_zero_only.rank == 0
    exit_code = 1
    with lifecycle.sigterm_raises():  # SIGTERM ends the run with status 143 and a record, wherever it is
        try:
            _prepare_run_dir(cfg, out_dir, main_process)
            metrics = run(cfg, out_dir)
            exit_code = 0
        except (SystemExit, KeyboardInterrupt) as e:
            _interrupted(e, hc, out_dir, multirun, main_process)
            terminated = lifecycle.as_terminated(e)
            if terminated is None or terminated is e:
                raise
            raise terminated from e  # Lightning's SIGTERMException (exit status 0) as ours (143)
        except Exception as e:
            if isinstance(e, lifecycle.CheckpointSaveError) and main_process:
                written = lifecycle.write_partial_metrics(out_dir, e)
                log.error("%s; the finished stages' results are in %s", e, written or out_dir / "probe")
            if not multirun:
                raise
            # In a sweep a failed job must not stop the others or the report (Hydra's launchers would abort the
            # sweep): record the error in the job dir, where the sweep report finds it, and carry on.
            record_failure(out_dir, e)
            log.exception("job %s failed; the sweep goes on (error in %s)", hc.job.num, out_dir / FAILED_FILE)
            return None
        finally:
            _finish_wandb(exit_code)
    return objective(metrics, cfg.get("optimized_metric"))


def _prepare_run_dir(cfg: DictConfig, out_dir: Path, main_process: bool) -> None:
    """Refuse a run dir holding another run's results, or set up the resume (run_dir.prepare_run_dir); cfg's
    ckpt_path becomes the checkpoint the run resumes from (resume=auto finds it), as run.json records it. Under
    DDP the other ranks start (at the first fit) in rank 0's run dir: they only find the same checkpoint."""
    if main_process:
        ckpt_path = run_dir.prepare_run_dir(out_dir, ckpt_path=cfg.get("ckpt_path"), resume=cfg.get("resume"),
                                              overwrite=bool(cfg.get("overwrite")))
        (out_dir / FAILED_FILE).unlink(missing_ok=True)  # from an earlier attempt in this dir
    else:
        ckpt_path = run_dir.auto_checkpoint(out_dir, cfg.get("ckpt_path"), cfg.get("resume"))
    if ckpt_path != cfg.get("ckpt_path"):
        log.info("resume=auto: resuming from %s", ckpt_path)
        with open_dict(cfg):
            cfg.ckpt_path = ckpt_path


def _interrupted(e: BaseException, hc, out_dir: Path, multirun: bool, main_process: bool) -> None:
    """A run stopped by SIGTERM (or another SystemExit / Ctrl-C): failed.json says where. A sweep that runs its jobs
    in this process (the basic launcher) stops too, its later jobs unstarted: the report is written now, listing
    the job as terminated, and the process exits 143."""
    terminated = lifecycle.as_terminated(e)
    if not main_process or (isinstance(e, SystemExit) and not terminated and e.code in (0, None)):
        return
    try:
        lifecycle.record_interruption(out_dir, terminated or e)
    except OSError:  # the run stops all the same
        log.exception("could not write %s", out_dir / FAILED_FILE)
    if multirun and terminated and hc.launcher.get("_target_", "").endswith("BasicLauncher"):
        from gradual_lightning.report import write_report

        sweep_dir = Path(str(hc.sweep.dir))
        try:
            report = write_report(sweep_dir)
            log.error("sweep terminated during job %s; the jobs after it were not started; report: %s",
                      hc.job.num, report.files[0])
        except Exception:
            log.exception("sweep terminated during job %s; the report failed, retry with: python -m "
                          "gradual_lightning.report %s", hc.job.num, sweep_dir)


if __name__ == "__main__":
    main()
