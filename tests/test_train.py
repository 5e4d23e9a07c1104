"""train.py end to end: config composition, a real two-stage smoke run, and resume after a crash."""

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCHEDULES = sorted(p.stem for p in (REPO / "conf/schedule").glob("*.yaml"))
# the smoke preset, made smaller still: the real model and the real code path, just fewer questions
FAST = ["experiment=smoke", "probe.num_prompts=2", "probe.num_samples=1", "cache=false", "stage_cache=false"]


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_every_schedule_composes_and_validates(compose, schedule):
    from gradual_lightning.training.schedules import from_config

    cfg = compose([f"schedule={schedule}"])
    assert from_config(cfg.schedule).num_stages >= 1


@pytest.mark.parametrize("schedule", ["one_stage", "two_stage", "n_stage", "known_patch", "unknown_mix",
                                      "curriculum"])
def test_smoke_preset_keeps_the_chosen_schedule_and_shortens_its_stages(compose, schedule):
    from gradual_lightning.training.schedules import from_config

    cfg = compose(["experiment=smoke", f"schedule={schedule}"])
    plain = from_config(compose([f"schedule={schedule}"]).schedule)
    smoke = from_config(cfg.schedule, cfg.stage_overrides)
    assert smoke.name == schedule and len(smoke.stages) == len(plain.stages)
    assert all(st.epochs == 1 for st in smoke.stages)
    assert [st.reprobe for st in smoke.stages] == [st.reprobe for st in plain.stages]


def test_category_schedule_takes_the_category_from_the_command_line(compose):
    from gradual_lightning.training.schedules import from_config

    cfg = compose(["schedule=category", "schedule.category=Unknown"])
    assert from_config(cfg.schedule).stages[0].categories == ("Unknown",)


def test_bad_schedule_value_fails_before_any_model_is_loaded(compose, tmp_path, monkeypatch):
    import train
    from gradual_lightning.training.schedules import ScheduleError

    monkeypatch.setattr(train, "load_model", lambda *a, **k: pytest.fail("model loaded before validation"))
    cfg = compose(["schedule=two_stage", "schedule.stages.1.replay_ratio=-0.5"], output_dir=tmp_path)
    with pytest.raises(ScheduleError, match="stage 1, field 'replay_ratio'"):
        train.run(cfg, tmp_path)


def test_thresholds_in_wrong_order_fail_before_any_model_is_loaded(compose, tmp_path, monkeypatch):
    import train
    from gradual_lightning.probing.mastery import MasteryError

    monkeypatch.setattr(train, "load_model", lambda *a, **k: pytest.fail("model loaded before validation"))
    cfg = compose(["mastery.highly_known=0.3", "mastery.maybe_known=0.5"], output_dir=tmp_path)
    with pytest.raises(MasteryError, match="wrong order"):
        train.run(cfg, tmp_path)


@pytest.mark.parametrize("override, message", [
    ("probe.adaptive_sampling=flase", r"probe.adaptive_sampling='flase': expected true or false"),
    ("probe.early_stop_sampling=maybe", r"probe.early_stop_sampling='maybe'"),
    ("probe.num_prompts=2.5", r"probe.num_prompts=2.5: expected an integer"),
    ("seed=abc", r"seed='abc': expected an integer"),
    ("+reprobe.bogus=1", r"reprobe: unknown key\(s\) \['bogus'\]"),
    ("+eval.bogus=1", r"eval: unknown key\(s\) \['bogus'\]"),
    ("reprobe.num_samples=-1", r"reprobe.num_samples=-1 must be >= 0"),
    ("finetune.r=0", r"finetune.r must be an integer >= 1"),
    ("train_module.scheduler.kind=step", r"train_module.scheduler: ValueError: scheduler kind='step'"),
    ("ckpt_path=/nonexistent/last.pt", r"ckpt_path='/nonexistent/last.pt': no such file"),
    ("batch_size=0", r"batch_size=0: must be >= 1"),
    ("schedule.stages.0.epochs=-1", r"stage 0, field 'epochs': must be an integer >= 1, got -1"),
])
def test_bad_values_fail_at_start_up_naming_the_key(compose, tmp_path, monkeypatch, override, message):
    import train

    monkeypatch.setattr(train, "load_model", lambda *a, **k: pytest.fail("model loaded before validation"))
    with pytest.raises(ValueError, match=message):
        train.run(compose(["debug=smoke", override], output_dir=tmp_path), tmp_path)


