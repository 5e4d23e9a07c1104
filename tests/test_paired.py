"""Paired comparisons: the statistics on cases with known answers, and the sweep report's "Paired comparisons" on
hand-written job dirs (per question where the jobs share the data split, unpaired where they do not)."""

import json
import logging
import math
import statistics

import numpy as np
import pytest
from omegaconf import OmegaConf
from test_report import _csv, _job, _metrics, _row

from gradual_lightning.report import (
    BaselineError,
    SweepReportCallback,
    bootstrap_difference,
    detectable_difference,
    discordant,
    main,
    mcnemar_exact,
    paired_accuracy,
    welch_difference,
    write_report,
)
from gradual_lightning.training.metrics import mean_ci

# ---- statistics ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("b, c, p", [
    (0, 6, 0.03125),  # 2 * (1/2)^6
    (6, 0, 0.03125),
    (4, 4, 1.0), (0, 0, 1.0), (1, 1, 1.0),
    (3, 10, 2 * (1 + 13 + 78 + 286) / 2**13),  # 2 * P(X <= 3), X ~ Binomial(13, 1/2)
    (1, 5, 2 * (1 + 6) / 2**6),
])
def test_mcnemar_exact(b, c, p):
    assert mcnemar_exact(b, c) == pytest.approx(p, rel=1e-12)


def test_mcnemar_rejects_negative_counts():
    with pytest.raises(ValueError, match="b=-1"):
        mcnemar_exact(-1, 3)


def _pairs(only_other, only_base, both, neither):
    """(baseline correct, other correct) pairs with the given counts of each kind."""
    return [(False, True)] * only_other + [(True, False)] * only_base + [(True, True)] * both + [(False, False)] * \
        neither


def test_bootstrap_interval_of_a_known_case_and_deterministic():
    pairs = _pairs(30, 10, 30, 30)  # difference (30 - 10) / 100 = 0.2
    diff, low, high = bootstrap_difference([pairs])
    assert diff == pytest.approx(0.2) and low < 0.2 < high and low > 0
    normal_half = 1.959964 * math.sqrt((0.4 - 0.2**2) / 100)  # sd of a pair's difference: sqrt(d - delta^2)
    assert (high - low) / 2 == pytest.approx(normal_half, rel=0.15)
    assert bootstrap_difference([pairs]) == (diff, low, high)  # same seed, same interval
    assert bootstrap_difference([pairs], seed=1)[0] == diff


def test_bootstrap_covers_the_true_difference():
    """Draws from a population with a known difference (P(only other right) = 0.3, P(only baseline right) = 0.1:
    0.2): the 95% interval holds it in about 95% of 200 draws of 2 seeds x 60 questions."""
    rng = np.random.default_rng(7)
    hits = 0
    for _ in range(200):
        strata = []
        for _ in range(2):
            u = rng.random(60)
            strata.append([(bool(x >= 0.3 and x < 0.4) or x >= 0.7, bool(x < 0.3) or x >= 0.7) for x in u])
        _, low, high = bootstrap_difference(strata, resamples=500)
        hits += low <= 0.2 <= high
    assert 0.88 <= hits / 200 <= 0.99


def test_bootstrap_resamples_within_seeds():
    """Seed 1: the other answers all 10 right, the baseline none; seed 2 the reverse. Pooled the difference is 0, and
    resampling questions within each seed cannot change it: the interval is [0, 0] (mixing seeds would not be)."""
    assert bootstrap_difference([_pairs(10, 0, 0, 0), _pairs(0, 10, 0, 0)]) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="at least one pair"):
        bootstrap_difference([[], []])


def test_detectable_difference():
    z = statistics.NormalDist().inv_cdf
    assert detectable_difference(0.15, 40) == pytest.approx((z(0.975) + z(0.8)) * math.sqrt(0.15 / 40))
    assert detectable_difference(0.15, 40) == pytest.approx(2.801585 * math.sqrt(0.15 / 40), rel=1e-6)
    assert detectable_difference(0.2, 180) < detectable_difference(0.2, 60)  # more questions, smaller
    assert math.isnan(detectable_difference(0.0, 60)) and math.isnan(detectable_difference(0.1, 0))  # unknown


