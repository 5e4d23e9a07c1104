"""Sweeps from the shell: W&B groups and content, failed jobs, the report at the end, the submitit launcher.

The multirun tests start `train.py -m` in a subprocess on the tiny random model (the smoke preset shrunk to a few
questions, `tiny_train_overrides` in conftest.py: sweeps, W&B and the report need no knowledge) and read what W&B
logged with W&B's own client: `wandb leet inspect`.
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.types import RunMode
from omegaconf import OmegaConf

from gradual_lightning import tracking
from gradual_lightning.categories import CATEGORIES

REPO = Path(__file__).resolve().parents[1]
WANDB = Path(sys.executable).with_name("wandb")
# per job: W&B on, a logged step for every training step (the tiny runs have one or two)
SWEEP = ["logger=wandb", "trainer.log_every_n_steps=1"]


@pytest.fixture
def smoke(tiny_train_overrides):
    """The overrides of every job of these sweeps (tiny model, smoke preset shrunk, W&B on)."""
    return [*tiny_train_overrides, *SWEEP]


def _dirname(overrides) -> str:
    """Hydra's override_dirname: the sorted overrides, without conf/train.yaml's exclude_keys (seed, stage_cache...)."""
    exclude = OmegaConf.load(REPO / "conf" / "train.yaml").hydra.job.config.override_dirname.exclude_keys
    return ",".join(sorted(o for o in overrides if o.split("=", 1)[0] not in exclude))


# ---- fast: config and tracking helpers ------------------------------------------------------------------------


def test_group_name():
    assert tracking.group_name(True, "multirun/2025-01-31/12-00-00", "schedule=one_stage") == \
        "2025-01-31/12-00-00/schedule=one_stage"
    assert tracking.group_name(True, "/tmp/x/sweep", "") == "x/sweep/defaults"
    assert tracking.group_name(False, "multirun/a/b", "schedule=one_stage") == "schedule=one_stage"
    assert tracking.group_name(False, "multirun/a/b", "") is None
    long = tracking.group_name(True, "a/b", "x=" + "y" * 300)
    assert len(long) == tracking.MAX_GROUP_LEN and long != tracking.group_name(True, "a/b", "x=" + "y" * 301)


def test_wandb_logger_config_groups_by_overrides_without_the_seed(compose):
    cfg = compose(["logger=wandb", "schedule=one_stage", "seed=3"])
    wandb_cfg = OmegaConf.to_container(cfg.logger.wandb, resolve=True)
    assert wandb_cfg["group"] == "logger=wandb,schedule=one_stage"
    assert wandb_cfg["name"] == "one_stage-seed3"
    assert wandb_cfg["tags"][:3] == ["one_stage", "smollm2_135m", "world_facts"]
    cfg = compose(["logger=wandb", "schedule=one_stage", "seed=3"], mode=RunMode.MULTIRUN,
                  **{"sweep.dir": "multirun/2025-01-31/12-00-00"})
    assert OmegaConf.to_container(cfg.logger.wandb, resolve=True)["group"] == \
        "2025-01-31/12-00-00/logger=wandb,schedule=one_stage"


def test_every_logger_choice_instantiates_and_tracking_is_a_noop_without_wandb(compose, tmp_path):
    from hydra.utils import instantiate

    for choice in ("csv", "none"):
        cfg = compose([f"logger={choice}"], output_dir=tmp_path / choice)
        loggers = list(instantiate(cfg.logger).values()) if cfg.get("logger") else []
        assert [type(lg).__name__ for lg in loggers] == (["CSVLogger"] if choice == "csv" else [])
        tracking.log_stage(loggers, 1, [[0] * 4] * 4, [])
        tracking.log_summary(loggers, {"test_accuracy": 0.5})
        assert not (tmp_path / choice / "wandb").exists()


def test_summary_values_and_stage_scalars():
    metrics = {"test_accuracy": 0.5, "incremental_gain": None, "knowledge_acquired": [0, 3, 5],
               "pool_counts": [{"HighlyKnown": 1, "Unknown": 2}], "test_accuracy_by_base_category": {"Unknown": 0.1},
               "transitions": [[[1]]], "stages": [{"x": 1}], "run": {"seed": 3, "model_fingerprint": "abc"}}
    assert tracking.summary_values(metrics) == {
        "test_accuracy": 0.5, "knowledge_acquired/stage0": 0, "knowledge_acquired/stage1": 3,
        "knowledge_acquired/stage2": 5, "knowledge_acquired/final": 5, "pool_counts/stage0/HighlyKnown": 1,
        "pool_counts/stage0/Unknown": 2, "test_accuracy_by_base_category/Unknown": 0.1, "run/seed": 3,
        "run/model_fingerprint": "abc"}
    rec = {"stage": 2, "n_selected": 4, "config": {"lr": 1.0}, "pool_counts": {"HighlyKnown": 7}, "ok": True,
           "dev_accuracy_per_epoch": [0.1]}
    assert tracking.stage_scalars(rec) == {"stage": 2, "n_selected": 4, "pool_counts/HighlyKnown": 7}


def test_probe_examples_put_changed_categories_first():
    rows = [{"id": i, "question": f"{i}?", "answers": ["a", "b"], "greedy": ["a", "c"], "p_greedy": 0.5,
             "category": c} for i, c in (("q1", "MaybeKnown"), ("q2", "HighlyKnown"), ("q3", "Unknown"))]
    before = {"q1": "MaybeKnown", "q2": "MaybeKnown", "q3": "MaybeKnown"}
    table = tracking.probe_examples(rows, base={"q1": "Unknown"}, before=before, trained_ids=["q2"], limit=2)
    assert [r[0] for r in table] == ["q2", "q3"]
    assert dict(zip(tracking.EXAMPLE_COLUMNS, table[0])) == {
        "id": "q2", "question": "q2?", "answers": "a | b", "greedy": "a | c", "p_greedy": 0.5, "base": None,
        "before": "MaybeKnown", "after": "HighlyKnown", "trained": True}


# ---- reading W&B offline runs with W&B's own client ------------------------------------------------------------
def _leet(run_dir: Path, *args: str):
    res = subprocess.run([str(WANDB), "leet", "inspect", *args, "--json", str(run_dir)], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout


def wandb_run(run_dir: Path) -> dict:
    """`wandb leet inspect --summary --json` (state, summary, config), plus the group from the run record."""
    out = json.loads(_leet(run_dir, "--summary"))
    records = [json.loads(line) for line in _leet(run_dir).splitlines() if line.strip()]
    out["group"] = next(r["run"].get("run_group") for r in records if r.get("type") == "run")
    return out


def offline_runs(job_dir: Path) -> list[Path]:
    return sorted((job_dir / "wandb").glob("offline-run-*"))


def test_wandb_stage_tables_heatmap_and_summary(tmp_path, monkeypatch):
    import wandb
    from pytorch_lightning.loggers import CSVLogger, WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    wb = WandbLogger(project="gl-test", save_dir=str(tmp_path), group="g/x=1", name="r")
    loggers = [CSVLogger(str(tmp_path)), wb]
    rows = [{"id": "q1", "question": "Q?", "answers": ["A"], "greedy": ["A", "B"], "p_greedy": 0.5,
             "category": "MaybeKnown"}]
    try:
        tracking.log_stage(loggers, 1, [[4, 0, 0, 0], [1, 2, 0, 0], [0, 0, 0, 1], [0, 1, 0, 5]],
                           tracking.probe_examples(rows, {}, {"q1": "Unknown"}, []))
        tracking.log_summary(loggers, {"test_accuracy": 0.25, "knowledge_acquired": [0, 2]})
    finally:
        wandb.finish()
    [run_dir] = offline_runs(tmp_path)
    run = wandb_run(run_dir)
    assert run["state"] == "finished" and run["group"] == "g/x=1"
    summary = run["summary"]
    assert summary["test_accuracy"] == 0.25 and summary["knowledge_acquired/final"] == 2
    assert summary["transitions/stage1"]["_type"] == "table-file"
    assert summary["transitions/stage1"]["ncols"] == 1 + len(CATEGORIES)
    assert summary["probe_examples/stage1"]["nrows"] == 1
    assert summary["transitions_heatmap/stage1"]["_type"] == "image-file"


# ---- multiruns of the smoke preset on the tiny model --------------------------------------------------------------
def _multirun(repo: Path, sweep_dir: Path, *overrides: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """`train.py -m` started from outside the repository; PYTHONPATH makes every process (submitit's workers too)
    import this checkout's package."""
    # one torch thread per job: on a small shared machine, jobs that each spin several threads slow down many times
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo), "GL_PROBE_CACHE": str(sweep_dir.parent / "probe_cache")}
    cmd = [sys.executable, str(repo / "train.py"), "-m", *overrides, f"hydra.sweep.dir={sweep_dir}"]
    return subprocess.run(cmd, cwd=sweep_dir.parent, env=env, capture_output=True, text=True, timeout=timeout)