def test_a_preset_never_overrides_a_stage_field_set_on_the_command_line(compose, tmp_path):
    import train

    schedule = train.validate(compose(["debug=smoke", "schedule=two_stage", "schedule.stages.0.epochs=3"],
                                      output_dir=tmp_path))[0]
    assert [s.epochs for s in schedule.stages] == [3, 1]  # stage 0 as the user said, stage 1 from the preset
    assert [s.lr for s in schedule.stages] == [1.0e-3, 1.0e-3]


def _read(path):
    return json.loads(Path(path).read_text())


def _ids_in(path, category):
    return [json.loads(line)["id"] for line in Path(path).read_text().splitlines()
            if json.loads(line)["category"] == category]


def test_a_tiny_run_writes_every_file_of_a_run(cfg_train):
    """The whole job (probe -> select -> fit -> re-probe -> files -> checkpoint -> metrics) in seconds, on the tiny
    model (natural schedule: one stage on the whole pool). What the real model's run below checks on knowledge, this
    checks on mechanics, in the default test run."""
    from hydra.core.hydra_config import HydraConfig

    import train

    out = Path(HydraConfig.get().runtime.output_dir)
    metrics = train.run(cfg_train, out)
    assert _read(out / "metrics.json") == json.loads(json.dumps(metrics, default=str))
    pool = [json.loads(line)["id"] for line in (out / "probe/stage0_pool.jsonl").read_text().splitlines()]
    assert len(pool) == cfg_train.data.num_train
    assert len((out / "probe/stage0_test.jsonl").read_text().splitlines()) == cfg_train.data.num_test
    assert _read(out / "probe/stage1_selected.json") == {"stage": 1, "selected_from_probe": 0, "selected_ids": pool}
    assert [json.loads(line)["id"] for line in (out / "probe/stage1_pool.jsonl").read_text().splitlines()] == pool
    assert len(_read(out / "probe/test_correct.json")) == 2  # base and after stage 1
    answers, correct = _read(out / "probe/test_answers.json"), _read(out / "probe/test_correct.json")
    assert [sorted(a) for a in answers] == [sorted(c) for c in correct]  # the answers those verdicts score
    assert all(isinstance(a, str) for stage in answers for a in stage.values())
    assert [s["stage"] for s in metrics["stages"]] == [1] and len(metrics["pool_counts"]) == 2
    assert all(sum(map(sum, m)) == len(pool) for m in metrics["transitions"])
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["run"]["seed"] == 0
    run = _read(out / "run.json")
    assert run["model_fingerprint"] == metrics["run"]["model_fingerprint"] and run["config"]["model"]["name"] == \
        "tiny_random"
    assert (out / "checkpoints/last.pt").is_file() and (out / "adapter/adapter_config.json").is_file()


def test_a_tiny_abstain_run_trains_the_unknown_questions_to_abstain_and_reports_hallucination(make_cfg_train,
                                                                                               tmp_path, capsys):
    """schedule=abstain on the tiny model, which knows nothing: nothing is MaybeKnown, every pool question is Unknown,
    so the stage trains every question on the abstention text (and only on it)."""
    import train

    out = tmp_path / "run"
    metrics = train.run(make_cfg_train("schedule=abstain", output_dir=out), out)
    pool = _ids_in(out / "probe/stage0_pool.jsonl", "Unknown")
    assert len(pool) == 6
    assert _read(out / "probe/stage1_selected.json") == {"stage": 1, "selected_from_probe": 0, "selected_ids": [],
                                                         "abstain_ids": pool, "abstention_text": "I don't know"}
    assert metrics["stages"][0]["n_abstain"] == 6 and metrics["stages"][0]["n_selected"] == 0
    for key in ("test_abstention_rate", "test_hallucination_rate"):
        assert 0.0 <= metrics[key] <= 1.0 and len(metrics[f"{key}_per_stage"]) == 2
    assert set(metrics["test_hallucination_by_base_category"]) == set(metrics["test_accuracy_by_base_category"])
    assert metrics["test_accuracy"] + metrics["test_abstention_rate"] + metrics["test_hallucination_rate"] == \
        pytest.approx(1.0)
    assert "Test answers after stage 1 by base category" in capsys.readouterr().out


