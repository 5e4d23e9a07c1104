"""The sweep report on hand-written job dirs: grouping without the seed, mean and CI across seeds, failed jobs."""

import csv
import json
import logging
import math

import pytest
import yaml
from omegaconf import OmegaConf

from gradual_lightning.report import (
    SweepReportCallback,
    find_jobs,
    group_of,
    main,
    read_job,
    record_failure,
    write_report,
)
from gradual_lightning.training.metrics import mean_ci


def _metrics(seed, acc, acquired, untrained=None, retention=0.9):
    n = len(acquired)
    return {"test_accuracy": acc, "retention": retention,
            "incremental_gain": (acquired[2] - acquired[1]) / acquired[1] if n > 2 and acquired[1] else None,
            "knowledge_acquired": acquired, "knowledge_acquired_untrained": untrained or [0] * n,
            "transitions": [[[seed + s, 1, 0, 0], [2, 3, 0, 0], [0, 0, 1, 0], [0, 1, 0, 4]] for s in range(n)],
            "run": {"seed": seed}}


def _job(sweep, num, overrides, metrics=None, error=None, exclude=("seed", "ckpt_path")):
    d = sweep / f"{num}_job"
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)))
    hydra = {"hydra": {"job": {"num": num, "override_dirname": "${oc.env:X}",
                               "config": {"override_dirname": {"exclude_keys": list(exclude)}}}}}
    (d / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra))
    seed = next((int(o.split("=")[1]) for o in overrides if o.startswith("seed=")), 0)
    (d / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"seed": seed}))
    if metrics is not None:
        (d / "metrics.json").write_text(json.dumps(metrics))
    if error is not None:
        try:
            raise error
        except Exception as e:
            record_failure(d, e)
    return d


@pytest.fixture
def sweep(tmp_path):
    s = tmp_path / "sweep"
    _job(s, 0, ["schedule=one_stage", "seed=1"], _metrics(1, 0.50, [0, 4]))
    _job(s, 1, ["schedule=one_stage", "seed=2"], _metrics(2, 0.60, [0, 6]))
    _job(s, 2, ["schedule=one_stage", "seed=3"], _metrics(3, 0.70, [0, 8]))
    _job(s, 3, ["schedule=two_stage", "seed=1"], _metrics(1, 0.55, [0, 4, 6], [0, 1, 2]))
    _job(s, 4, ["schedule=two_stage", "seed=2"], _metrics(2, 0.65, [0, 5, 8], [0, 1, 3]))
    _job(s, 5, ["schedule=two_stage", "seed=3"], error=ValueError("data.num_train=-1 must be >= 1"))
    return s


def _csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def _row(rows, group, metric, stage=""):
    [row] = [r for r in rows if r["group"] == group and r["metric"] == metric and r["stage"] == str(stage)]
    return row


def test_jobs_are_grouped_by_their_overrides_without_the_seed(sweep):
    report = write_report(sweep, plots=False)
    assert [g.name for g in report.groups] == ["schedule=one_stage", "schedule=two_stage"]
    one, two = report.groups
    assert [j.seed for j in one.finished] == [1, 2, 3] and not one.failed
    assert [j.seed for j in two.finished] == [1, 2] and [j.seed for j in two.failed] == [3]


def test_csv_numbers_are_mean_ci_across_seeds(sweep):
    write_report(sweep, plots=False)
    rows = _csv(sweep / "report.csv")
    for group, metric, stage, values in [
        ("schedule=one_stage", "test_accuracy", "", [0.50, 0.60, 0.70]),
        ("schedule=two_stage", "test_accuracy", "", [0.55, 0.65]),
        ("schedule=two_stage", "knowledge_acquired", 2, [6, 8]),
        ("schedule=two_stage", "knowledge_acquired_untrained", 2, [2, 3]),
        ("schedule=two_stage", "incremental_gain", "", [0.5, 0.6]),
    ]:
        row = _row(rows, group, metric, stage)
        mean, low, high = mean_ci(values)
        if metric == "test_accuracy":  # a share: the interval is clipped to [0, 1] (two seeds: t = 12.7)
            low, high = max(low, 0.0), min(high, 1.0)
        assert int(row["n"]) == len(values)
        assert float(row["mean"]) == pytest.approx(mean, rel=1e-5)
        assert float(row["ci_low"]) == pytest.approx(low, rel=1e-5)
        assert float(row["ci_high"]) == pytest.approx(high, rel=1e-5)
    assert _row(rows, "schedule=two_stage", "test_accuracy")["n_failed"] == "1"
    # one_stage has no stage 2 and no incremental gain: n = 0, no numbers
    assert not [r for r in rows if r["group"] == "schedule=one_stage" and r["stage"] == "2"]
    gain = _row(rows, "schedule=one_stage", "incremental_gain")
    assert gain["n"] == "0" and gain["mean"] == gain["ci_low"] == ""


