"""KnowledgeLedger without Lightning: selection, base restriction, replay, repeated stages, metrics, resume."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from gradual_lightning.training import KnowledgeLedger, Partition, Stage
from gradual_lightning.training.schedules import from_config

CATS = ["HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown"]
IDS = [f"q{i}" for i in range(40)]
BASE = {q: CATS[i % 4] for i, q in enumerate(IDS)}  # 10 of each
NOW = {**BASE, "q1": "HighlyKnown", "q2": "MaybeKnown"}  # q1 MK -> HK, q2 WK -> MK
TEST = {"t0": "HighlyKnown", "t1": "MaybeKnown", "t2": "Unknown"}


def _ledger() -> KnowledgeLedger:
    ledger = KnowledgeLedger(IDS)
    ledger.record_base(BASE, TEST, {"t0": True, "t1": False, "t2": False})
    return ledger


def _run(ledger, stage, pool, *, correct=None, epochs=1):
    part = ledger.select(stage)
    trained = part.trained_ids(epochs, seed=7, batch_size=4) if part else set()
    ledger.record(stage, part, pool=pool, test_correct=correct or {"t0": True, "t1": True, "t2": False},
                  trained_ids=trained, dev={"dev_accuracy": 0.5, "dev_accuracy_per_epoch": [0.5], "kept_epoch": 0})
    return part


def test_selects_by_category_from_the_latest_probe_only_when_the_stage_reprobes():
    ledger = _ledger()
    first = _run(ledger, Stage(categories=("MaybeKnown",)), NOW)
    assert list(first.selected_ids) == [q for q in IDS if BASE[q] == "MaybeKnown"] and first.selected_from_probe == 0
    same_probe = ledger.select(Stage(categories=("MaybeKnown",), index=1))  # no reprobe: still the base probe
    assert same_probe.selected_ids == first.selected_ids and same_probe.selected_from_probe == 0
    fresh = ledger.select(Stage(categories=("MaybeKnown",), reprobe=True, index=1))
    assert "q1" not in fresh.selected_ids and "q2" in fresh.selected_ids and fresh.selected_from_probe == 1


def test_base_categories_previous_and_all():
    ledger = KnowledgeLedger(IDS)
    ledger.record_base(BASE, TEST, {})
    part = ledger.select(Stage(categories=("MaybeKnown", "HighlyKnown"), base_categories=("MaybeKnown",)))
    assert set(part.selected_ids) == {q for q in IDS if BASE[q] == "MaybeKnown"}
    ledger.record(Stage(categories=("MaybeKnown",)), part, pool=NOW, test_correct={}, trained_ids=set())
    again = ledger.select(Stage(select="previous", index=1))
    assert again.selected_ids == part.selected_ids
    assert list(ledger.select(Stage(select="all", index=1)).selected_ids) == IDS


def test_select_needs_the_base_probe_and_previous_needs_a_stage():
    with pytest.raises(RuntimeError, match="base probe"):
        KnowledgeLedger(IDS).select(Stage(categories=("MaybeKnown",)))
    with pytest.raises(ValueError, match="previous"):
        _ledger().select(Stage(select="previous", index=1))


def test_newly_selected_counts_questions_no_stage_selected_before():
    ledger = _ledger()
    stage = Stage(categories=("MaybeKnown",), reprobe=True)
    assert ledger.newly_selected(stage) == 10
    _run(ledger, stage, NOW)
    assert ledger.newly_selected(stage) == 1  # q2 became MaybeKnown
    _run(ledger, Stage(categories=("MaybeKnown",), reprobe=True, index=1), NOW)
    assert ledger.newly_selected(stage) == 0


def test_n_stage_repeats_while_new_questions_appear_and_stops_when_stable():
    schedule = from_config(OmegaConf.load(Path(__file__).resolve().parents[1] / "conf/schedule/n_stage.yaml"))
    ledger = _ledger()
    ran = []
    probes = iter([NOW, NOW, NOW])  # after stage 2 nothing new: stage 3 is not run
    for stage in schedule.stages_from(0, ledger.newly_selected):
        ran.append(stage.index)
        _run(ledger, stage, next(probes))
    assert ran == [0, 1]
    # a resume after stage 1 picks up at index 1 without any marker value
    resumed = _ledger()
    _run(resumed, schedule.stages[0], NOW)
    assert [s.index for s in schedule.stages_from(1, resumed.newly_selected)][:1] == [1]


def test_replay_from_the_selection_probe_capped_by_candidates_and_redrawn_per_epoch():
    ledger = _ledger()
    part = ledger.select(Stage(categories=("MaybeKnown",), replay_ratio=0.2))
    assert part.n_replay == 2 and set(part.replay_pool_ids) == {q for q in IDS if BASE[q] == "HighlyKnown"}
    p0, p0_again, p1 = (part.epoch_plan(e, seed=7, batch_size=4) for e in (0, 0, 1))
    assert p0 == p0_again and p0 != p1
    replays = {tuple(sorted(q for b in part.epoch_plan(e, seed=7, batch_size=4) for q in b
                            if q in part.replay_pool_ids)) for e in range(6)}
    assert len(replays) > 1  # a fresh replay sample per epoch
    capped = ledger.select(Stage(categories=("Unknown", "WeaklyKnown", "MaybeKnown"), replay_ratio=1.0))
    assert capped.n_replay == 10  # only 10 HighlyKnown exist
    step = ledger.select(Stage(categories=("MaybeKnown",), replay_ratio=0.5, replay_every="step"))
    plan = step.epoch_plan(0, seed=7, batch_size=4)
    assert sum(q in step.replay_pool_ids for b in plan for q in b) == 5
    assert all(any(q in step.replay_pool_ids for q in b) for b in plan)  # spread over the batches


def test_trained_ids_are_owned_by_the_ledger_and_split_acquired_knowledge():
    ledger = _ledger()
    part = _run(ledger, Stage(categories=("MaybeKnown",), replay_ratio=0.2), NOW, epochs=2)
    assert set(part.selected_ids) <= ledger.trained_ids
    assert ledger.trained_ids == part.trained_ids(2, seed=7, batch_size=4)
    rec = ledger.stage_record(1)
    assert rec["knowledge_acquired"] == 1 and rec["knowledge_acquired_trained"] == 1  # q1 was trained on
    assert rec["knowledge_acquired_untrained"] == 0


def test_metrics_from_the_ledger():
    ledger = _ledger()
    _run(ledger, Stage(categories=("MaybeKnown",)), NOW)
    later = {**NOW, "q0": "MaybeKnown", "q5": "HighlyKnown"}  # q0 HK forgotten, q5 MK -> HK
    _run(ledger, Stage(categories=("MaybeKnown",), reprobe=True, index=1), later, correct={"t0": False, "t1": True})
    m = ledger.metrics()
    assert m["knowledge_acquired"] == [0, 1, 1] and m["forgotten"] == [0, 0, 1]
    assert m["test_accuracy_per_stage"] == [pytest.approx(1 / 3), pytest.approx(2 / 3), 0.5]
    assert m["retention"] == 0.0 and m["dev_accuracy"] == 0.5 and m["dev_accuracy_per_stage"] == [0.5, 0.5]
    assert [s["stage"] for s in m["stages"]] == [1, 2] and m["stages"][1]["selected_from_probe"] == 1
    assert m["pool_counts"][0] == {c: 10 for c in CATS}


def test_state_dict_is_plain_and_round_trips():
    ledger = _ledger()
    _run(ledger, Stage(categories=("MaybeKnown",), replay_ratio=0.2), NOW)
    state = ledger.state_dict()
    assert OmegaConf.to_container(OmegaConf.create(state)) == state  # plain containers only
    fresh = KnowledgeLedger(IDS)
    fresh.load_state_dict(state)
    assert fresh.metrics() == ledger.metrics()
    stage = Stage(categories=("MaybeKnown",), reprobe=True, index=1)
    assert fresh.select(stage) == ledger.select(stage)
    with pytest.raises(ValueError, match="another training pool"):
        KnowledgeLedger(IDS[:5]).load_state_dict(state)


def test_an_empty_partition_is_falsy():
    assert not Partition(0, ())
    assert Partition(0, ("q1",))


# ---- sibling methods (issue 12): known_patch, unknown_mix, curriculum ----------------------------------------------

def _preset(name, **top):
    conf = OmegaConf.load(Path(__file__).resolve().parents[1] / f"conf/schedule/{name}.yaml")
    return from_config(OmegaConf.merge(conf, top) if top else conf)


def test_known_patch_trains_a_seeded_sample_of_the_questions_highly_known_after_the_last_stage():
    schedule = _preset("known_patch")
    ledger = KnowledgeLedger(IDS, seed=3)
    ledger.record_base(BASE, TEST, {})
    first = _run(ledger, schedule.stages[0], NOW)
    assert set(first.selected_ids) == {q for q in IDS if BASE[q] == "MaybeKnown"}
    patch = ledger.select(schedule.stages[1])
    highly_now = {q for q in IDS if NOW[q] == "HighlyKnown"}  # 11: q1 became HighlyKnown in stage 1
    assert patch.selected_from_probe == 1 and set(patch.selected_ids) <= highly_now
    assert len(patch.selected_ids) == 1  # 10% of 11, rounded
    assert list(patch.selected_ids) == [q for q in IDS if q in patch.selected_ids]  # pool order
    draws = set()
    for seed in range(8):  # the draw follows the run's seed, and only it
        again = KnowledgeLedger(IDS, seed=seed)
        again.load_state_dict(ledger.state_dict())
        draws.add(again.select(schedule.stages[1]).selected_ids)
        assert again.select(schedule.stages[1]) == again.select(schedule.stages[1])
    assert len(draws) > 1


def test_a_count_larger_than_the_selection_takes_it_all():
    ledger = _ledger()
    assert len(ledger.select(Stage(categories=("HighlyKnown",), size=4)).selected_ids) == 4
    assert len(ledger.select(Stage(categories=("HighlyKnown",), size=0.5)).selected_ids) == 5
    assert len(ledger.select(Stage(categories=("HighlyKnown",), size=25)).selected_ids) == 10


@pytest.mark.parametrize("ratio, n_unknown", [(0.0, 0), (0.25, 2), (0.5, 4), (1.0, 8)])
def test_unknown_mix_draws_a_fixed_size_with_the_chosen_share_of_unknown(ratio, n_unknown):
    stage = _preset("unknown_mix", unknown_ratio=ratio, size=8).stages[0]
    part = _ledger().select(stage)
    cats = [BASE[q] for q in part.selected_ids]
    assert len(cats) == 8 and cats.count("Unknown") == n_unknown
    assert set(cats) - {"Unknown"} <= {"HighlyKnown", "MaybeKnown", "WeaklyKnown"}


def test_unknown_mix_fails_naming_the_counts_when_the_pool_is_too_small():
    stage = _preset("unknown_mix", unknown_ratio=0.5, size=30).stages[0]
    with pytest.raises(ValueError, match=r"'unknown_mix', stage 0, field 'size': 30 questions at unknown_ratio 0.5 "
                                         r"need 15 Unknown and 15 .*base probe has 10 and 30.*at most size=20"):
        _ledger().select(stage)
    only_known = _preset("unknown_mix", unknown_ratio=0.0, size=31).stages[0]
    with pytest.raises(ValueError, match=r"need 0 Unknown and 31 .* has 10 and 30.*at most size=30"):
        _ledger().select(only_known)


def _curriculum_run(schedule, probes):
    ledger = _ledger()
    parts = [_run(ledger, stage, next(probes)) for stage in schedule.stages_from(0, ledger.newly_selected)]
    return ledger, parts


def test_curriculum_by_base_category_trains_each_category_in_its_turn():
    ledger, parts = _curriculum_run(_preset("curriculum"), iter([NOW, NOW, NOW]))
    assert [{BASE[q] for q in p.selected_ids} for p in parts] == [{"HighlyKnown"}, {"MaybeKnown"}, {"WeaklyKnown"}]
    assert [len(p.selected_ids) for p in parts] == [10, 10, 10]  # q1 (MK -> HK in the probes) stays in stage 2


def test_curriculum_by_latest_probe_follows_what_the_model_knows_now():
    schedule = _preset("curriculum", order=["MaybeKnown", "HighlyKnown", "Unknown"], order_by="latest")
    later = {**NOW, "q5": "HighlyKnown", "q3": "MaybeKnown"}  # after stage 2: q5 MK -> HK, q3 Unknown -> MK
    ledger, parts = _curriculum_run(schedule, iter([NOW, later, later]))
    assert set(parts[0].selected_ids) == {q for q in IDS if BASE[q] == "MaybeKnown"}
    assert set(parts[1].selected_ids) == {q for q in IDS if NOW[q] == "HighlyKnown"} and "q1" in parts[1].selected_ids
    assert set(parts[2].selected_ids) == {q for q in IDS if later[q] == "Unknown"} and "q3" not in parts[2].selected_ids
    assert [p.selected_from_probe for p in parts] == [0, 1, 2]
def test_abstain_categories_add_their_questions_with_the_abstention_text():
    ledger = KnowledgeLedger(IDS, abstention_text="No idea")
    ledger.record_base(BASE, TEST, {})
    part = ledger.select(Stage(categories=("MaybeKnown",), abstain_categories=("Unknown",), replay_ratio=0.2))
    unknown = tuple(q for q in IDS if BASE[q] == "Unknown")
    assert part.selected_ids == tuple(q for q in IDS if BASE[q] == "MaybeKnown") and part.abstain_ids == unknown
    assert part.answers() == dict.fromkeys(unknown, "No idea")
    assert not set(part.replay_pool_ids) & set(unknown)
    plan = part.epoch_plan(0, seed=7, batch_size=4)
    assert set(unknown) <= {q for b in plan for q in b} and sum(map(len, plan)) == 10 + 10 + 2
    assert part.summary()["n_abstain"] == 10
    # select=all: the abstaining questions are taken out of the gold-answer selection
    everything = ledger.select(Stage(select="all", abstain_categories=("Unknown",)))
    assert everything.abstain_ids == unknown and not set(everything.selected_ids) & set(unknown)
    assert len(everything.selected_ids) == 30
    # an abstaining stage alone trains something even when its selection is empty
    only = ledger.select(Stage(categories=("MaybeKnown",), base_categories=("Unknown",),
                               abstain_categories=("Unknown",)))
    assert not only.selected_ids and only and only.abstain_ids == unknown


def test_previous_reuses_the_abstentions_and_the_state_round_trips():
    ledger = _ledger()
    stage = Stage(categories=("MaybeKnown",), abstain_categories=("Unknown",))
    first = _run(ledger, stage, NOW)
    again = ledger.select(Stage(select="previous", index=1))
    assert again.abstain_ids == first.abstain_ids and again.selected_ids == first.selected_ids
    assert set(first.abstain_ids) <= ledger.trained_ids  # abstentions are trained on
    state = ledger.state_dict()
    assert OmegaConf.to_container(OmegaConf.create(state)) == state
    fresh = KnowledgeLedger(IDS)
    fresh.load_state_dict(state)
    assert fresh.stages[0].partition == first and fresh.metrics() == ledger.metrics()


def _p_values(ids):
    return {q: [i / 40, None if i % 8 == 1 else 0.5] for i, q in enumerate(ids)}  # half the MaybeKnown unsampled


def test_loss_weights_from_the_probe_the_stage_selects_from():
    ledger = _ledger()
    ledger.base_pool_p = _p_values(IDS)
    weights = {"HighlyKnown": 0.5, "MaybeKnown": 2.0, "WeaklyKnown": 1.0, "Unknown": 0.0}
    part = ledger.select(Stage(select="all", loss_weights={"by": "category", "weights": weights}))
    assert part.weights == {q: weights[BASE[q]] for q in IDS}
    by_p = ledger.select(Stage(categories=("MaybeKnown",), replay_ratio=0.2,
                               loss_weights={"by": "p_greedy", "a": 1.0, "b": 2.0}))
    assert set(by_p.weights) == set(by_p.selected_ids) | set(by_p.replay_pool_ids)  # replay draws are weighed too
    assert by_p.weights["q5"] == 1.0 + 2.0 * 5 / 40
    assert ledger.select(Stage(categories=("MaybeKnown",))).weights is None
    # a re-probing stage weighs by the new probe's values
    _run(ledger, Stage(categories=("MaybeKnown",)), NOW)
    ledger.stages[-1].pool_p = {q: [1.0, None] for q in IDS}
    after = ledger.select(Stage(categories=("MaybeKnown",), reprobe=True, index=1,
                                loss_weights={"by": "p_greedy", "a": 1.0, "b": 2.0}))
    assert set(after.weights.values()) == {3.0}


def test_loss_weights_fail_naming_the_stage_when_values_are_missing_or_all_zero():
    from gradual_lightning.training.schedules import ScheduleError

    ledger = _ledger()
    ledger.base_pool_p = _p_values(IDS)
    with pytest.raises(ScheduleError, match=r"stage 0, field 'loss_weights': by=p_sampled .* 5 of 10 have none"):
        ledger.select(Stage(categories=("MaybeKnown",), loss_weights={"by": "p_sampled", "b": 1.0}))
    with pytest.raises(ScheduleError, match="every one of the stage's 10 questions weighs 0"):
        ledger.select(Stage(categories=("Unknown",), loss_weights={"by": "category", "weights": {"Unknown": 0}}))


def test_abstention_metrics_by_base_category():
    ledger = KnowledgeLedger(IDS)
    ledger.record_base(BASE, TEST, {"t0": True, "t1": False, "t2": False},
                       test_answers={"t0": "Paris", "t1": "Rome", "t2": "Oslo"})
    stage = Stage(categories=("MaybeKnown",), abstain_categories=("Unknown",))
    part = ledger.select(stage)
    ledger.record(stage, part, pool=NOW, test_correct={"t0": True, "t1": False, "t2": False}, trained_ids=set(),
                  test_answers={"t0": "Paris", "t1": "Lyon", "t2": "I don't know."})
    m = ledger.metrics()
    assert m["test_abstention_rate_per_stage"] == [0.0, pytest.approx(1 / 3)]
    assert m["test_hallucination_rate_per_stage"] == [pytest.approx(2 / 3), pytest.approx(1 / 3)]
    assert m["test_abstention_by_base_category"] == {"HighlyKnown": 0.0, "MaybeKnown": 0.0, "Unknown": 1.0}
    assert m["test_hallucination_by_base_category"] == {"HighlyKnown": 0.0, "MaybeKnown": 1.0, "Unknown": 0.0}
    assert m["test_accuracy_answered"] == 0.5 and m["abstention_text"] == "I don't know"
    # a ledger without answers (a checkpoint from before answers were kept) has no rates, and no error
    old = _ledger()
    _run(old, Stage(categories=("MaybeKnown",)), NOW)
    assert old.metrics()["test_abstention_rate"] is None and old.metrics()["test_hallucination_rate"] is None
