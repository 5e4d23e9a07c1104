import pytest

from gradual_lightning.categories import CATEGORIES
from gradual_lightning.probing.mastery import MasteryError, MasteryThresholds, categorize

SLICK = MasteryThresholds()


@pytest.mark.parametrize(
    "p_greedy, p_sampled, expected",
    [
        (1.0, None, "HighlyKnown"),
        (0.9, None, "MaybeKnown"),
        (0.1, 0.0, "MaybeKnown"),
        (0.0, 1 / 160, "WeaklyKnown"),
        (0.0, 0.0, "Unknown"),
        (0.0, None, "Unknown"),
    ],
)
def test_slick_categories(p_greedy, p_sampled, expected):
    assert categorize(p_greedy, p_sampled, SLICK) == expected


def test_categorize_returns_the_plain_stored_name():
    # JSON files, checkpoints and cache keys hold the plain string: never a Category member
    for p_greedy, p_sampled in [(1.0, None), (0.5, None), (0.0, 1.0), (0.0, 0.0)]:
        c = categorize(p_greedy, p_sampled)
        assert type(c) is str and c in CATEGORIES


def test_lenient_preset_moves_the_highly_known_bound():
    lenient = MasteryThresholds(name="lenient", highly_known=0.8)
    assert categorize(0.8, None, lenient) == "HighlyKnown"
    assert categorize(0.7, None, lenient) == "MaybeKnown"
    assert categorize(0.8, None, SLICK) == "MaybeKnown"


def test_strict_preset_needs_two_greedy_hits_for_maybe_known():
    strict = MasteryThresholds(name="strict", maybe_known=0.1, weakly_known=0.01)
    assert categorize(0.1, 0.5, strict) == "WeaklyKnown"
    assert categorize(0.2, None, strict) == "MaybeKnown"
    assert categorize(0.0, 0.01, strict) == "Unknown"
    assert strict.needs_sampling(0.1) and not strict.needs_sampling(0.2)


def test_thresholds_in_wrong_order_are_a_clear_error():
    with pytest.raises(MasteryError, match="wrong order.*maybe_known=0.9 and highly_known=0.5"):
        MasteryThresholds(name="bad", highly_known=0.5, maybe_known=0.9)


@pytest.mark.parametrize("field, value", [("highly_known", 1.5), ("weakly_known", -0.1), ("maybe_known", "x")])
def test_out_of_range_threshold_names_the_field(field, value):
    with pytest.raises(MasteryError, match=f"mastery.{field}"):
        MasteryThresholds(**{field: value})


def test_unknown_key_in_config_is_rejected():
    with pytest.raises(MasteryError, match="highly_know"):
        MasteryThresholds.from_config({"name": "typo", "highly_know": 1.0})


def test_presets_in_conf_load():
    from pathlib import Path

    from omegaconf import OmegaConf

    presets = sorted(Path(__file__).resolve().parents[1].glob("conf/mastery/*.yaml"))
    assert {p.stem for p in presets} >= {"slick", "lenient"}
    for p in presets:
        MasteryThresholds.from_config(OmegaConf.to_container(OmegaConf.load(p)))