def test_markdown_lists_the_failed_job_with_its_error_and_the_plots(sweep):
    report = write_report(sweep)
    md = (sweep / "report.md").read_text()
    assert "## Failed jobs" in md
    assert "`5_job`" in md and "ValueError: data.num_train=-1 must be >= 1" in md
    assert "| schedule=one_stage | 3 (1, 2, 3) | 0 | 0.600 [" in md
    assert "![knowledge_acquired](knowledge_acquired.png)" in md
    for name in ("knowledge_acquired.png", "transitions_final.png"):
        assert (sweep / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {p.name for p in report.files} == {"report.md", "report.csv", "knowledge_acquired.png",
                                              "transitions_final.png", "paired_differences.png"}
    assert json.loads((sweep / "5_job" / "failed.json").read_text())["traceback"].startswith("Traceback")


def test_a_single_seed_has_a_mean_but_no_interval(tmp_path):
    _job(tmp_path, 0, ["seed=0"], _metrics(0, 0.5, [0, 2]))
    report = write_report(tmp_path, plots=False)
    assert [g.name for g in report.groups] == ["(defaults)"]
    row = _row(_csv(tmp_path / "report.csv"), "(defaults)", "test_accuracy")
    assert row["n"] == "1" and float(row["mean"]) == 0.5 and row["ci_low"] == row["ci_high"] == ""
    assert "| (defaults) | 1 (0) | 0 | 0.500 |" in (tmp_path / "report.md").read_text()


def test_unfinished_job_and_excluded_keys(tmp_path):
    _job(tmp_path, 0, ["schedule=two_stage", "seed=0"], _metrics(0, 0.5, [0, 2, 3]))
    _job(tmp_path, 1, ["schedule=two_stage", "seed=1", "ckpt_path=/x/last.pt"])  # neither metrics nor failed.json
    job = read_job(tmp_path / "1_job")
    assert job.group == "schedule=two_stage" and not job.ok and "did not finish" in job.error
    report = write_report(tmp_path, plots=False)
    assert len(report.groups) == 1 and len(report.failed) == 1


def test_mean_final_transitions_over_seeds(sweep):
    one = write_report(sweep, plots=False).groups[0]
    assert one.mean_final_transitions()[0] == [3.0, 1.0, 0.0, 0.0]  # seeds 1..3, final stage 1: 2, 3, 4 -> 3


def test_group_of():
    assert group_of(["b=2", "seed=3", "a=1"]) == "a=1,b=2"
    assert group_of(["+seed=3", "ckpt_path=x"], exclude_keys=["ckpt_path"]) == "(defaults)"
    assert group_of(["seeds=1"]) == "seeds=1"


def test_find_jobs_in_job_order_at_any_depth(tmp_path):
    _job(tmp_path / "a" / "b", 10, ["seed=0"], _metrics(0, 0.5, [0, 1]))
    _job(tmp_path, 2, ["seed=1"], _metrics(1, 0.5, [0, 1]))
    assert [j.num for j in find_jobs(tmp_path)] == [2, 10]


def test_cli(sweep, tmp_path, capsys):
    assert main([str(sweep), "--out", str(tmp_path / "out"), "--no-plots"]) == 0
    assert "# Sweep report" in capsys.readouterr().out
    assert (tmp_path / "out" / "report.md").exists()
    assert main([str(tmp_path / "missing")]) == 2
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 2
    assert "no Hydra job dirs" in capsys.readouterr().err


def test_callback_writes_the_report_and_exits_1_when_a_job_failed(sweep):
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}})
    with pytest.raises(SystemExit) as e:
        SweepReportCallback().on_multirun_end(config=config)
    assert e.value.code == 1 and (sweep / "report.md").exists()
    (sweep / "report.md").unlink()
    SweepReportCallback(fail_on_job_error=False).on_multirun_end(config=config)
    assert (sweep / "report.md").exists()


