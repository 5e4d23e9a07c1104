"""Schedule validation: every mistake names the schedule, stage, field and bad value; every preset validates."""

import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from gradual_lightning.training.schedules import Schedule, ScheduleError, Stage, from_config

CONF = Path(__file__).resolve().parents[1] / "conf"
PRESETS = sorted(p.stem for p in (CONF / "schedule").glob("*.yaml"))


def _schedule(*stages, **top):
    return {"name": "mine", "stages": list(stages), **top}


def _err(cfg) -> str:
    with pytest.raises(ScheduleError) as e:
        from_config(cfg)
    return str(e.value)


def test_presets_exist():
    assert {"two_stage", "one_stage", "natural", "category", "n_stage", "two_stage_control"} <= set(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_validates(name):
    s = from_config(OmegaConf.load(CONF / "schedule" / f"{name}.yaml"))
    assert isinstance(s, Schedule) and s.name == name and s.num_stages >= 1
    assert all(isinstance(st, Stage) for st in s.stages)


def test_two_stage_matches_the_paper_recipe():
    s = from_config(OmegaConf.load(CONF / "schedule" / "two_stage.yaml"))
    one, two = s.stages
    assert one.categories == ("MaybeKnown",) and not one.reprobe and one.replay_ratio == 0
    assert two.reprobe and two.merge_adapter and two.replay_ratio == 0.2 and two.replay_categories == ("HighlyKnown",)
    ctrl = from_config(OmegaConf.load(CONF / "schedule" / "two_stage_control.yaml")).stages[1]
    assert ctrl.select == "previous" and not ctrl.reprobe and ctrl.replay_ratio == 0 and ctrl.merge_adapter


def test_category_preset_follows_cli_override():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(overrides=["+schedule=category", "schedule.category=Unknown"])
    s = from_config(cfg.schedule)
    assert s.stages[0].categories == ("Unknown",)
    assert from_config(OmegaConf.load(CONF / "schedule" / "category.yaml")).stages[0].categories == ("MaybeKnown",)


def test_n_stage_repeats_until_stable():
    s = from_config(OmegaConf.load(CONF / "schedule" / "n_stage.yaml"))
    assert s.num_stages == 3
    assert s.stage_at(1) is s.stages[1]
    third = s.stage_at(2, newly_selected=5)
    assert third is not None and third.index == 2 and third.merge_adapter and third.reprobe
    assert s.stage_at(2, newly_selected=0) is None
    assert s.stage_at(3, newly_selected=5) is None
    with pytest.raises(ValueError, match="newly_selected"):
        s.stage_at(2)


def test_max_stages_truncates_a_plain_schedule():
    s = from_config(OmegaConf.load(CONF / "schedule" / "two_stage.yaml"))
    assert s.stage_at(2) is None
    cut = from_config({**OmegaConf.to_container(OmegaConf.load(CONF / "schedule" / "two_stage.yaml")),
                       "max_stages": 1})
    assert cut.num_stages == 1 and cut.stage_at(1) is None


def test_unknown_category():
    msg = _err(_schedule({"categories": ["MaybeKnwon"]}))
    assert "'mine'" in msg and "stage 0" in msg and "'categories'" in msg and "'MaybeKnwon'" in msg


def test_unknown_base_and_replay_category():
    msg = _err(_schedule({"categories": ["MaybeKnown"]},
                         {"categories": ["MaybeKnown"], "replay_ratio": 0.1, "replay_categories": ["Known"]}))
    assert "stage 1" in msg and "'replay_categories'" in msg and "'Known'" in msg
    msg = _err(_schedule({"categories": ["MaybeKnown"], "base_categories": ["Nope"]}))
    assert "'base_categories'" in msg and "'Nope'" in msg


def test_negative_replay_ratio():
    msg = _err(_schedule({"categories": ["MaybeKnown"]}, {"categories": ["MaybeKnown"], "replay_ratio": -0.2}))
    assert "stage 1" in msg and "'replay_ratio'" in msg and "-0.2" in msg


def test_previous_on_stage_zero():
    msg = _err(_schedule({"select": "previous"}))
    assert "stage 0" in msg and "'select'" in msg and "previous" in msg


def test_zero_epochs_and_bad_lr():
    msg = _err(_schedule({"categories": ["Unknown"], "epochs": 0}))
    assert "stage 0" in msg and "'epochs'" in msg and "got 0" in msg
    msg = _err(_schedule({"categories": ["Unknown"], "lr": 0.0}))
    assert "'lr'" in msg and "got 0.0" in msg


def test_unknown_keys():
    msg = _err(_schedule({"categories": ["Unknown"], "epoch": 3}))
    assert "'mine'" in msg and "stage 0" in msg and "'epoch'" in msg and "allowed" in msg
    msg = _err(_schedule({"categories": ["Unknown"]}, stagez=[]))
    assert "'mine'" in msg and "'stagez'" in msg


def test_bad_enums_and_combinations():
    assert "'keep'" in _err(_schedule({"categories": ["Unknown"], "keep": "first"}))
    assert "'replay_every'" in _err(_schedule({"categories": ["Unknown"], "replay_every": "batch"}))
    assert "'select'" in _err(_schedule({"select": "some"}))
    assert "'merge_adapter'" in _err(_schedule({"categories": ["Unknown"], "merge_adapter": True}))
    msg = _err(_schedule({"select": "all", "categories": ["Unknown"]}))
    assert "'categories'" in msg and "select=categories" in msg
    msg = _err(_schedule({"categories": ["Unknown"]},
                         {"categories": ["Unknown"], "merge_adapter": True, "reset_optimizer": False}))
    assert "stage 1" in msg and "'reset_optimizer'" in msg
    msg = _err(_schedule({"categories": ["Unknown"]}, repeat_until_stable=True, max_stages=3))
    assert "'repeat_until_stable'" in msg and "reprobe" in msg
    assert "'max_stages'" in _err(_schedule({"categories": ["Unknown"]}, max_stages=0))
    assert "'stages'" in _err({"name": "empty", "stages": []})


def test_to_dict_is_plain_and_round_trips():
    s = from_config(OmegaConf.load(CONF / "schedule" / "two_stage.yaml"))
    d = s.to_dict()
    assert OmegaConf.to_container(OmegaConf.create(d)) == d
    assert from_config(d) == s


def test_stage_overrides_set_a_field_in_every_stage_and_keep_the_stages():
    two = OmegaConf.load(CONF / "schedule" / "two_stage.yaml")
    s = from_config(two, OmegaConf.create({"epochs": 1, "lr": 1e-3}))
    assert [(st.epochs, st.lr) for st in s.stages] == [(1, 1e-3), (1, 1e-3)]
    assert s.stages[1].reprobe and s.stages[1].replay_ratio == 0.2  # everything else is the schedule's
    assert from_config(OmegaConf.load(CONF / "schedule" / "one_stage.yaml"), {"epochs": 1}).num_stages == 1
    assert from_config(two, {}).stages[0].epochs == from_config(two).stages[0].epochs
    with pytest.raises(ScheduleError, match=r"stage_overrides: unknown key\(s\) \['epoch'\]"):
        from_config(two, {"epoch": 1})
    with pytest.raises(ScheduleError, match="field 'epochs'"):
        from_config(two, {"epochs": 0})


# ---- sibling methods (issue 12): known_patch, unknown_mix, curriculum ----------------------------------------------

def _preset(name):
    return OmegaConf.to_container(OmegaConf.load(CONF / "schedule" / f"{name}.yaml"), resolve=True)


def test_known_patch_appends_a_short_stage_on_a_sample_of_highly_known_to_any_schedule():
    s = from_config(_preset("known_patch"))
    first, patch = s.stages
    assert first.categories == ("MaybeKnown",) and patch.index == 1
    assert (patch.categories, patch.size, patch.reprobe, patch.merge_adapter, patch.epochs, patch.lr) == \
        (("HighlyKnown",), 0.1, True, True, 1, first.lr)  # lr: null -> the last stage's
    two = from_config({**_preset("two_stage"), "known_patch": {"size": 5, "lr": 1e-5}})
    assert len(two.stages) == 3 and two.stages[2].size == 5 and two.stages[2].lr == 1e-5
    assert two.stages[:2] == from_config(_preset("two_stage")).stages
    assert from_config(two.to_dict()) == two  # the patch is a plain stage in run records and checkpoints


def test_known_patch_under_stage_overrides_keeps_command_line_fields():
    from gradual_lightning.training.schedules import explicit_stage_fields

    cfg = {**_preset("known_patch"), "known_patch": {"size": 0.1, "lr": 3e-5}}
    assert from_config(cfg, {"epochs": 1, "lr": 1e-3}).stages[1].lr == 1e-3  # smoke shortens the patch too
    explicit = explicit_stage_fields(["schedule.known_patch.lr=3e-5"])
    assert from_config(cfg, {"lr": 1e-3}, explicit=explicit).stages[1].lr == 3e-5
    assert from_config(cfg, {"lr": 1e-3}, explicit=explicit_stage_fields(["+schedule.known_patch={lr:3e-5}"])
                       ).stages[1].lr == 3e-5


def test_known_patch_mistakes_name_the_field():
    msg = _err({**_preset("one_stage"), "known_patch": {"size": 1.5}})
    assert "known_patch" in msg and "stage 1" in msg and "'size'" in msg and "1.5" in msg
    msg = _err({**_preset("one_stage"), "known_patch": {"sise": 3}})
    assert "'known_patch'" in msg and "'sise'" in msg
    assert "'known_patch'" in _err({**_preset("one_stage"), "known_patch": 0.1})
    msg = _err({**_preset("n_stage"), "known_patch": {}})
    assert "'known_patch'" in msg and "repeat_until_stable" in msg
    assert "max_stages" in _err({**_preset("two_stage"), "max_stages": 2, "known_patch": {}})
    assert "'categories'" in _err({**_preset("one_stage"), "known_patch": {"categories": ["Known"]}})


def test_size_and_unknown_ratio_are_validated():
    assert "'size'" in _err(_schedule({"categories": ["HighlyKnown"], "size": 0}))
    assert "'size'" in _err(_schedule({"categories": ["HighlyKnown"], "size": True}))
    assert "'size'" in _err(_schedule({"categories": ["Unknown"]}, {"select": "previous", "size": 3}))
    for bad in (1.5, -0.1, "half"):
        msg = _err(_schedule({"categories": ["MaybeKnown"], "size": 10, "unknown_ratio": bad}))
        assert "stage 0" in msg and "'unknown_ratio'" in msg and "[0, 1]" in msg and repr(bad) in msg
    msg = _err(_schedule({"categories": ["MaybeKnown", "Unknown"], "size": 10, "unknown_ratio": 0.5}))
    assert "'categories'" in msg and "Unknown" in msg
    msg = _err(_schedule({"categories": ["MaybeKnown"], "size": 0.5, "unknown_ratio": 0.5}))
    assert "'size'" in msg and "integer" in msg
    assert "'unknown_ratio'" in _err(_schedule({"select": "all", "size": 4, "unknown_ratio": 0.5}))


def test_unknown_mix_takes_its_ratio_from_the_command_line():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(overrides=["+schedule=unknown_mix", "schedule.unknown_ratio=0.25", "schedule.size=12"])
    (stage,) = from_config(cfg.schedule).stages
    assert (stage.unknown_ratio, stage.size) == (0.25, 12) and "Unknown" not in stage.categories
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        bad = compose(overrides=["+schedule=unknown_mix", "schedule.unknown_ratio=2"])
    with pytest.raises(ScheduleError, match=r"'unknown_mix', stage 0, field 'unknown_ratio'.*got 2"):
        from_config(bad.schedule)


def test_curriculum_expands_order_into_one_stage_per_category():
    s = from_config(_preset("curriculum"))
    assert [st.base_categories for st in s.stages] == [("HighlyKnown",), ("MaybeKnown",), ("WeaklyKnown",)]
    assert all(st.select == "all" for st in s.stages) and [st.merge_adapter for st in s.stages] == [False, True, True]
    latest = from_config({**_preset("curriculum"), "order": ["MaybeKnown", "Unknown"], "order_by": "latest"})
    assert [(st.select, st.categories, st.reprobe) for st in latest.stages] == \
        [("categories", ("MaybeKnown",), False), ("categories", ("Unknown",), True)]
    assert from_config(latest.to_dict()) == latest


def test_curriculum_mistakes_name_the_field():
    cur = _preset("curriculum")
    msg = _err({**cur, "order": ["HighlyKnown", "Known"]})
    assert "'curriculum'" in msg and "'order'" in msg and "'Known'" in msg
    assert "twice" in _err({**cur, "order": ["MaybeKnown", "MaybeKnown"]})
    assert "'order'" in _err({**cur, "order": []})
    assert "'order_by'" in _err({**cur, "order_by": "newest"})
    msg = _err({**cur, "stages": [{"categories": ["MaybeKnown"]}]})
    assert "stage 0" in msg and "'categories'" in msg and "order" in msg
    msg = _err({**cur, "order_by": "latest", "stages": [{"epochs": 1}]})
    assert "'reprobe'" in msg and "latest" in msg


def test_weakly_known_from_a_greedy_reprobe_is_refused():
    from gradual_lightning.training.schedules import check_reprobe_sees

    latest = from_config({**_preset("curriculum"), "order_by": "latest"})
    with pytest.raises(ScheduleError, match=r"'curriculum', stage 2, field 'categories'.*reprobe.num_samples"):
        check_reprobe_sees(latest, 0)
    check_reprobe_sees(latest, 4)
    check_reprobe_sees(from_config(_preset("curriculum")), 0)  # by base category: WeaklyKnown is measured at base
    two = _preset("two_stage")
    two["stages"][1]["replay_categories"] = ["WeaklyKnown"]
    with pytest.raises(ScheduleError, match="stage 1, field 'replay_categories'"):
        check_reprobe_sees(from_config(two), 0)
    weakly = OmegaConf.load(CONF / "schedule" / "category.yaml")
    weakly.category = "WeaklyKnown"
    check_reprobe_sees(from_config(weakly), 0)  # stage 0 selects from the base probe
def test_abstain_categories_validation():
    msg = _err(_schedule({"categories": ["MaybeKnown"], "abstain_categories": ["Unknwon"]}))
    assert "stage 0" in msg and "'abstain_categories'" in msg and "'Unknwon'" in msg
    msg = _err(_schedule({"categories": ["MaybeKnown", "Unknown"], "abstain_categories": ["Unknown"]}))
    assert "'abstain_categories'" in msg and "['Unknown'] are also in categories" in msg
    msg = _err(_schedule({"categories": ["MaybeKnown"]}, {"select": "previous", "abstain_categories": ["Unknown"]}))
    assert "stage 1" in msg and "'abstain_categories'" in msg and "select=previous" in msg
    assert "'abstain_categories'" in _err(_schedule({"categories": ["MaybeKnown"], "abstain_categories": []}))
    ok = from_config(_schedule({"select": "all", "abstain_categories": ["Unknown", "WeaklyKnown"]}))
    assert ok.stages[0].abstain_categories == ("Unknown", "WeaklyKnown") and ok.abstains
    assert not from_config(_schedule({"categories": ["MaybeKnown"]})).abstains


@pytest.mark.parametrize("text", ["", "...", "I don't\nknow", 3])
def test_abstention_text_must_be_one_line_with_words(text):
    msg = _err(_schedule({"categories": ["MaybeKnown"]}, abstention_text=text))
    assert "'mine'" in msg and "'abstention_text'" in msg


@pytest.mark.parametrize("weights, message", [
    ({"by": "categry"}, "'by' must be one of"),
    ({"weights": {"MaybeKnown": 2.0}}, "'by' must be one of"),
    ({"by": "category", "weights": {"MaybeKnwon": 2.0}}, "unknown category 'MaybeKnwon'"),
    ({"by": "category", "weights": {"MaybeKnown": -1.0}}, "weight of MaybeKnown must be a number >= 0, got -1.0"),
    ({"by": "category", "weights": {"MaybeKnown": "2"}}, "weight of MaybeKnown must be a number"),
    ({"by": "category", "weights": {c: 0 for c in ("HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown")}},
     "every category weighs 0"),
    ({"by": "category"}, "needs 'weights'"),
    ({"by": "category", "weights": {"MaybeKnown": 2.0}, "a": 1.0}, r"unknown key\(s\) \['a'\]"),
    ({"by": "p_greedy", "a": -0.5, "b": 1.0}, "must be >= 0 for every P"),
    ({"by": "p_sampled", "a": 1.0, "b": -2.0}, "must be >= 0 for every P"),
    ({"by": "p_greedy", "a": 0, "b": 0}, "every question weighs 0"),
    ({"by": "p_greedy", "b": True}, "'b' must be a number"),
    ([1, 2], "must be a mapping"),
])
def test_loss_weights_validation_names_schedule_stage_and_field(weights, message):
    msg = _err(_schedule({"categories": ["MaybeKnown"]}, {"categories": ["MaybeKnown"], "loss_weights": weights}))
    assert "'mine'" in msg and "stage 1" in msg and "'loss_weights'" in msg
    assert re.search(message, msg), msg


def test_loss_weights_map_categories_and_p_values():
    s = from_config(_schedule({"select": "all", "loss_weights": {"by": "category", "weights": {"MaybeKnown": 2.0}}},
                              {"select": "all", "loss_weights": {"by": "p_greedy", "a": 0.5, "b": 2}}))
    by_category, by_p = s.stages[0].loss_weights, s.stages[1].loss_weights
    assert [by_category.weight(c, None, None) for c in ("HighlyKnown", "MaybeKnown", "Unknown")] == [1.0, 2.0, 1.0]
    assert by_p.weight("Unknown", 0.0, None) == 0.5 and by_p.weight("HighlyKnown", 1.0, None) == 2.5
    sampled = from_config(_schedule({"select": "all", "loss_weights": {"by": "p_sampled", "b": 1.0}})).stages[0]
    assert sampled.loss_weights.weight("Unknown", 0.0, 0.25) == 1.25
    assert sampled.loss_weights.weight("MaybeKnown", 0.5, None) is None  # not sampled: the ledger refuses it
    assert hash(s.stages[0]) is not None  # a Stage stays hashable with its weights


def test_new_fields_round_trip_through_to_dict():
    for name in ("abstain", "weighted"):
        s = from_config(OmegaConf.load(CONF / "schedule" / f"{name}.yaml"))
        d = s.to_dict()
        assert OmegaConf.to_container(OmegaConf.create(d)) == d and from_config(d) == s
    assert from_config(OmegaConf.load(CONF / "schedule" / "abstain.yaml")).abstention_text == "I don't know"