def test_paired_accuracy_pools_discordant_counts_over_seeds():
    seed1, seed2 = _pairs(3, 0, 5, 12), _pairs(2, 1, 4, 13)
    r = paired_accuracy([seed1, seed2])
    assert (r.n, r.b, r.c) == (40, 1, 5) and discordant(seed2) == (1, 2)
    assert r.diff == pytest.approx(0.1)
    assert r.p_value == pytest.approx(mcnemar_exact(1, 5)) and r.p_per_stratum == [0.25, 1.0]
    assert r.detectable == pytest.approx(detectable_difference(6 / 40, 40))


def test_welch_difference():
    a, b = [0.5, 0.6, 0.7], [0.55, 0.65, 0.9, 0.8]
    diff, low, high = welch_difference(a, b)
    se = math.sqrt(statistics.variance(a) / 3 + statistics.variance(b) / 4)
    assert diff == pytest.approx(0.125)
    assert (high - low) / 2 == pytest.approx(2.776445 * se, rel=1e-4)  # Welch df 4.96, rounded down: t(0.975, 4)
    one = welch_difference([0.5], b)
    assert one[0] == pytest.approx(0.225) and math.isnan(one[1]) and math.isnan(one[2])


# ---- the report ----------------------------------------------------------------------------------------------

CATS = ["HighlyKnown"] * 5 + ["MaybeKnown"] * 5 + ["WeaklyKnown"] * 5 + ["Unknown"] * 5
BASELINE_RIGHT = {0, 1, 2, 3, 4, 5, 6, 7}  # of questions q0..q19 (q0-q4 base HighlyKnown, q5-q9 MaybeKnown, ...)
TWO_STAGE_RIGHT = {1: BASELINE_RIGHT | {8, 9, 10}, 2: (BASELINE_RIGHT - {0}) | {8, 15}}
# pooled over seeds 1 and 2: only two_stage right 3 + 2 = 5, only one_stage right 0 + 1 = 1, 40 questions


def _paired_job(sweep, num, schedule, seed, right, fingerprint="data-A", acquired_trained=10, probe=True,
                abstained=0, answers=False):
    """`abstained`: how many of the wrong test answers were the abstention text (the rest are hallucinations): the
    first ones in question order; `answers`: write probe/test_answers.json saying so."""
    correct = {f"q{i}": i in right for i in range(20)}
    m = _metrics(seed, sum(correct.values()) / 20, [0, 3])
    m.update(test_abstention_rate=abstained / 20, test_hallucination_rate=(20 - len(right) - abstained) / 20)
    m["run"].update(data_fingerprint=fingerprint, model_fingerprint="model-M")
    m["knowledge_acquired_trained"] = [0, acquired_trained]
    m["test_accuracy_by_base_category"] = {c: sum(correct[f"q{i}"] for i in range(20) if CATS[i] == c) / 5
                                           for c in dict.fromkeys(CATS)}
    d = _job(sweep, num, [f"schedule={schedule}", f"seed={seed}"], m)
    if probe:
        (d / "probe").mkdir()
        base = {f"q{i}": i in BASELINE_RIGHT for i in range(20)}
        (d / "probe" / "test_correct.json").write_text(json.dumps([base, correct]))
        (d / "probe" / "stage0_test.jsonl").write_text(
            "".join(json.dumps({"id": f"q{i}", "category": c}) + "\n" for i, c in enumerate(CATS)))
    if probe and answers:
        wrong = [q for q, ok in correct.items() if not ok]
        final = {q: "gold" if ok else "I don't know." if q in wrong[:abstained] else "a guess"
                 for q, ok in correct.items()}
        (d / "probe" / "test_answers.json").write_text(json.dumps([{q: "x" for q in correct}, final]))
    return d


