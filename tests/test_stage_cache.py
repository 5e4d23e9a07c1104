"""The stage cache (gradual_lightning/training/stage_cache.py) without a model: what its keys hold, one job training
a key while another waits and reuses it (two real processes), and a cache that fails costing nothing but a warning.
The end-to-end reuse on the tiny model is in test_train.py."""

import copy
import multiprocessing
import time
from dataclasses import asdict, replace

import pytest
import torch
from omegaconf import OmegaConf

from gradual_lightning.training.checkpoint import IDENTITY_KEYS, run_identity
from gradual_lightning.training.ledger import Partition
from gradual_lightning.training.stage_cache import (
    TRAINING_KEYS,
    StageCache,
    StageResult,
    cache_dir,
    rng_states,
    run_context,
    set_rng_states,
    stage_key,
)

PARTITION = Partition(0, ("q1", "q2", "q3"), ("q4",), 1)


def _composed(compose, *overrides):
    """The resolved config keys a run's stage keys are made of, and the validated schedule, as train.py has them."""
    import train

    cfg = compose(list(overrides))
    config = {k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k]
              for k in (*IDENTITY_KEYS, *TRAINING_KEYS)}
    return config, train.validate(cfg)[0]


def _keys(config, schedule, partition=PARTITION, device="cpu", data="data-fp", model="model-fp"):
    """Every listed stage's key, each stage on `partition` (its index set), chained as the recipe chains them."""
    context = run_context(run_identity(config, schedule, data, model), config)
    keys, previous = [], None
    for stage in schedule.stages:
        previous = stage_key(context, stage.to_dict(), asdict(replace(partition, stage=stage.index)), previous,
                             device)
        keys.append(previous)
    return keys


def _set(config, dotted, value):
    config = copy.deepcopy(config)
    *path, last = dotted.split(".")
    node = config
    for k in path:
        node = node[k]
    node[last] = value
    return config


def test_schedules_that_share_their_first_stage_share_its_key(compose):
    firsts = {name: _keys(*_composed(compose, f"schedule={name}"))[0]
              for name in ("one_stage", "two_stage", "two_stage_control", "n_stage", "natural")}
    assert firsts.pop("natural") != firsts["one_stage"]
    assert len(set(firsts.values())) == 1, firsts


def test_a_later_stage_never_changes_an_earlier_key_and_an_earlier_one_changes_every_later_key(compose):
    base = _keys(*_composed(compose, "schedule=two_stage"))
    later = _keys(*_composed(compose, "schedule=two_stage", "schedule.stages.1.lr=5e-4"))
    assert later[0] == base[0] and later[1] != base[1]
    earlier = _keys(*_composed(compose, "schedule=two_stage", "schedule.stages.0.epochs=2"))
    assert earlier[0] != base[0] and earlier[1] != base[1]  # stage 2's key holds stage 1's


def test_any_setting_that_decides_a_stage_changes_its_key_display_settings_do_not(compose):
    config, schedule = _composed(compose, "schedule=two_stage")
    base = _keys(config, schedule)
    deciding = [("seed", 1), ("data.num_train", 50), ("model.dtype", "bfloat16"), ("finetune.r", 64),
                ("train_module.optimizer.weight_decay", 0.1), ("train_module.loss_on", "all"),
                ("train_module.scheduler.kind", "linear"), ("trainer.precision", "bf16-mixed"),
                ("trainer.accumulate_grad_batches", 2), ("trainer.gradient_clip_val", 0.5), ("batch_size", 4),
                ("max_length", 32), ("datamodule.batch_size", 4), ("mastery.highly_known", 0.9),
                ("probe.num_prompts", 3), ("reprobe.max_new_tokens", 8), ("eval.k_shot", 2),
                ("callbacks", {"timer": {"_target_": "pytorch_lightning.callbacks.Timer"}})]
    for dotted, value in deciding:
        changed = _keys(_set(config, dotted, value), schedule)
        assert changed[0] != base[0] and changed[1] != base[1], dotted
    first = schedule.stages[0]
    for field in ({"lr": 3e-4}, {"epochs": 2}, {"keep": "last"}, {"replay_ratio": 0.1}):
        other = replace(schedule, stages=(replace(first, **field), *schedule.stages[1:]))
        assert _keys(config, other)[0] != base[0], field
    for fingerprints in ({"data": "other"}, {"model": "other"}):
        assert _keys(config, schedule, **fingerprints)[0] != base[0]
    assert _keys(config, schedule, partition=Partition(0, ("q1", "q2"), ("q4",), 1))[0] != base[0]
    assert _keys(config, schedule, partition=Partition(0, ("q1", "q2", "q3"), ("q4",), 0))[0] != base[0]
    assert _keys(config, schedule, device="cuda")[0] != base[0]
    context = run_context(run_identity(config, schedule, "d", "m"), config)
    stage = first.to_dict()
    assert stage_key(context, stage, asdict(PARTITION), None) != \
        stage_key(context, stage, {**asdict(PARTITION), "stage": 1}, None)  # the same stage at another index
    for dotted, value in (("trainer.enable_progress_bar", False), ("trainer.log_every_n_steps", 1),
                          ("trainer.enable_model_summary", True)):
        assert _keys(_set(config, dotted, value), schedule) == base, dotted


