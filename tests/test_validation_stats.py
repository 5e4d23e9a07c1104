"""The pure pieces of the exact-probing validation (benchmarks/validate_exact.py): disagreement causes, where greedy
leaves an alias's token path, calibration bins with Wilson intervals, matrix agreement."""

from __future__ import annotations

import pytest
import torch

from gradual_lightning.probing.validation_stats import (
    CALIBRATION_EDGES,
    NEAR_TIE,
    NON_CANONICAL,
    OTHER,
    OVER_LIMIT,
    SURFACE_VARIANT,
    bin_index,
    calibration_bins,
    classify_disagreement,
    continues_alias,
    matrix_agreement,
    path_departure,
    wilson_interval,
)

ALIASES = ["Paris", "Paris, France"]


def _cause(decoded, scored_hit, **facts):
    return classify_disagreement(decoded=decoded, aliases=ALIASES, scored_hit=scored_hit, **facts)


def test_decoded_hits_that_scoring_missed_get_the_first_cause_that_explains_them():
    # a variant that only normalises to an alias: scoring never scores it, whatever the logits say
    for decoded in ("paris", "Paris.", "PARIS", "Paris, france"):
        assert _cause(decoded, False, margin=5.0, continues=True) == SURFACE_VARIANT
    # the alias itself: its canonical path is cut by max_new_tokens, greedy spells it another way, a near-tie
    assert _cause("Paris", False, margin=5.0, over_limit=True, continues=True) == OVER_LIMIT
    assert _cause("Paris", False, margin=5.0, continues=True) == NON_CANONICAL
    assert _cause(" Paris ", False, margin=1e-4) == NEAR_TIE
    assert _cause("Paris", False, margin=1e-4, tie_eps=1e-5) == OTHER
    assert _cause("Paris", False, margin=None) == OTHER


def test_scored_hits_that_decoding_missed_are_near_ties_or_unexplained():
    assert _cause("Lyon", True, margin=1e-4) == NEAR_TIE
    assert _cause("Lyon", True, margin=0.5, continues=True, over_limit=True) == OTHER
    assert _cause("", True, margin=None) == OTHER


def test_agreeing_verdicts_are_refused():
    with pytest.raises(ValueError, match="no disagreement"):
        _cause("Paris", True, margin=1.0)
    with pytest.raises(ValueError, match="no disagreement"):
        _cause("Lyon", False, margin=1.0)


def test_continues_alias_allows_leading_and_trailing_whitespace_only():
    assert continues_alias(" Par", "Paris") and continues_alias("Par", "Paris") and continues_alias(" ", "Paris")
    assert continues_alias(" Paris ", "Paris") and continues_alias(" Paris", "Paris")
    assert not continues_alias(" Paris.", "Paris") and not continues_alias(" Pa ris", "Paris")
    assert not continues_alias(" Lyon", "Paris") and not continues_alias(" Parisian", "Paris")


def _logits(rows):
    """rows: per step, {token: logit}; other tokens of a 6-token vocabulary at -10."""
    out = torch.full((len(rows), 6), -10.0)
    for i, spec in enumerate(rows):
        for tok, logit in spec.items():
            out[i, tok] = logit
    return out


def _dep(d):
    return d.position, d.token, round(d.margin, 5)


def test_path_departure_finds_the_first_step_off_the_path_and_the_smallest_margin():
    path, ends = [1, 2], [0, 5]
    on_path = _logits([{1: 3.0, 3: 1.0}, {2: 2.0, 4: 1.5}, {5: 1.0, 3: 0.0}])
    assert _dep(path_departure(on_path, path, ends, needs_end=True)) == (None, None, 0.5)
    # greedy takes token 4 at step 1; the margin counts the steps up to that one only
    off = _logits([{1: 3.0, 3: 1.0}, {4: 2.0, 2: 1.9}, {3: 9.0}])
    assert _dep(path_departure(off, path, ends, needs_end=True)) == (1, 4, 0.1)
    # the path is followed but no end token comes next: off at position len(path); without needs_end, no departure
    no_end = _logits([{1: 3.0}, {2: 3.0}, {3: 2.0, 0: 1.0}])
    assert _dep(path_departure(no_end, path, ends, needs_end=True)) == (2, 3, 1.0)
    assert _dep(path_departure(no_end, path, ends, needs_end=False)) == (None, None, 13.0)
    # an exact tie: the margin is 0 and greedy (argmax) takes the first index, as decoding does
    tie = _logits([{1: 2.0, 3: 2.0}, {2: 5.0}, {0: 5.0}])
    assert _dep(path_departure(tie, [3, 2], ends, needs_end=True)) == (0, 1, 0.0)


def test_wilson_interval_known_values_and_edges():
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson_interval(0, 0) is None
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_bins_are_half_open_except_the_last():
    assert [bin_index(p) for p in (0.0, 0.0999, 0.1, 0.3, 0.5, 0.7, 0.8999, 0.9, 1.0)] == [0, 0, 1, 2, 3, 4, 4, 5, 5]
    with pytest.raises(ValueError):
        bin_index(1.01)


def test_calibration_bins_count_share_interval_and_extra_means():
    p = [0.05, 0.02, 0.95, 0.92, 0.99, 0.6]
    found = [False, True, True, True, False, True]
    rows = calibration_bins(p, found, means={"x": [1, 3, 0, 0, 3, 2]})
    assert [r["bin"] for r in rows] == ["[0, 0.1)", "[0.1, 0.3)", "[0.3, 0.5)", "[0.5, 0.7)", "[0.7, 0.9)", "[0.9, 1]"]
    assert len(rows) == len(CALIBRATION_EDGES) - 1
    first, last = rows[0], rows[-1]
    assert (first["n"], first["found"], first["share_found"]) == (2, 1, 0.5)
    assert first["mean_p_detect"] == pytest.approx(0.035) and first["mean_x"] == pytest.approx(2.0)
    assert first["ci95"] == pytest.approx(list(wilson_interval(1, 2)))
    assert (last["n"], last["found"], last["mean_x"]) == (3, 2, 1.0)
    assert rows[1] == {"bin": "[0.1, 0.3)", "n": 0, "mean_p_detect": None, "found": 0, "share_found": None,
                       "ci95": None, "mean_x": None}
    with pytest.raises(ValueError, match="outcomes"):
        calibration_bins([0.1], [True, False])


def test_matrix_agreement_is_the_diagonal_share():
    assert matrix_agreement([[3, 1], [0, 4]]) == 7 / 8
    assert matrix_agreement([[0, 0], [0, 0]]) is None
