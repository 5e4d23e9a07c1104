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


@pytest.mark.parametrize("prediction, expected", [
    ("I don't know", True),
    ("I don't know.", True),              # punctuation
    ("i DON’T know\nQ: next question", True),  # case, curly apostrophe, first line only
    ("I dont know", False),               # the apostrophe is a space after normalising: "i don t know"
    ("I don't know Paris", False),        # more than the abstention
    ("Paris", False),
    ("", False),
])
def test_is_abstention_normalises_like_answers(prediction, expected):
    from gradual_lightning.probing.matching import is_abstention

    assert is_abstention(prediction) is expected
    assert is_abstention(prediction, "No idea") is False
    assert is_abstention("no idea!", "No idea") is True


def test_an_abstention_is_not_a_correct_answer_unless_an_alias_is_the_abstention():
    assert not is_correct("I don't know", US, "exact") and not is_correct("I don't know", US, "contains")
    assert is_correct("I don't know", ["Know"], "contains")  # what train.py refuses for an abstaining schedule