def _sweep(tmp_path, fingerprints=("data-1", "data-2"), probe=True):
    """one_stage and two_stage x seeds 1, 2; two_stage's seed s has data fingerprint fingerprints[s - 1]."""
    s = tmp_path / "sweep"
    for seed in (1, 2):
        _paired_job(s, seed - 1, "one_stage", seed, BASELINE_RIGHT, f"data-{seed}", acquired_trained=9 + seed)
        _paired_job(s, seed + 1, "two_stage", seed, TWO_STAGE_RIGHT[seed], fingerprints[seed - 1],
                    acquired_trained=(14, 13)[seed - 1], probe=probe)
    return s


def test_the_report_compares_per_question_on_the_same_seeds(tmp_path):
    sweep = _sweep(tmp_path)
    report = write_report(sweep)
    [comp] = report.comparisons
    assert comp.baseline.name == "schedule=one_stage" and comp.paired and comp.paired_seeds == [1, 2]
    md = (sweep / "report.md").read_text()
    assert "## Paired comparisons" in md and "baseline `schedule=one_stage`" in md
    assert "| schedule=two_stage | paired, seeds 1, 2 | +0.100 [" in md
    assert f"| {mcnemar_exact(1, 5):.3g} | 1 / 5 | 40 | {detectable_difference(6 / 40, 40):.3f} |" in md
    assert "![paired_differences](paired_differences.png)" in md
    assert (sweep / "paired_differences.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    rows = _csv(sweep / "report.csv")
    acc = _row(rows, "schedule=two_stage", "diff_test_accuracy")
    assert float(acc["mean"]) == pytest.approx(0.1) and float(acc["ci_low"]) < 0.1 < float(acc["ci_high"])
    assert acc["method"] == "paired bootstrap" and acc["baseline"] == "schedule=one_stage" and acc["n"] == "2"
    assert float(acc["p_value"]) == pytest.approx(0.21875) and acc["p_per_seed"] == "1:0.25;2:1"
    assert (acc["only_baseline_right"], acc["only_group_right"], acc["n_questions"]) == ("1", "5", "40")
    assert float(acc["detectable"]) == pytest.approx(2.801585 * math.sqrt(6 / 40 / 40), rel=1e-5)
    assert float(_row(rows, "schedule=two_stage", "diff_retention")["mean"]) == pytest.approx(-0.1)  # q0, seed 2
    assert float(_row(rows, "schedule=two_stage", "diff_accuracy_MaybeKnown")["mean"]) == pytest.approx(0.3)
    assert float(_row(rows, "schedule=two_stage", "diff_accuracy_Unknown")["p_value"]) == 1.0  # q15: b=0, c=1
    trained = _row(rows, "schedule=two_stage", "diff_knowledge_acquired_trained")
    mean, low, high = mean_ci([14 - 10, 13 - 11])
    assert trained["method"] == "paired t" and float(trained["mean"]) == pytest.approx(mean)
    assert float(trained["ci_low"]) == pytest.approx(low, rel=1e-5)
    assert float(_row(rows, "schedule=two_stage", "diff_knowledge_acquired_untrained")["mean"]) == 0.0
    assert not [r for r in rows if r["group"] == "schedule=one_stage" and r["metric"].startswith("diff_")]
    assert _row(rows, "schedule=one_stage", "test_accuracy")["baseline"] == ""  # the per-group rows as before


def test_the_baseline_can_be_chosen(tmp_path, capsys):
    sweep = _sweep(tmp_path)
    [comp] = write_report(sweep, plots=False, baseline="schedule=two_stage").comparisons
    assert comp.group.name == "schedule=one_stage" and comp.get("test_accuracy").diff == pytest.approx(-0.1)
    assert comp.get("test_accuracy").p_value == pytest.approx(0.21875)  # the test is symmetric
    with pytest.raises(BaselineError, match="'schedule=three' matches no group; the groups are: schedule=one_stage"):
        write_report(sweep, plots=False, baseline="schedule=three")
    assert main([str(sweep), "--no-plots", "--baseline", "schedule=two_stage"]) == 0
    assert "baseline `schedule=two_stage`" in capsys.readouterr().out
    assert main([str(sweep), "--no-plots", "--baseline", "seed=1"]) == 2
    assert "matches no group" in capsys.readouterr().err


def test_the_callback_reads_report_baseline_and_survives_a_wrong_one(tmp_path, caplog):
    sweep = _sweep(tmp_path)
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}, "report": {"baseline": "schedule=two_stage"}})
    SweepReportCallback().on_multirun_end(config=config)
    assert "baseline `schedule=two_stage`" in (sweep / "report.md").read_text()
    SweepReportCallback(baseline="schedule=nope").on_multirun_end(config=config)
    assert any(r.levelno == logging.ERROR and "schedule=nope" in r.getMessage() for r in caplog.records)
    assert "baseline `schedule=one_stage`" in (sweep / "report.md").read_text()