def _job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted(p.parent.parent for p in sweep_dir.glob("*/.hydra/overrides.yaml"))


def _report_rows(sweep_dir: Path) -> list[dict]:
    with open(sweep_dir / "report.csv") as f:
        return list(csv.DictReader(f))


def _check_finished_job(job_dir: Path) -> dict:
    """A finished job: metrics.json, and one W&B run whose summary holds the final metrics and stage media."""
    metrics = json.loads((job_dir / "metrics.json").read_text())
    [run_dir] = offline_runs(job_dir)
    run = wandb_run(run_dir)
    assert run["state"] == "finished" and run["exit_code"] == 0
    summary = run["summary"]
    assert summary["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert summary["knowledge_acquired/final"] == metrics["knowledge_acquired"][-1]
    # retention is None when the base model knew nothing (the tiny one): the summary leaves None values out
    assert summary.get("retention") == (None if metrics["retention"] is None else pytest.approx(metrics["retention"]))
    assert summary["run/seed"] == metrics["run"]["seed"]
    last = len(metrics["transitions"]) - 1
    assert summary[f"transitions/stage{last}"]["_type"] == "table-file"
    assert summary[f"transitions_heatmap/stage{last}"]["_type"] == "image-file"
    assert summary[f"probe_examples/stage{last}"]["_type"] == "table-file"
    assert "train/loss_step" in summary and "dev/accuracy" in summary  # per step / per epoch
    assert summary["stage/pool_counts/Unknown"] == metrics["pool_counts"][-1]["Unknown"]
    assert run["config"]["seed"] == metrics["run"]["seed"]  # the resolved config
    return run


def test_multirun_with_a_failing_job_keeps_the_other_job_wandb_group_and_report(tmp_path, repo_root, smoke):
    """Two jobs of one setting (ckpt_path is not part of the setting, like the seed): job 0 runs, job 1 fails after
    W&B started (resume from a checkpoint file cut short). The sweep goes on, both jobs have a W&B run in the same
    group, the report lists the failure, and the sweep exits 1."""
    sweep = tmp_path / "sweep"
    broken = tmp_path / "last.pt"
    broken.write_bytes(b"PK\x03\x04 cut short")
    res = _multirun(repo_root, sweep, *smoke, "seed=0", f"ckpt_path=null,{broken}")
    log = res.stdout + res.stderr
    assert res.returncode == 1, log
    ok, bad = _job_dirs(sweep)
    assert ok.name.startswith("0_") and ok.name.endswith("_seed0") and bad.name.startswith("1_")
    run = _check_finished_job(ok)
    failure = json.loads((bad / "failed.json").read_text())
    assert failure["type"] == "CheckpointError" and str(broken) in failure["traceback"]
    assert not (bad / "metrics.json").exists()
    [bad_run] = offline_runs(bad)  # it failed after W&B started: its run is marked failed, in the same group
    failed_run = wandb_run(bad_run)
    assert failed_run["exit_code"] == 1
    assert failed_run["group"] == run["group"] == tracking.group_name(True, str(sweep), _dirname(smoke))
    md = (sweep / "report.md").read_text()
    assert "## Failed jobs" in md and "CheckpointError" in md and bad.name in md
    row = next(r for r in _report_rows(sweep) if r["metric"] == "test_accuracy")
    assert row["group"] == _dirname(smoke) and row["n"] == "1" and row["n_failed"] == "1"
    assert float(row["mean"]) == pytest.approx(json.loads((ok / "metrics.json").read_text())["test_accuracy"])
    assert (sweep / "knowledge_acquired.png").exists() and (sweep / "transitions_final.png").exists()


def test_submitit_local_multirun_two_seeds(tmp_path, repo_root, smoke):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the `slurm` extra is not installed")
    sweep = tmp_path / "sweep"
    res = _multirun(repo_root, sweep, *smoke, "seed=0,1", "hydra/launcher=submitit_local",
                    "hydra.launcher.timeout_min=15")
    assert res.returncode == 0, res.stdout + res.stderr
    jobs = _job_dirs(sweep)
    assert [j.name.split("_")[0] for j in jobs] == ["0", "1"] and jobs[1].name.endswith("_seed1")
    runs = [_check_finished_job(j) for j in jobs]
    assert runs[0]["group"] == runs[1]["group"] == tracking.group_name(True, str(sweep), _dirname(smoke))
    assert (sweep / ".submitit").is_dir()
    rows = [r for r in _report_rows(sweep) if r["metric"] == "test_accuracy"]
    assert len(rows) == 1 and rows[0]["n"] == "2" and rows[0]["n_failed"] == "0"
    accs = [json.loads((j / "metrics.json").read_text())["test_accuracy"] for j in jobs]
    assert float(rows[0]["mean"]) == pytest.approx(sum(accs) / 2)
    if accs[0] != accs[1]:
        assert float(rows[0]["ci_low"]) < float(rows[0]["mean"]) < float(rows[0]["ci_high"])


def test_slurm_launcher_config_composes(compose):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the `slurm` extra is not installed")
    launcher = compose(["hydra/launcher=slurm", "hydra.launcher.partition=gpu"]).hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_node, launcher.max_num_timeout) == ("gpu", 1, 2)
    assert launcher.submitit_folder.endswith("/.submitit/%j")  # inside the sweep dir


def test_submitit_local_launcher_config_composes(compose, tmp_path):
    """The launcher of the submitit sweep above: a LocalLauncher whose job folders are in the sweep dir."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the `slurm` extra is not installed")
    cfg = compose(["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=15"], mode=RunMode.MULTIRUN,
                  **{"sweep.dir": str(tmp_path / "sweep")})
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("LocalLauncher") and launcher.timeout_min == 15
    assert launcher.submitit_folder == f"{tmp_path / 'sweep'}/.submitit/%j"
