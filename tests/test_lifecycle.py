"""How a run ends when it is stopped, where it resumes, and which run dirs it accepts (gradual_lightning.lifecycle).

Unit tests first (signal handler, run-dir rules, records); then real `train.py` processes on the tiny random model:
SIGTERM inside a stage's fit, in a multirun (outside any fit), a rerun refused then resumed with resume=auto, and a
disk that fills up while the checkpoint is written.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gradual_lightning import lifecycle, run_dir
from gradual_lightning.lifecycle import CheckpointSaveError, Terminated
from gradual_lightning.report import read_job
from gradual_lightning.report.render import markdown_text
from gradual_lightning.run_dir import RunDirError

REPO = Path(__file__).resolve().parents[1]


# ---- the SIGTERM handler ---------------------------------------------------------------------------------------
def test_sigterm_raises_terminated_with_status_143_once_and_restores_the_previous_handler():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated) as info, lifecycle.sigterm_raises():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises at the next bytecode; never reached
    assert info.value.code == 143 and str(info.value) == "terminated by SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before

    with lifecycle.sigterm_raises():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        except Terminated:
            os.kill(os.getpid(), signal.SIGTERM)  # a second SIGTERM while the first is handled: ignored
            time.sleep(0.05)


def test_lightning_fit_keeps_our_handler_and_the_signal_ends_the_fit_with_terminated(tmp_path):
    """Lightning's SignalConnector composes its notifier with the handler it finds: SIGTERM mid-fit sets
    trainer.received_sigterm and then raises our Terminated, which Lightning lets through after its teardown
    (on its own, Lightning raises SIGTERMException, a SystemExit with code None: exit status 0)."""
    import pytorch_lightning as pl
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, _):
            return self.layer(batch[0]).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

        def train_dataloader(self):
            return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(64, 2)), batch_size=4)

    class KillAtStep3(pl.Callback):
        def on_train_batch_end(self, trainer, *_):
            if trainer.global_step == 3:
                os.kill(os.getpid(), signal.SIGTERM)

    trainer = pl.Trainer(max_epochs=5, callbacks=[KillAtStep3()], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    with pytest.raises(Terminated), lifecycle.sigterm_raises():
        handler = signal.getsignal(signal.SIGTERM)
        trainer.fit(Tiny())
    assert trainer.received_sigterm and trainer.global_step == 3
    assert SIGTERMException().code is None  # why Lightning alone exits 0
    assert lifecycle.as_terminated(SIGTERMException()).code == 143
    with lifecycle.sigterm_raises():
        assert signal.getsignal(signal.SIGTERM) is not handler  # each run installs its own


# ---- where a run stopped, and its record ---------------------------------------------------------------------------
def _touch(run: Path, *names: str) -> None:
    for name in names:
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text("{}\n")


def test_where_stopped_reads_the_stage_files(tmp_path):
    assert lifecycle.where_stopped(tmp_path)[1:] == (None, 0)
    _touch(tmp_path, "probe/stage0_pool.jsonl", "probe/stage1_selected.json")
    assert lifecycle.where_stopped(tmp_path) == ("during stage 1", 1, 0)
    _touch(tmp_path, "probe/stage1_pool.jsonl")
    assert lifecycle.where_stopped(tmp_path)[1:] == (None, 1)
    _touch(tmp_path, "probe/stage2_selected.json")
    assert lifecycle.where_stopped(tmp_path) == ("during stage 2", 2, 1)


def test_record_names_the_stage_the_checkpoint_and_how_to_resume(tmp_path):
    _touch(tmp_path, "probe/stage0_pool.jsonl", "probe/stage1_selected.json", "probe/stage1_pool.jsonl",
           "probe/stage2_selected.json", "checkpoints/last.pt")
    try:
        raise Terminated()
    except Terminated as e:
        path = lifecycle.record_interruption(tmp_path, e)
    rec = json.loads(path.read_text())
    assert path.name == "failed.json"
    assert rec["error"] == "terminated by SIGTERM during stage 2; checkpoints/last.pt holds the stages up to 1"
    assert (rec["terminated"], rec["signal"], rec["exit_code"], rec["stage"], rec["finished_stages"]) == \
        (True, "SIGTERM", 143, 2, 1)
    assert "resume=auto" in rec["resume"] and str(tmp_path) in rec["resume"]


def test_the_sweep_report_lists_a_terminated_job(tmp_path):
    job = tmp_path / "0_x"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra/overrides.yaml").write_text("- seed=0\n")
    _touch(job, "probe/stage0_pool.jsonl", "probe/stage1_selected.json")
    lifecycle.record_interruption(job, Terminated())
    j = read_job(job)
    assert j.terminated and not j.ok and j.error.startswith("terminated by SIGTERM during stage 1")
    md = markdown_text(tmp_path, [j], [], [])
    assert "1 failed or unfinished (1 terminated by a signal)" in md and "terminated by SIGTERM during stage 1" in md


# ---- run dirs ----------------------------------------------------------------------------------------------------
def _checkpoint(path: Path, stages: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"version": 2, "stage_states": [{"w": torch.zeros(2)} for _ in range(stages)]}, path)
    return path


def _finished_run(run: Path, stages: int = 2) -> Path:
    """A run dir as the recipe leaves it after `stages` stages."""
    _touch(run, ".hydra/config.yaml", "run.json", "metrics.json", "probe/stage0_pool.jsonl", "probe/stage0_test.jsonl",
           *(f"probe/stage{s}_{k}" for s in range(1, stages + 1) for k in ("selected.json", "pool.jsonl")))
    (run / "probe/test_correct.json").write_text(json.dumps([{"q": s} for s in range(stages + 1)]))
    (run / "probe/test_answers.json").write_text(json.dumps([{"q": f"answer {s}"} for s in range(stages + 1)]))
    _checkpoint(run / "checkpoints/last.pt", stages)
    return run


def test_a_fresh_dir_and_a_hydra_job_dir_are_accepted(tmp_path):
    _touch(tmp_path, ".hydra/config.yaml", "train.log")  # what Hydra writes before the run starts
    assert run_dir.prepare_run_dir(tmp_path, ckpt_path=None) is None
    assert run_dir.prepare_run_dir(tmp_path / "new", ckpt_path=None, resume="auto") is None


def test_a_dir_with_results_is_refused_naming_the_dir_and_both_ways_out(tmp_path):
    run = _finished_run(tmp_path / "run")
    with pytest.raises(RunDirError) as info:
        run_dir.prepare_run_dir(run, ckpt_path=None)
    msg = str(info.value)
    assert str(run) in msg and "resume=auto" in msg and "overwrite=true" in msg and "ckpt_path=" in msg
    assert (run / "metrics.json").exists()  # nothing touched
    with pytest.raises(RunDirError, match="expected false or auto"):
        run_dir.prepare_run_dir(run, ckpt_path=None, resume="yes")
    with pytest.raises(RunDirError, match="contradict"):
        run_dir.prepare_run_dir(run, ckpt_path=None, resume="auto", overwrite=True)
    with pytest.raises(RunDirError, match="would delete ckpt_path"):
        run_dir.prepare_run_dir(run, ckpt_path=str(run / "checkpoints/last.pt"), overwrite=True)


def test_overwrite_clears_the_old_results_only_and_empties_this_jobs_log(tmp_path):
    run = _finished_run(tmp_path / "run")
    _touch(run, "adapter/adapter_config.json", "failed.json", "notes.txt")
    log_file = run / "train.log"
    log_file.write_text("old run's log\n")
    handler = logging.FileHandler(log_file)
    logging.getLogger().addHandler(handler)
    try:
        assert run_dir.prepare_run_dir(run, ckpt_path=None, overwrite=True) is None
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    assert sorted(p.name for p in run.iterdir()) == [".hydra", "notes.txt", "train.log"]
    assert "old run's log" not in log_file.read_text()  # only this run's lines (the warning above) remain


def test_resume_auto_continues_from_the_dirs_checkpoint_and_drops_later_files(tmp_path):
    run = _finished_run(tmp_path / "run", stages=2)
    _checkpoint(run / "checkpoints/last.pt", 1)  # killed in stage 2, after stage 2's selection
    (run / "probe/stage2_pool.jsonl").unlink()
    (run / "metrics.json").unlink()
    with pytest.raises(RunDirError):
        run_dir.prepare_run_dir(run, ckpt_path=None)
    ckpt = run_dir.prepare_run_dir(run, ckpt_path=None, resume="auto")
    assert ckpt == str(run / "checkpoints/last.pt")
    assert not (run / "probe/stage2_selected.json").exists() and (run / "probe/stage1_pool.jsonl").exists()
    # its own checkpoint wins over a ckpt_path a requeued job still names
    other = _checkpoint(tmp_path / "other/checkpoints/last.pt", 1)
    assert run_dir.prepare_run_dir(run, ckpt_path=str(other), resume="auto") == ckpt
    assert run_dir.auto_checkpoint(run, str(other), "auto") == ckpt
    assert run_dir.auto_checkpoint(run, str(other), False) == str(other)


def test_resume_auto_without_a_checkpoint_starts_afresh_unless_the_run_finished(tmp_path):
    run = tmp_path / "run"
    _touch(run, "run.json", "probe/stage0_pool.jsonl", "probe/stage1_selected.json")  # killed in stage 1
    assert run_dir.prepare_run_dir(run, ckpt_path=None, resume="auto") is None
    assert not (run / "probe").exists() and not (run / "run.json").exists()
    _touch(run, "run.json", "metrics.json")
    with pytest.raises(RunDirError, match="holds no checkpoint of its own"):
        run_dir.prepare_run_dir(run, ckpt_path=None, resume="auto")


def test_resuming_into_a_new_dir_copies_the_earlier_stages_probe_files(tmp_path):
    src = _finished_run(tmp_path / "src", stages=2)
    _checkpoint(src / "checkpoints/last.pt", 1)  # the checkpoint holds stage 1 only: stage 2's files stay behind
    new = tmp_path / "new"
    _touch(new, ".hydra/config.yaml")
    ckpt = str(src / "checkpoints/last.pt")
    assert run_dir.prepare_run_dir(new, ckpt_path=ckpt) == ckpt
    assert sorted(p.name for p in (new / "probe").iterdir()) == [
        "stage0_pool.jsonl", "stage0_test.jsonl", "stage1_pool.jsonl", "stage1_selected.json", "test_answers.json",
        "test_correct.json"]
    assert json.loads((new / "probe/test_correct.json").read_text()) == [{"q": 0}, {"q": 1}]
    assert json.loads((new / "probe/test_answers.json").read_text()) == [{"q": "answer 0"}, {"q": "answer 1"}]
    assert (src / "probe/stage2_pool.jsonl").exists()  # the source run is left as it was


# ---- a checkpoint write that fails ------------------------------------------------------------------------------
def test_partial_metrics_carry_the_finished_stages_and_a_note(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"seed": 3, "data_fingerprint": "d", "model_fingerprint": "m"}))
    err = CheckpointSaveError(OSError(errno.ENOSPC, "could not write the checkpoint x (No space left on device)"),
                              {"test_accuracy": 0.5, "knowledge_acquired": [0, 1, 2]}, stage=2)
    assert isinstance(err, OSError) and err.errno == errno.ENOSPC and "after stage 2" in str(err)
    m = json.loads(lifecycle.write_partial_metrics(tmp_path, err).read_text())
    assert m["test_accuracy"] == 0.5 and m["run"]["seed"] == 3
    assert m["incomplete"]["finished_stages"] == 2 and "stages up to 1" in m["incomplete"]["checkpoint"]
    assert "No space left" in m["incomplete"]["reason"]


# ---- real processes (tiny random model) ---------------------------------------------------------------------------
# The smoke preset made smaller; stages select Unknown questions (all of them, for a random model) so both stages
# train; stage 2 has 3 epochs, so a SIGTERM at its start lands inside its fit.
TINY = ["model=tiny_random", "experiment=smoke", "data.num_train=16", "data.num_dev=18", "data.num_test=8",
        "probe.num_prompts=1", "cache=false", "stage_cache=false", "progress=false"]
TRAIN_BOTH = ["schedule.stages.0.categories=[Unknown]", "schedule.stages.1.categories=[Unknown]",
              "schedule.stages.1.epochs=3"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "offline",
       "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}  # unbuffered: output as it comes


def _start(args: list[str], out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "train.py", *args], cwd=REPO, env=ENV, stdout=out.open("w"),
                            stderr=subprocess.STDOUT)


def _wait_for(proc: subprocess.Popen, ready, what: str, timeout: float = 600) -> None:
    end = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (status {proc.returncode}) before {what}")
        if time.monotonic() > end:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _run(args: list[str], out: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    with out.open("w") as f:
        return subprocess.run([sys.executable, "train.py", *args], cwd=REPO, env=ENV, stdout=f,
                              stderr=subprocess.STDOUT, timeout=timeout)


@pytest.fixture(scope="module")
def terminated_run(tmp_path_factory):
    """A two-stage run sent SIGTERM once stage 2's fit has started (its first epoch's progress bar is out)."""
    tmp = tmp_path_factory.mktemp("sigterm")
    run, out = tmp / "run", tmp / "out.txt"
    marker = tmp / "stage2_fit_started"
    slow = ["+callbacks.mark._target_=tests.lifecycle_helpers.MarkFitAndSlowDown", f"+callbacks.mark.marker={marker}",
            "+callbacks.mark.stage_epochs=3"]  # stage 2 (3 epochs) marks its fit's start and takes >= 1 s an epoch
    proc = _start([*TINY, *TRAIN_BOTH, *slow, f"hydra.run.dir={run}"], out)
    _wait_for(proc, marker.exists, "stage 2's fit started")
    proc.send_signal(signal.SIGTERM)
    status = proc.wait(timeout=300)
    return run, status, out.read_text(errors="replace")


def test_sigterm_inside_a_stage_exits_143_records_the_stage_and_keeps_the_last_checkpoint(terminated_run):
    run, status, output = terminated_run
    assert status == 143, output[-3000:]
    assert "Received SIGTERM" in output  # Lightning's notifier: the signal arrived inside the fit
    rec = json.loads((run / "failed.json").read_text())
    assert rec["terminated"] and rec["stage"] == 2 and rec["finished_stages"] == 1, rec["error"]
    assert rec["error"].startswith("terminated by SIGTERM during stage 2")
    assert not (run / "metrics.json").exists()
    ckpt = torch.load(run / "checkpoints/last.pt", map_location="cpu", weights_only=True)
    assert len(ckpt["stage_states"]) == 1 and len(ckpt["ledger"]["stages"]) == 1  # stage 1's, intact


def test_a_rerun_into_it_is_refused_and_resume_auto_finishes_it(terminated_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(terminated_run[0], run)
    refused = _run([*TINY, *TRAIN_BOTH, f"hydra.run.dir={run}"], tmp_path / "refused.txt")
    text = (tmp_path / "refused.txt").read_text(errors="replace")
    assert refused.returncode != 0 and "RunDirError" in text and str(run) in text
    assert "resume=auto" in text and "overwrite=true" in text
    assert (run / "failed.json").exists() and not (run / "metrics.json").exists()  # the refused run left it as it was

    resumed = _run([*TINY, *TRAIN_BOTH, f"hydra.run.dir={run}", "resume=auto"], tmp_path / "resumed.txt")
    text = (tmp_path / "resumed.txt").read_text(errors="replace")
    assert resumed.returncode == 0, text[-3000:]
    assert "resumed from" in (run / "train.log").read_text() and not (run / "failed.json").exists()
    metrics = json.loads((run / "metrics.json").read_text())
    assert [s["stage"] for s in metrics["stages"]] == [1, 2]
    assert json.loads((run / "run.json").read_text())["config"]["ckpt_path"] == str(run / "checkpoints/last.pt")
    assert len(torch.load(run / "checkpoints/last.pt", weights_only=True)["stage_states"]) == 2


def test_sigterm_in_a_multirun_outside_a_fit_ends_the_sweep_143_with_a_report(tmp_path):
    """Two jobs, the basic launcher (in-process); the default two_stage schedule selects MaybeKnown questions, of
    which the random model has none: no fit anywhere, so the SIGTERM lands in stage 1's re-probe."""
    sweep, out = tmp_path / "sweep", tmp_path / "out.txt"
    proc = _start(["-m", *TINY, "seed=0,1", f"hydra.sweep.dir={sweep}"], out)
    _wait_for(proc, lambda: any(sweep.glob("0_*/probe/stage1_selected.json")), "job 0's stage 1")
    proc.send_signal(signal.SIGTERM)
    status = proc.wait(timeout=300)
    output = out.read_text(errors="replace")
    assert status == 143, output[-3000:]
    assert "Received SIGTERM" not in output  # no Lightning fit was running
    [job] = [p for p in sweep.iterdir() if p.is_dir() and p.name[0].isdigit()]  # job 1 never started
    rec = json.loads((job / "failed.json").read_text())
    assert rec["terminated"] and rec["stage"] == 1 and rec["error"].startswith("terminated by SIGTERM during stage 1")
    md = (sweep / "report.md").read_text()
    assert "(1 terminated by a signal)" in md and "terminated by SIGTERM during stage 1" in md
    assert "jobs after it were not started" in output