def test_a_seed_with_another_split_is_left_out_of_the_pairing(tmp_path):
    sweep = _sweep(tmp_path, fingerprints=("data-1", "data-X"))
    [comp] = write_report(sweep, plots=False).comparisons
    assert comp.paired_seeds == [1]
    assert comp.get("test_accuracy").diff == pytest.approx(3 / 20) and comp.get("test_accuracy").n_questions == 20
    md = (sweep / "report.md").read_text()
    assert "| paired, seeds 1 |" in md
    assert "- schedule=two_stage: seed 2: data_fingerprint differs (data-2 vs data-X): not the same split" in md


def test_no_shared_split_falls_back_to_unpaired(tmp_path):
    sweep = _sweep(tmp_path, fingerprints=("data-X", "data-Y"))
    [comp] = write_report(sweep, plots=False).comparisons
    assert not comp.paired
    md = (sweep / "report.md").read_text()
    assert "| schedule=two_stage | **unpaired** (2 vs 2 seeds) | +0.100 [" in md
    assert "seed 1: data_fingerprint differs" in md
    acc = _row(_csv(sweep / "report.csv"), "schedule=two_stage", "diff_test_accuracy")
    diff, low, high = welch_difference([0.4, 0.4], [0.55, 0.45])
    assert acc["method"] == "unpaired Welch" and acc["p_value"] == acc["p_per_seed"] == acc["n_questions"] == ""
    assert float(acc["mean"]) == pytest.approx(diff) and float(acc["ci_low"]) == pytest.approx(max(low, -1))
    assert float(acc["ci_high"]) == pytest.approx(min(high, 1))


def test_missing_probe_files_fall_back_to_unpaired(tmp_path):
    sweep = _sweep(tmp_path, fingerprints=("data-1", "data-2"), probe=False)
    [comp] = write_report(sweep, plots=False).comparisons
    assert not comp.paired and comp.get("retention").method == "unpaired Welch"
    assert "seed 1: probe/test_correct.json unreadable" in (sweep / "report.md").read_text()


def test_one_group_has_no_paired_section(tmp_path):
    _paired_job(tmp_path, 0, "one_stage", 1, BASELINE_RIGHT)
    report = write_report(tmp_path, plots=False)
    assert report.comparisons == [] and "## Paired comparisons" not in report.files[0].read_text()


