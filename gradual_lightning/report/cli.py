"""Sweep report: one table comparing the settings of a Hydra multirun, mean and 95% CI across seeds.

The command line, `python -m gradual_lightning.report <sweep_dir>` (its description is this docstring's first
line): for a sweep whose callback did not run (killed) or to write the report again elsewhere.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gradual_lightning.report.compare import BaselineError
from gradual_lightning.report.write import write_report


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gradual_lightning.report", description=__doc__.split("\n\n")[0])
    p.add_argument("sweep_dir", help="a Hydra multirun dir, e.g. multirun/2025-01-31/12-00-00")
    p.add_argument("--out", default=None, help="where to write the report (default: the sweep dir)")
    p.add_argument("--no-plots", action="store_true", help="tables only (report.md, report.csv)")
    p.add_argument("--baseline", default=None, metavar="OVERRIDES",
                   help="the group the others are compared with, per question on the same seeds: a group's name or "
                        "overrides it holds, e.g. 'schedule=one_stage' (default: the first group)")
    args = p.parse_args(argv)
    try:
        report = write_report(args.sweep_dir, args.out, plots=not args.no_plots, baseline=args.baseline)
    except (FileNotFoundError, BaselineError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report.files[0].read_text(encoding="utf-8"))
    print("wrote " + ", ".join(str(f) for f in report.files))
    return 0