def test_the_cache_lives_under_paths_cache_dir_unless_the_variable_names_it(tmp_path, monkeypatch):
    monkeypatch.delenv("GL_STAGE_CACHE", raising=False)
    assert cache_dir(tmp_path / "root") == tmp_path / "root" / "stages"
    monkeypatch.setenv("GL_STAGE_CACHE", str(tmp_path / "env"))
    assert cache_dir(tmp_path / "root") == tmp_path / "env"


# ---- entries, the lock, failures ---------------------------------------------------------------------------------
def _result(value: float, run_dir: str = "run") -> StageResult:
    return StageResult(trainable_state={"w": torch.full((2, 2), value)},
                       pool_rows=[{"id": "q1", "category": "Unknown"}], test_correct={"t1": True},
                       test_answers={"t1": "Oslo"}, trained_ids=["q1"], dev={"dev_accuracy": 0.5}, rng=rng_states(),
                       run_dir=run_dir, wall_s=1.25)


def _contend(directory, marks, name, barrier, queue):
    """One job: wait for the other, then fetch or compute the same key (computing takes a second)."""
    def compute():
        (marks / name).touch()
        time.sleep(1.0)
        return _result(7.0, run_dir=name)

    cache = StageCache(directory, {})
    barrier.wait()
    result, reused = cache.fetch_or_compute("k" * 24, compute)
    queue.put((name, reused, result.run_dir, result.trainable_state["w"].tolist()))


def test_two_processes_on_one_key_one_computes_the_other_waits_and_reuses_it(tmp_path):
    ctx = multiprocessing.get_context("fork")
    marks = tmp_path / "marks"
    marks.mkdir()
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    jobs = [ctx.Process(target=_contend, args=(tmp_path / "cache", marks, name, barrier, queue)) for name in "ab"]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(60)
    assert [job.exitcode for job in jobs] == [0, 0]
    out = sorted(queue.get(timeout=5) for _ in jobs)
    computed = [p.name for p in marks.iterdir()]
    assert len(computed) == 1  # trained once
    assert sorted(reused for _, reused, _, _ in out) == [False, True]
    assert {run_dir for _, _, run_dir, _ in out} == set(computed)  # the waiting one got the other's result
    assert all(w == [[7.0, 7.0], [7.0, 7.0]] for *_, w in out)


def test_an_entry_round_trips_with_its_rng_states(tmp_path):
    cache = StageCache(tmp_path, {})
    state = rng_states()
    expected = torch.rand(3)
    saved = _result(1.0)
    saved.rng = state
    cache.save("k1", saved)
    torch.rand(5)  # move on
    loaded = cache.load("k1")
    assert torch.equal(loaded.trainable_state["w"], saved.trainable_state["w"])
    assert (loaded.pool_rows, loaded.test_correct, loaded.trained_ids, loaded.dev) == \
        (saved.pool_rows, saved.test_correct, saved.trained_ids, saved.dev)
    assert loaded.reused_record("k1") == {"key": "k1", "run_dir": "run", "wall_s": 1.25}
    set_rng_states(loaded.rng)
    assert torch.equal(torch.rand(3), expected)  # the generators are where they were when it was saved


def test_a_damaged_entry_is_computed_again_and_rewritten(tmp_path, caplog):
    cache = StageCache(tmp_path, {})
    cache.path("k1").write_bytes(b"not a torch file")
    with caplog.at_level("WARNING", logger="gradual_lightning.training.stage_cache"):
        result, reused = cache.fetch_or_compute("k1", lambda: _result(2.0))
    assert not reused and [r.levelname for r in caplog.records] == ["WARNING"]
    assert cache.fetch_or_compute("k1", lambda: pytest.fail("computed again"))[1] is True


def test_an_unusable_cache_directory_costs_a_warning_not_the_stage(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache directory should be")
    cache = StageCache(blocker / "stages", {})
    with caplog.at_level("WARNING", logger="gradual_lightning.training.stage_cache"):
        result, reused = cache.fetch_or_compute("k1", lambda: _result(3.0))
    assert not reused and result.trainable_state["w"][0, 0] == 3.0
    assert {r.levelname for r in caplog.records} == {"WARNING"}  # no lock, no entry: said, and nothing else


def test_an_entry_the_caller_cannot_use_is_computed_again(tmp_path):
    cache = StageCache(tmp_path, {})
    cache.save("k1", _result(1.0))
    result, reused = cache.fetch_or_compute("k1", lambda: _result(4.0), usable=lambda r: r.optimizer_state is not None)
    assert not reused and cache.load("k1").trainable_state["w"][0, 0] == 4.0
