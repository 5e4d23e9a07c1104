import pytest

from gradual_lightning.probing.matching import NORMALIZER_STEPS, is_correct, normalize

US = ["United States", "USA", "United States of America", "US"]


@pytest.mark.parametrize(
    "prediction, answers, mode, expected",
    [
        ("The United States", US, "exact", True),          # article dropped
        ("united states of america.", US, "exact", True),   # case + trailing punctuation
        ("U.S.A.", ["USA"], "exact", False),                # punctuation becomes spaces: "u s a" != "usa"
        ("Bogotá", ["Bogota"], "exact", True),              # accents
        ("São Paulo", ["Sao Paulo"], "exact", True),
        ("Paris\nQ: What is the capital of Spain?", ["Paris"], "exact", True),  # only the first line counts
        ("Paris, France", ["Paris"], "exact", False),
        ("Paris, France", ["Paris"], "contains", True),
        ("Romania", ["Oman"], "contains", False),          # whole words only
        ("the Republic of Oman", ["Oman"], "contains", True),
        ("", ["Paris"], "exact", False),
        ("   ", ["Paris"], "contains", False),
        ("Lyon", ["Paris", "Lyon"], "exact", True),          # any alias
        ("New York City", ["New York"], "exact", False),
        ("New York City", ["New York"], "contains", True),
    ],
)
def test_is_correct_tricky_pairs(prediction, answers, mode, expected):
    assert is_correct(prediction, answers, mode) is expected


def test_normalize_steps_are_idempotent_and_order_free_of_surprises():
    text = "  The  Côte d'Ivoire!!\nsecond line"
    once = normalize(text)
    assert once == "cote d ivoire"
    assert normalize(once) == once
    assert [name for name, _ in NORMALIZER_STEPS][0] == "first_line"


def test_unknown_match_mode_is_an_error():
    with pytest.raises(ValueError, match="probe.match='fuzzy'"):
        is_correct("Paris", ["Paris"], "fuzzy")