def test_an_abstention_text_that_is_a_gold_answer_fails_before_the_model_loads(make_cfg_train, tmp_path,
                                                                               monkeypatch):
    import train
    from gradual_lightning.data import load_data

    cfg = make_cfg_train("schedule=abstain")
    answer = load_data(cfg.data).test[0].answers[0]
    cfg.schedule.abstention_text = answer
    monkeypatch.setattr(train, "load_model", lambda *a, **k: pytest.fail("model loaded before the check"))
    with pytest.raises(ValueError, match=f"abstention_text={answer!r} is a correct answer to test question"):
        train.run(cfg, tmp_path / "run")


def test_a_tiny_weighted_run_writes_the_weights_and_they_reach_the_loss(make_cfg_train, tmp_path, monkeypatch):
    """schedule=weighted (whole pool, category weights) with MaybeKnown/Unknown weights made different from the
    preset's: every batch of the run reaches the loss with its questions' weights (Unknown ones, on the tiny model)."""
    import train
    from gradual_lightning.training import module as module_py

    seen = []
    real = module_py.weighted_loss
    monkeypatch.setattr(module_py, "weighted_loss", lambda per, w: seen.append(w.tolist()) or real(per, w))
    out = tmp_path / "run"
    train.run(make_cfg_train("schedule=weighted", "schedule.stages.0.loss_weights.weights.Unknown=0.25",
                             output_dir=out), out)
    selected = _read(out / "probe/stage1_selected.json")
    assert selected["loss_weights"] == dict.fromkeys(selected["selected_ids"], 0.25)
    assert seen and all(set(w) == {0.25} for w in seen)
    assert sum(map(len, seen)) == len(selected["selected_ids"])  # one epoch (debug=smoke): every question once


def _crash_in_stage_2(monkeypatch):
    """Make the next run crash as stage 2's fit asks for its data; returns the function that undoes it."""
    from gradual_lightning.training.datamodule import GradualDataModule

    original = GradualDataModule.train_dataloader

    def crash_in_stage_2(self):
        if self.partition.stage == 1:
            raise RuntimeError("simulated crash in stage 2")
        return original(self)

    monkeypatch.setattr(GradualDataModule, "train_dataloader", crash_in_stage_2)
    return lambda: monkeypatch.setattr(GradualDataModule, "train_dataloader", original)


def test_a_tiny_two_stage_run_crashed_in_stage_2_resumes_with_the_same_partition(make_cfg_train, tmp_path,
                                                                                 monkeypatch):
    """The mechanics of the real-model run below (which is slow), in seconds on the tiny model: both stages select
    Unknown questions (all of them, for a random model), so both train. Crash at the start of stage 2; a resume with
    other probe settings is refused naming them; a resume with the same settings trains stage 2 on the partition the
    crashed run had drawn from the re-probe after stage 1, and finishes."""
    import train
    from gradual_lightning.training.checkpoint import CheckpointError

    both = ["schedule=two_stage", "schedule.stages.0.categories=[Unknown]", "schedule.stages.1.categories=[Unknown]"]
    out = tmp_path / "run"
    undo = _crash_in_stage_2(monkeypatch)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train.run(make_cfg_train(*both, output_dir=out), out)
    assert (out / "checkpoints/last.pt").is_file() and not (out / "metrics.json").exists()
    assert _read(out / "probe/stage1_selected.json")["selected_ids"] == _ids_in(out / "probe/stage0_pool.jsonl",
                                                                                 "Unknown")
    after_crash = _read(out / "probe/stage2_selected.json")
    assert after_crash["selected_from_probe"] == 1 and after_crash["selected_ids"]
    assert after_crash["selected_ids"] == _ids_in(out / "probe/stage1_pool.jsonl", "Unknown")

    undo()
    ckpt = f"ckpt_path={out}/checkpoints/last.pt"
    other = tmp_path / "other"
    with pytest.raises(CheckpointError, match=r"other settings of \['probe'\]"):
        train.run(make_cfg_train(*both, "probe.k_shot=3", ckpt, output_dir=other), other)
    resumed = tmp_path / "resumed"
    metrics = train.run(make_cfg_train(*both, ckpt, output_dir=resumed), resumed)
    assert _read(resumed / "probe/stage2_selected.json") == after_crash
    assert [s["stage"] for s in metrics["stages"]] == [1, 2] and len(metrics["pool_counts"]) == 3
    assert _read(resumed / "metrics.json")["knowledge_acquired"] == metrics["knowledge_acquired"]