DISK_FULL = """
import errno, runpy, sys
import gradual_lightning.training.checkpoint as checkpoint
real, calls = checkpoint.atomic_write_bytes, []
def full(path, data):
    calls.append(path)
    if len(calls) == 2:  # stage 2's checkpoint
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    return real(path, data)
checkpoint.atomic_write_bytes = full
sys.argv = ["train.py", *sys.argv[1:]]
runpy.run_path("train.py", run_name="__main__")
"""


def test_disk_full_while_checkpointing_writes_the_finished_stages_and_fails(tmp_path):
    run, out = tmp_path / "run", tmp_path / "out.txt"
    with out.open("w") as f:
        res = subprocess.run([sys.executable, "-c", DISK_FULL, *TINY, f"hydra.run.dir={run}"], cwd=REPO, env=ENV,
                             stdout=f, stderr=subprocess.STDOUT, timeout=600)
    text = out.read_text(errors="replace")
    assert res.returncode != 0, text[-3000:]
    assert "No space left on device" in text and str(run / "checkpoints/last.pt") in text
    metrics = json.loads((run / "metrics.json").read_text())
    assert [s["stage"] for s in metrics["stages"]] == [1, 2] and len(metrics["pool_counts"]) == 3
    assert metrics["incomplete"]["finished_stages"] == 2 and "stages up to 1" in metrics["incomplete"]["checkpoint"]
    assert metrics["run"]["seed"] == 0
    ckpt = torch.load(run / "checkpoints/last.pt", map_location="cpu", weights_only=True)
    assert len(ckpt["stage_states"]) == 1  # stage 1's checkpoint, intact
    assert not list((run / "checkpoints").glob(".last.pt.*.tmp"))