def test_hallucination_and_abstention_rates_are_reported_per_group_and_paired_per_seed(tmp_path):
    s = tmp_path / "sweep"
    for seed in (1, 2):  # one_stage: 8 right, 12 hallucinated; abstain: 7 right, 4 + seed abstained, the rest not
        _paired_job(s, seed - 1, "one_stage", seed, BASELINE_RIGHT, f"data-{seed}")
        _paired_job(s, seed + 1, "abstain", seed, BASELINE_RIGHT - {0}, f"data-{seed}", abstained=4 + seed)
    [comp] = write_report(s, plots=False).comparisons
    hallucination, abstention = comp.get("test_hallucination_rate"), comp.get("test_abstention_rate")
    # hallucination: one_stage 12/20 both seeds; abstain (13 - 5)/20 and (13 - 6)/20
    mean, low, high = mean_ci([8 / 20 - 12 / 20, 7 / 20 - 12 / 20])
    assert hallucination.method == "paired t" and hallucination.n_seeds == 2
    assert (hallucination.diff, hallucination.low, hallucination.high) == pytest.approx((mean, low, high))
    assert abstention.diff == pytest.approx(5.5 / 20)
    md = (s / "report.md").read_text()
    assert "| hallucination rate | abstention rate |" in md
    assert "| 0.600 [0.600, 0.600] | 0.000 [0.000, 0.000] |" in md  # one_stage: the same in both seeds
    h, a = mean_ci([8 / 20, 7 / 20]), mean_ci([5 / 20, 6 / 20])
    assert a[1] < 0  # abstain's row: the abstention rate's t interval is clipped at 0
    assert f"| {h[0]:.3f} [{h[1]:.3f}, {h[2]:.3f}] | {a[0]:.3f} [0.000, {a[2]:.3f}] |" in md
    assert f"| {mean:+.3f} [{low:+.3f}, {high:+.3f}] | +0.275 [" in md  # the paired table's last two columns
    rows = _csv(s / "report.csv")
    assert float(_row(rows, "schedule=abstain", "test_abstention_rate")["mean"]) == pytest.approx(0.275)
    assert _row(rows, "schedule=abstain", "diff_test_hallucination_rate")["method"] == "paired t"


def test_metrics_without_the_rates_still_report_with_dashes(tmp_path):
    s = _sweep(tmp_path)
    for d in s.iterdir():
        m = json.loads((d / "metrics.json").read_text())
        del m["test_abstention_rate"], m["test_hallucination_rate"]
        (d / "metrics.json").write_text(json.dumps(m))
    report = write_report(s, plots=False)
    assert not report.failed and report.comparisons[0].get("test_hallucination_rate") is None
    assert "| - | - |" in (s / "report.md").read_text()


def test_with_the_test_answers_in_the_job_dirs_the_rates_are_paired_per_question(tmp_path):
    s = tmp_path / "sweep"
    for seed in (1, 2):  # one_stage hallucinates on all 12 wrong; abstain is right on 7, abstains on the first 5
        _paired_job(s, seed - 1, "one_stage", seed, BASELINE_RIGHT, f"data-{seed}", answers=True)
        _paired_job(s, seed + 1, "abstain", seed, BASELINE_RIGHT - {0}, f"data-{seed}", abstained=5, answers=True)
    [comp] = write_report(s, plots=False).comparisons
    hallucination, abstention = comp.get("test_hallucination_rate"), comp.get("test_abstention_rate")
    # per seed: abstain's wrong are q0 and q8..q19 (13); it abstains on q0, q8..q11, so hallucinates on q12..q19
    # (8); one_stage hallucinates on q8..q19 (12): only one_stage hallucinates on q8..q11 (4 per seed), neither-only
    # abstain on none; q0: one_stage right, abstain abstains
    assert hallucination.method == "paired bootstrap" and hallucination.discordant == (8, 0)
    assert hallucination.diff == pytest.approx(-8 / 40) and hallucination.p_value == pytest.approx(mcnemar_exact(8, 0))
    assert abstention.method == "paired bootstrap" and abstention.discordant == (0, 10)
    assert abstention.diff == pytest.approx(10 / 40) and abstention.n_questions == 40
    rows = _csv(s / "report.csv")
    assert _row(rows, "schedule=abstain", "diff_test_hallucination_rate")["only_baseline_right"] == "8"
    # the metrics.json rates agree with the per-question events they were computed from
    assert float(_row(rows, "schedule=abstain", "test_hallucination_rate")["mean"]) == pytest.approx(8 / 20)