def _stage_states(run_dir):
    import torch

    return torch.load(run_dir / "checkpoints/last.pt", map_location="cpu", weights_only=True)["stage_states"]


def _same_weights(a, b) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)


def test_a_stage_one_run_trained_is_reused_by_another_schedule_and_after_a_resume(make_cfg_train, tmp_path,
                                                                                   monkeypatch):
    """The stage cache on the tiny model (stages on Unknown questions, so they train): one_stage trains stage 1;
    two_stage with the same seed and data reuses it (weights, files and numbers the same, `reused_from` says whose)
    and trains stage 2, and ends exactly as two_stage with the cache off (the RNG goes on where the trained stage
    left it). A two_stage run stopped after its (reused) stage 1 was checkpointed resumes and reuses stage 2: the
    chain of keys is made again from the checkpoint."""
    import train
    from gradual_lightning.training import run_files

    monkeypatch.delenv("GL_STAGE_CACHE", raising=False)
    cache = tmp_path / "cache"
    on = ["stage_cache=true", f"paths.cache_dir={cache}"]
    first = ["schedule.stages.0.categories=[Unknown]"]
    both = [*first, "schedule.stages.1.categories=[Unknown]"]

    def run(name, *overrides):
        out = tmp_path / name
        return train.run(make_cfg_train(*overrides, output_dir=out), out), out

    one, one_dir = run("one", "schedule=one_stage", *first, *on)
    two, two_dir = run("two", "schedule=two_stage", *both, *on)
    assert len(list((cache / "stages").glob("*.pt"))) == 2  # stage 1 once, stage 2 once
    reused = two["stages"][0].pop("reused_from")
    assert reused["run_dir"] == str(one_dir) and reused["wall_s"] > 0 and (cache / "stages" / f"{reused['key']}.pt")\
        .is_file()
    assert "reused_from" not in one["stages"][0] and "reused_from" not in two["stages"][1]
    assert two["stages"][0] == one["stages"][0]
    for key in ("pool_counts", "test_accuracy_per_stage", "knowledge_acquired", "forgotten", "transitions"):
        assert two[key][:2] == one[key], key
    for name in ("stage0_pool.jsonl", "stage1_selected.json", "stage1_pool.jsonl"):
        assert (two_dir / "probe" / name).read_bytes() == (one_dir / "probe" / name).read_bytes(), name
    assert _read(two_dir / "probe/test_correct.json")[:2] == _read(one_dir / "probe/test_correct.json")
    one_states, two_states = _stage_states(one_dir), _stage_states(two_dir)
    assert len(two_states) == 2 and _same_weights(two_states[0], one_states[0])  # the reused stage is checkpointed

    plain, plain_dir = run("plain", "schedule=two_stage", *both, "stage_cache=false", f"paths.cache_dir={cache}")
    assert not any("reused_from" in st for st in plain["stages"])
    assert plain["stages"] == two["stages"] and plain["pool_counts"] == two["pool_counts"]
    assert all(_same_weights(a, b) for a, b in zip(_stage_states(plain_dir), two_states, strict=True))
    assert len(list((cache / "stages").glob("*.pt"))) == 2

    original = run_files.write_selection

    def stop_before_stage_2(out_dir, partition):
        if partition.stage == 1:
            raise RuntimeError("simulated stop before stage 2")
        return original(out_dir, partition)

    monkeypatch.setattr(run_files, "write_selection", stop_before_stage_2)
    with pytest.raises(RuntimeError, match="simulated stop"):
        run("stopped", "schedule=two_stage", *both, *on)
    monkeypatch.setattr(run_files, "write_selection", original)
    resumed, _ = run("resumed", "schedule=two_stage", *both, *on,
                     f"ckpt_path={tmp_path / 'stopped' / 'checkpoints' / 'last.pt'}")
    assert [st["reused_from"]["run_dir"] for st in resumed["stages"]] == [str(one_dir), str(two_dir)]
    assert resumed["pool_counts"] == two["pool_counts"]