def test_callback_does_not_raise_when_the_report_fails(tmp_path, caplog):
    """No job dirs: the report cannot be written; the callback logs the error with its traceback, naming the sweep
    dir (to retry on), and returns: the multirun's own exit status is not replaced by this error."""
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    assert SweepReportCallback().on_multirun_end(config=config) is None
    assert list(tmp_path.iterdir()) == []
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.exc_info[0] is FileNotFoundError and str(tmp_path) in record.getMessage()


def test_nan_free_plots_with_one_seed(tmp_path):
    _job(tmp_path, 0, ["seed=0"], _metrics(0, 0.5, [0, 2, 3]))
    report = write_report(tmp_path)
    stats = report.groups[0].per_stage("knowledge_acquired")
    assert [s.n for s in stats] == [1, 1, 1] and all(math.isnan(s.low) for s in stats)
    assert (tmp_path / "knowledge_acquired.png").exists()


def test_accuracy_intervals_are_clipped_to_0_1_and_counts_are_not(tmp_path):
    for seed, (acc, retention, acquired) in enumerate([(0.9, 1.0, -3), (1.0, 0.7, 9), (0.95, 1.0, 1)]):
        _job(tmp_path, seed, [f"seed={seed}"], _metrics(seed, acc, [0, acquired], retention=retention))
    group = write_report(tmp_path, plots=False).groups[0]
    for metric, values in (("test_accuracy", [0.9, 1.0, 0.95]), ("retention", [1.0, 0.7, 1.0])):
        mean, low, high = mean_ci(values)
        assert high > 1  # the raw t interval leaves [0, 1] ...
        st = group.scalar(metric)
        assert (st.mean, st.low, st.high) == (pytest.approx(mean), pytest.approx(low), 1.0)  # ... the report's not
    assert group.final("knowledge_acquired").low == pytest.approx(mean_ci([-3, 9, 1])[1])  # counts: not clipped


def _report_without_the_broken_job(sweep, reason):
    """The sweep fixture plus job 6 (one_stage, seed 4, accuracy 0.9), whose dir is broken: the report is written,
    job 6 counts in no group and is listed with its reason under Unreadable jobs, not under Failed jobs."""
    report = write_report(sweep, plots=False)
    assert [g.name for g in report.groups] == ["schedule=one_stage", "schedule=two_stage"]
    one = report.groups[0]
    assert [j.seed for j in one.finished] == [1, 2, 3] and not one.failed
    row = _row(_csv(sweep / "report.csv"), "schedule=one_stage", "test_accuracy")
    assert row["n"] == "3" and float(row["mean"]) == pytest.approx(0.6) and row["n_failed"] == "0"
    md = (sweep / "report.md").read_text()
    assert "7 jobs: 5 finished, 1 failed or unfinished, 1 unreadable." in md
    failed_section, unreadable_section = md.split("## Failed jobs")[1].split("## Unreadable jobs")
    assert "`5_job`" in failed_section and "`6_job`" not in failed_section
    assert f"| `6_job` | {reason}" in unreadable_section
    [job] = [j for j in report.jobs if j.dir.name == "6_job"]
    assert job.unreadable and not job.ok and job in report.failed
    return job


@pytest.mark.parametrize("text, reason", [
    ("[]", "metrics.json unreadable: expected a JSON object, got list"),
    ('{"test_accuracy": 0.9, "run": {"seed": 4}}',
     "metrics.json unreadable: no 'retention', 'incremental_gain', 'knowledge_acquired', "
     "'knowledge_acquired_untrained'"),
    (json.dumps({**_metrics(4, 0.9, [0, 9]), "knowledge_acquired": 9}),
     "metrics.json unreadable: 'knowledge_acquired' is not a list of numbers"),
    (json.dumps({**_metrics(4, 0.9, [0, 9]), "run": None}), "metrics.json unreadable: 'run' is not a JSON object"),
    ('{"test_accuracy": ', "metrics.json unreadable: Expecting value"),
])
def test_a_wrong_shaped_metrics_json_makes_its_job_unreadable_and_the_rest_is_reported(sweep, text, reason):
    _job(sweep, 6, ["schedule=one_stage", "seed=4"], _metrics(4, 0.9, [0, 9]))
    (sweep / "6_job" / "metrics.json").write_text(text)
    _report_without_the_broken_job(sweep, reason)


