"""The Hydra callback that writes the sweep report when a multirun ends (registered in conf/train.yaml)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from gradual_lightning.report.compare import BaselineError
from gradual_lightning.report.write import write_report

log = logging.getLogger(__package__)  # "gradual_lightning.report", as in the logs of sweeps before the split


class SweepReportCallback(Callback):
    """Writes the sweep report when a multirun ends. With `fail_on_job_error`, a sweep in which a job failed (or
    left a dir the report cannot read) exits with status 1 after the report is written (so scripts and CI see it);
    the other jobs have run regardless. The baseline of the paired comparisons is `baseline`, else the config's
    `report.baseline` (e.g. `report.baseline="schedule=one_stage"`), else the first group."""

    def __init__(self, fail_on_job_error: bool = True, baseline: str | None = None) -> None:
        self.fail_on_job_error = fail_on_job_error
        self.baseline = baseline

    def on_multirun_end(self, config, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        baseline = self.baseline or OmegaConf.select(config, "report.baseline", default=None)
        try:
            try:
                report = write_report(sweep_dir, baseline=None if baseline is None else str(baseline))
            except BaselineError as e:  # a mistyped baseline must not cost the sweep its report
                log.error("%s: comparing with the first group instead", e)
                report = write_report(sweep_dir)
        except Exception:  # the jobs' results are on disk: say how to retry instead of hiding it in a warning
            log.exception("sweep report failed; retry with: python -m gradual_lightning.report %s%s", sweep_dir,
                          f" --baseline '{baseline}'" if baseline else "")
            return
        log.info("sweep report: %s", report.files[0])
        if report.failed:
            n_term = sum(j.terminated for j in report.failed)
            log.error("%d of %d jobs failed%s (see %s):\n%s", len(report.failed), len(report.jobs),
                      f", {n_term} of them terminated" if n_term else "", report.files[0],
                      "\n".join(f"  {j.dir}: {j.error}" for j in report.failed))
            if self.fail_on_job_error:
                sys.exit(1)