@pytest.mark.slow  # ~100 s (real model, two stages, twice); its mechanics run fast on the tiny model above
def test_two_stage_smoke_run_repartitions_at_the_boundary_and_resumes_after_a_crash(compose, tmp_path, monkeypatch):
    """One real run of the smoke preset (SmolLM2-135M), crashed at the start of stage 2, then resumed."""
    import train
    from gradual_lightning.training.checkpoint import CheckpointError

    out = tmp_path / "run"
    undo = _crash_in_stage_2(monkeypatch)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train.run(compose(FAST, output_dir=out), out)
    assert (out / "checkpoints/last.pt").is_file() and not (out / "metrics.json").exists()
    # stage 1 trained on the base model's MaybeKnown questions
    assert _read(out / "probe/stage1_selected.json")["selected_ids"] == _ids_in(out / "probe/stage0_pool.jsonl",
                                                                                 "MaybeKnown")
    # stage 2's selection came from the re-probe after stage 1 (the boundary re-partitioned the pool)
    after_crash = _read(out / "probe/stage2_selected.json")
    assert after_crash["selected_from_probe"] == 1
    assert after_crash["selected_ids"] == _ids_in(out / "probe/stage1_pool.jsonl", "MaybeKnown")

    undo()
    # a resume with settings that decided the earlier stages' results fails, naming them
    other = out.parent / "other"
    with pytest.raises(CheckpointError, match=r"other settings of \['probe'\]"):
        train.run(compose([*FAST, "probe.k_shot=3", f"ckpt_path={out}/checkpoints/last.pt"],
                          output_dir=other), other)
    resumed = out.parent / "resumed"
    metrics = train.run(compose([*FAST, f"ckpt_path={out}/checkpoints/last.pt"], output_dir=resumed), resumed)
    # the resumed run trains stage 2 on exactly the partition the crashed run had drawn
    assert _read(resumed / "probe/stage2_selected.json") == after_crash
    assert len(metrics["pool_counts"]) == 3 and len(metrics["transitions"]) == 3
    assert [s["stage"] for s in metrics["stages"]] == [1, 2]
    for key in ("test_accuracy", "retention", "knowledge_acquired", "incremental_gain", "forgotten",
                "knowledge_acquired_trained", "knowledge_acquired_untrained", "test_accuracy_by_base_category"):
        assert key in metrics
    n_pool = sum(metrics["pool_counts"][0].values())
    assert all(sum(sum(row) for row in m) == n_pool for m in metrics["transitions"])
    on_disk = _read(resumed / "metrics.json")
    assert on_disk["knowledge_acquired"] == metrics["knowledge_acquired"]
    run = _read(resumed / "run.json")
    assert run["seed"] == 0 and run["packages"]["torch"] and run["data_fingerprint"] and run["config"]["schedule"]


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_shards_the_reprobe_and_agrees_on_the_next_stage(tmp_path):
    """trainer=ddp with 2 gloo ranks: rank 1 reads the base probe from the cache rank 0 wrote, each rank re-probes
    its shard, the gathered categories give both ranks the same stage-2 partition, and rank 0 writes the results."""
    import os
    import subprocess
    import sys

    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "GL_PROBE_CACHE": str(tmp_path / "cache")}
    cached = [o for o in FAST if not o.startswith("cache=")]  # the cache is what rank 1 reads the base probe from
    cmd = [sys.executable, "train.py", *cached, "data.num_test=12", "trainer=ddp", "trainer.accelerator=cpu",
           "trainer.devices=2", "logger=none", f"hydra.run.dir={out}"]
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    rank0, rank1 = (out / "train.log").read_text(), (out / "train_ddp_process_1.log").read_text()
    assert "base probe pool: 48 results from cache" in rank1
    for rank, text in ((0, rank0), (1, rank1)):
        assert f"stage 1 re-probe: rank {rank} of 2 probes its shard of 48 pool questions" in text
    stage2 = [[line.split(" - ", 1)[1] for line in text.splitlines() if "stage 2/2:" in line]
              for text in (rank0, rank1)]
    assert stage2[0] == stage2[1] and len(stage2[0]) == 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert sum(metrics["pool_counts"][1].values()) == 48
    assert len((out / "probe" / "stage1_pool.jsonl").read_text().splitlines()) == 48


