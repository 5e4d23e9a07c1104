"""Sweep report: one table comparing the settings of a Hydra multirun, mean and 95% CI across seeds.

    python -m gradual_lightning.report multirun/<date>/<time>

and automatically at the end of every multirun (`SweepReportCallback`, registered in conf/train.yaml). It reads
each job dir (`.hydra/overrides.yaml`, `metrics.json`, `failed.json`), groups jobs by their overrides without the
seed (and without the other `hydra.job.config.override_dirname.exclude_keys`, as the job dirs and W&B groups do),
and writes into the sweep dir:

- report.md: results per group (test accuracy, retention, knowledge acquired, the test hallucination and abstention
  rates; how many stages the stage cache reused, with the training time that saved), knowledge acquired per stage,
  paired comparisons with the baseline group, failed jobs with their errors, the plots;
- report.csv: one row per group, metric and stage: n (seeds with a value), mean, ci_low, ci_high, n_failed; then one
  row per group and difference with the baseline (metric `diff_<metric>`: interval, method, McNemar p pooled and
  per seed, detectable difference, discordant counts: for the rates, questions where only the baseline / only
  the group hallucinated or abstained);
- knowledge_acquired.png, transitions_final.png (final-stage transition matrix, mean over seeds, per group) and
  paired_differences.png (forest plot: each group minus the baseline, with intervals).

Paired comparisons (`compare`, statistics in `paired`): jobs of two groups run with the same seed share the data
split, so they are compared per test question (stratified bootstrap interval, exact McNemar test); where the data
fingerprints differ, unpaired (Welch), and the table says so. The baseline is `--baseline 'schedule=one_stage'`
(`report.baseline` in the Hydra config), by default the first group.

A job that raised leaves `failed.json` (written by train.py in a multirun, so the sweep goes on), and so does a job
stopped by SIGTERM (`"terminated": true`, with the stage it stopped in: listed as terminated); a job dir with
neither file did not finish (killed, or still running) and is listed as such. A job dir with a file the report
cannot parse, or of the wrong shape, is listed as unreadable with the reason and left out of the tables: one broken
dir does not stop the report of the others.

Modules: `jobs` (what a job dir holds, and reading it), `stats` (groups and their statistics), `paired` (statistics
of two settings: McNemar, bootstrap, detectable difference, Welch), `compare` (groups against the baseline),
`render` (report.md, report.csv, plots), `write` (`write_report`), `callback` (the Hydra callback), `cli` (the
command line). Every public name is importable from here.
"""

from gradual_lightning.report.callback import SweepReportCallback
from gradual_lightning.report.cli import main
from gradual_lightning.report.compare import (
    METRICS,
    BaselineError,
    Comparison,
    Difference,
    compare,
    compare_groups,
    pick_baseline,
)
from gradual_lightning.report.jobs import (
    FAILED_FILE,
    METRICS_FILE,
    PER_STAGE,
    RATES,
    SCALARS,
    Job,
    TestOutcomes,
    data_fingerprint,
    find_jobs,
    group_name,
    group_of,
    read_job,
    read_test_outcomes,
    record_failure,
    setting_of,
)
from gradual_lightning.report.paired import (
    PairedAccuracy,
    bootstrap_difference,
    detectable_difference,
    discordant,
    mcnemar_exact,
    paired_accuracy,
    welch_difference,
)
from gradual_lightning.report.render import (
    CSV_COLUMNS,
    PLOTS,
    csv_text,
    markdown_text,
    paired_section,
    sharing_lines,
    write_plots,
)
from gradual_lightning.report.stats import BOUNDS, Group, Sharing, Stat, common_overrides, compute_sharing, group_jobs
from gradual_lightning.report.write import Report, write_report

__all__ = [
    "BOUNDS", "CSV_COLUMNS", "FAILED_FILE", "METRICS", "METRICS_FILE", "PER_STAGE", "PLOTS", "RATES", "SCALARS",
    "BaselineError", "Comparison", "Difference", "Group", "Job", "PairedAccuracy", "Report", "Sharing", "Stat",
    "SweepReportCallback", "TestOutcomes",
    "bootstrap_difference", "common_overrides", "compare", "compare_groups", "compute_sharing", "csv_text",
    "data_fingerprint",
    "detectable_difference", "discordant", "find_jobs", "group_jobs", "group_name", "group_of", "main",
    "markdown_text", "mcnemar_exact", "paired_accuracy", "paired_section", "pick_baseline", "read_job",
    "read_test_outcomes", "record_failure", "setting_of", "sharing_lines", "welch_difference", "write_plots",
    "write_report",
]
