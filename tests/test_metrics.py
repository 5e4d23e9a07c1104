"""Metrics on hand-built cases."""

import json
import math

import pytest

from gradual_lightning.categories import CATEGORIES, Category
from gradual_lightning.training import metrics as m

BASE = {"a": "HighlyKnown", "b": "HighlyKnown", "c": "MaybeKnown", "d": "MaybeKnown", "e": "WeaklyKnown",
        "f": "Unknown"}
NOW = {"a": "HighlyKnown", "b": "MaybeKnown", "c": "HighlyKnown", "d": "HighlyKnown", "e": "HighlyKnown",
       "f": "Unknown"}


def test_categories_order():
    assert CATEGORIES == ("HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown")


def test_accuracy():
    assert m.accuracy([True, False, True, True]) == 0.75
    assert m.accuracy([]) is None


def test_accuracy_by_category_and_retention():
    correct = {"a": True, "b": False, "c": True, "f": False}
    assert m.accuracy_by_category(correct, BASE) == {"HighlyKnown": 0.5, "MaybeKnown": 1.0, "Unknown": 0.0}
    assert list(m.accuracy_by_category(correct, BASE)) == ["HighlyKnown", "MaybeKnown", "Unknown"]
    assert m.retention(correct, BASE) == 0.5
    assert m.retention({"c": True}, BASE) is None


def test_category_counts():
    assert m.category_counts(BASE) == {"HighlyKnown": 2, "MaybeKnown": 2, "WeaklyKnown": 1, "Unknown": 1}
    assert m.category_counts({}) == dict.fromkeys(CATEGORIES, 0)
    with pytest.raises(ValueError, match="Known"):
        m.category_counts({"x": "Known"})


def test_category_counts_of_the_categories_themselves():
    # probe.py's summary.json "counts": one category per question, the same dict as for {id: category}
    assert m.category_counts(list(BASE.values())) == m.category_counts(BASE)
    assert list(m.category_counts(["Unknown", "Unknown"])) == list(CATEGORIES)
    assert m.category_counts(["Unknown", "Unknown"]) == {"HighlyKnown": 0, "MaybeKnown": 0, "WeaklyKnown": 0,
                                                           "Unknown": 2}
    assert m.category_counts(iter([])) == dict.fromkeys(CATEGORIES, 0)
    assert json.dumps(m.category_counts([Category.MAYBE_KNOWN])) == json.dumps(m.category_counts(["MaybeKnown"]))
    with pytest.raises(ValueError, match="Known"):
        m.category_counts(["HighlyKnown", "Known"])


def test_knowledge_acquired_and_incremental_gain():
    counts = [{"HighlyKnown": 10}, {"HighlyKnown": 18}, {"HighlyKnown": 20}]
    assert m.knowledge_acquired(counts) == [0, 8, 10]
    assert m.incremental_gain([0, 8, 10]) == 0.25
    assert m.incremental_gain([0, 0, 3]) is None
    assert m.incremental_gain([0, 8]) is None
    # the paper's numbers: 34,426 -> 49,959 -> 53,691 gives 24%
    acq = m.knowledge_acquired([{"HighlyKnown": 34426}, {"HighlyKnown": 49959}, {"HighlyKnown": 53691}])
    assert round(m.incremental_gain(acq), 2) == 0.24


def test_forgotten_and_transition_matrix():
    assert m.forgotten(BASE, NOW) == 1
    assert m.transition_matrix(BASE, NOW) == [
        [1, 1, 0, 0],
        [2, 0, 0, 0],
        [1, 0, 0, 0],
        [0, 0, 0, 1],
    ]
    # only ids present in both count
    assert sum(map(sum, m.transition_matrix(BASE, {"a": "Unknown"}))) == 1


def test_knowledge_acquired_split():
    # trained c, d, b: +1 +1 -1 = 1; untrained a, e, f: 0 +1 0 = 1
    assert m.knowledge_acquired_split(BASE, NOW, {"b", "c", "d"}) == {"trained": 1, "untrained": 1}
    assert m.knowledge_acquired_split(BASE, NOW, []) == {"trained": 0, "untrained": 2}


def test_t_quantile_matches_tables():
    for df, t in [(1, 12.706), (2, 4.303), (5, 2.571), (9, 2.262), (30, 2.042)]:
        assert m.t_quantile(0.975, df) == pytest.approx(t, abs=1e-3)
    assert m.t_quantile(0.995, 4) == pytest.approx(4.604, abs=1e-3)


def test_mean_ci():
    mean, lo, hi = m.mean_ci([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5
    half = 3.182 * math.sqrt(5 / 3) / 2  # t(0.975, 3) * sd / sqrt(n)
    assert lo == pytest.approx(2.5 - half, abs=1e-3) and hi == pytest.approx(2.5 + half, abs=1e-3)
    one = m.mean_ci([0.4])
    assert one[0] == 0.4 and math.isnan(one[1]) and math.isnan(one[2])
    with pytest.raises(ValueError):
        m.mean_ci([])


def test_abstained_hallucinated_and_answered_accuracy_partition_the_answers():
    answers = {"a": "Paris", "b": "I don't know.", "c": "Lyon", "d": "i don't know", "e": "Rome", "f": "Oslo"}
    correct = {"a": True, "b": False, "c": True, "d": False, "e": False, "f": False}
    abstained = m.abstained(answers, correct, "I don't know")
    assert abstained == {"a": False, "b": True, "c": False, "d": True, "e": False, "f": False}
    hallucinated = m.hallucinated(correct, abstained)
    assert hallucinated == {"a": False, "b": False, "c": False, "d": False, "e": True, "f": True}
    assert all(correct[q] + abstained[q] + hallucinated[q] == 1 for q in answers)  # exactly one outcome each
    assert m.accuracy(list(abstained.values())) == pytest.approx(2 / 6)
    assert m.accuracy_by_category(abstained, BASE) == {"HighlyKnown": 0.5, "MaybeKnown": 0.5, "WeaklyKnown": 0.0,
                                                       "Unknown": 0.0}
    assert m.accuracy_by_category(hallucinated, BASE) == {"HighlyKnown": 0.0, "MaybeKnown": 0.0, "WeaklyKnown": 1.0,
                                                          "Unknown": 1.0}
    assert m.accuracy_answered(correct, abstained) == 0.5  # 2 correct of the 4 answered
    assert m.accuracy_answered({"b": False}, {"b": True}) is None  # nothing answered


def test_a_correct_answer_equal_to_the_abstention_text_counts_as_correct():
    abstained = m.abstained({"x": "I don't know", "y": "I don't know"}, {"x": True, "y": False}, "I don't know")
    assert abstained == {"x": False, "y": True}
    assert m.abstained({"x": "I don't know"}, {}, "I don't know") == {}  # only scored questions