# ---- sibling methods (issue 12): known_patch, unknown_mix, curriculum ----------------------------------------------

@pytest.mark.parametrize("overrides", [["schedule=known_patch"], ["schedule=unknown_mix"], ["schedule=curriculum"],
                                       ["schedule=two_stage", "+schedule.known_patch.size=5"],
                                       ["schedule=curriculum", "schedule.order_by=latest", "reprobe.num_samples=2"]])
def test_sibling_methods_validate_under_debug_smoke(compose, tmp_path, overrides):
    import train

    schedule = train.validate(compose(["debug=smoke", *overrides], output_dir=tmp_path))[0]
    assert all(st.epochs == 1 for st in schedule.stages)


def test_a_curriculum_selecting_weakly_known_from_greedy_reprobes_fails_before_any_model_is_loaded(
        compose, tmp_path, monkeypatch):
    import train
    from gradual_lightning.training.schedules import ScheduleError

    monkeypatch.setattr(train, "load_model", lambda *a, **k: pytest.fail("model loaded before validation"))
    cfg = compose(["debug=smoke", "schedule=curriculum", "schedule.order_by=latest"], output_dir=tmp_path)
    with pytest.raises(ScheduleError, match=r"'curriculum', stage 2, field 'categories'.*reprobe.num_samples"):
        train.run(cfg, tmp_path)


def test_a_tiny_curriculum_with_a_known_patch_trains_each_stage_on_its_selection(make_cfg_train, tmp_path):
    """The tiny model knows nothing (every question Unknown): a curriculum HighlyKnown -> Unknown has nothing to train
    in stage 1 (the empty-stage path) and the whole pool in stage 2; a known_patch added to it (here on Unknown,
    since nothing is HighlyKnown) trains a sample of 2 questions, drawn from the re-probe after stage 2."""
    import train

    out = tmp_path / "run"
    metrics = train.run(make_cfg_train("schedule=curriculum", "schedule.order=[HighlyKnown,Unknown]",
                                       "+schedule.known_patch={categories:[Unknown],size:2}", output_dir=out), out)
    pool = _ids_in(out / "probe/stage0_pool.jsonl", "Unknown")
    assert len(pool) == 6
    assert _read(out / "probe/stage1_selected.json")["selected_ids"] == []
    assert _read(out / "probe/stage2_selected.json")["selected_ids"] == pool
    patch = _read(out / "probe/stage3_selected.json")
    assert patch["selected_from_probe"] == 2 and len(patch["selected_ids"]) == 2
    assert set(patch["selected_ids"]) <= set(_ids_in(out / "probe/stage2_pool.jsonl", "Unknown"))
    assert [s["n_selected"] for s in metrics["stages"]] == [0, 6, 2]
    assert [s["config"]["base_categories"] for s in metrics["stages"][:2]] == [["HighlyKnown"], ["Unknown"]]
    assert metrics["stages"][2]["config"]["size"] == 2


def test_a_tiny_unknown_mix_trains_a_fixed_size_and_names_the_counts_when_the_pool_lacks_them(make_cfg_train,
                                                                                             tmp_path):
    import train

    out = tmp_path / "run"
    metrics = train.run(make_cfg_train("schedule=unknown_mix", "schedule.unknown_ratio=1.0", "schedule.size=4",
                                       output_dir=out), out)
    selected = _read(out / "probe/stage1_selected.json")["selected_ids"]
    assert len(selected) == 4 and set(selected) <= set(_ids_in(out / "probe/stage0_pool.jsonl", "Unknown"))
    assert metrics["stages"][0]["n_selected"] == 4
    short = tmp_path / "short"
    with pytest.raises(ValueError, match=r"field 'size': 4 questions at unknown_ratio 0.5 need 2 Unknown and 2 "
                                         r".*base probe has 6 and 0"):
        train.run(make_cfg_train("schedule=unknown_mix", "schedule.size=4", output_dir=short), short)