@pytest.mark.parametrize("file, text, reason", [
    ("overrides.yaml", "[schedule=one_stage, seed=4", ".hydra/overrides.yaml unreadable: expected ',' or ']'"),
    ("overrides.yaml", "schedule: one_stage",
     ".hydra/overrides.yaml unreadable: expected a list of overrides, got dict"),
    ("hydra.yaml", "hydra: {job: [", ".hydra/hydra.yaml unreadable: "),
    ("hydra.yaml", "hydra: {job: 3}", ".hydra/hydra.yaml unreadable: hydra.job: expected a mapping, got int"),
])
def test_a_broken_hydra_file_makes_its_job_unreadable_and_the_rest_is_reported(sweep, file, text, reason):
    _job(sweep, 6, ["schedule=one_stage", "seed=4"], _metrics(4, 0.9, [0, 9]))
    (sweep / "6_job" / ".hydra" / file).write_text(text)
    _report_without_the_broken_job(sweep, reason)


def test_callback_exits_1_and_names_an_unreadable_job(tmp_path, caplog):
    _job(tmp_path, 0, ["seed=0"], _metrics(0, 0.5, [0, 2]))
    (_job(tmp_path, 1, ["seed=1"]) / "metrics.json").write_text("[]")
    with pytest.raises(SystemExit) as e:
        SweepReportCallback().on_multirun_end(config=OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    assert e.value.code == 1
    unreadable = (tmp_path / "report.md").read_text().split("## Unreadable jobs")[1]
    assert "| `1_job` | metrics.json unreadable: expected a JSON object, got list" in unreadable
    assert any(r.levelno == logging.ERROR and str(tmp_path / "1_job") in r.getMessage() for r in caplog.records)


def test_a_wrong_shaped_failed_json_is_still_a_failed_job(tmp_path):
    (_job(tmp_path, 0, ["seed=0"]) / "failed.json").write_text("[]")
    job = read_job(tmp_path / "0_job")
    assert not job.unreadable and job.error == "failed (failed.json unreadable: expected a JSON object, got list)"
    md = write_report(tmp_path, plots=False).files[0].read_text()
    assert "## Failed jobs" in md and "## Unreadable jobs" not in md


def test_the_report_says_how_many_stages_the_stage_cache_reused_and_the_time_that_saved(tmp_path):
    from gradual_lightning.report import compute_sharing

    trained = {"stage": 1}
    reused = {"stage": 1, "reused_from": {"key": "k", "run_dir": "0_job", "wall_s": 90.0}}
    _job(tmp_path, 0, ["schedule=one_stage", "seed=0"], {**_metrics(0, 0.5, [0, 2]), "stages": [trained]})
    _job(tmp_path, 1, ["schedule=two_stage", "seed=0"],
         {**_metrics(0, 0.5, [0, 2, 3]), "stages": [reused, {"stage": 2}]})
    _job(tmp_path, 2, ["schedule=n_stage", "seed=0"],
         {**_metrics(0, 0.5, [0, 2, 3]), "stages": [reused, {**reused, "stage": 2}]})
    _job(tmp_path, 3, ["schedule=natural", "seed=0"], error=ValueError("x"))
    sharing = compute_sharing(find_jobs(tmp_path))
    assert (sharing.stages, sharing.reused, sharing.saved_s) == (5, 3, 270.0)
    md = write_report(tmp_path, plots=False).files[0].read_text()
    assert "Stage cache: 3 of the finished jobs' 5 stages were reused" in md and "saving 4 min of compute" in md
    (tmp_path / "1_job" / "metrics.json").unlink()
    (tmp_path / "2_job" / "metrics.json").unlink()
    assert "no stage was reused" in write_report(tmp_path, plots=False).files[0].read_text()
