"""What the report looks like: report.md (tables per group, failed and unreadable jobs, plots), report.csv (one
row per group, metric and stage) and the PNGs. Pure text from groups, except `write_plots`, which saves the figures."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path

from gradual_lightning.report.jobs import PER_STAGE, SCALARS, Job
from gradual_lightning.report.stats import Group, Stat, common_overrides

CSV_COLUMNS = ("group", "metric", "stage", "n", "mean", "ci_low", "ci_high", "n_failed")
PLOTS = ("knowledge_acquired.png", "transitions_final.png")


def _num(x: float) -> str:
    return "" if math.isnan(x) else f"{x:.6g}"


def csv_text(groups: Sequence[Group]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for g in groups:
        rows = [(m, "", g.scalar(m)) for m in SCALARS]
        rows += [(m, i, st) for m in PER_STAGE for i, st in enumerate(g.per_stage(m))]
        for metric, stage, st in rows:
            w.writerow([g.name, metric, stage, st.n, _num(st.mean), _num(st.low), _num(st.high), len(g.failed)])
    return buf.getvalue()


def _cell(st: Stat, digits: int) -> str:
    if st.n == 0:
        return "-"
    if math.isnan(st.low):
        return f"{st.mean:.{digits}f}"
    return f"{st.mean:.{digits}f} [{st.low:.{digits}f}, {st.high:.{digits}f}]"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_text(sweep_dir: Path, jobs: Sequence[Job], groups: Sequence[Group], plots: Sequence[str]) -> str:
    failed = [j for j in jobs if not j.ok and not j.unreadable]
    unreadable = [j for j in jobs if j.unreadable]
    common = common_overrides(groups)
    lines = [f"# Sweep report: `{sweep_dir}`", "",
             f"{len(jobs)} jobs: {sum(j.ok for j in jobs)} finished, {len(failed)} failed or unfinished"
             + (f" ({n_term} terminated by a signal)" if (n_term := sum(j.terminated for j in failed)) else "")
             + (f", {len(unreadable)} unreadable" if unreadable else "") + ". Cells: mean "
             "[95% CI, Student t] across seeds (no interval with one seed; accuracies' intervals clipped to [0, 1]); "
             "knowledge acquired = HighlyKnown questions of the pool after the stage minus before training."
             + (f" Overrides of every job: `{' '.join(common)}`." if common else ""), "",
             "| group | seeds | failed | test accuracy | retention | knowledge acquired (final) | incremental gain "
             "| acquired, untrained (final) |",
             "|---|---|---|---|---|---|---|---|"]
    for g in groups:
        seeds = f" ({', '.join(str(j.seed) for j in g.finished)})" if g.finished else ""
        lines.append(f"| {_md_escape(g.label)} | {len(g.finished)}{seeds} | {len(g.failed)} "
                     f"| {_cell(g.scalar('test_accuracy'), 3)} | {_cell(g.scalar('retention'), 3)} "
                     f"| {_cell(g.final('knowledge_acquired'), 1)} | {_cell(g.scalar('incremental_gain'), 2)} "
                     f"| {_cell(g.final('knowledge_acquired_untrained'), 1)} |")
    for metric, title in (("knowledge_acquired", "Knowledge acquired per stage"),
                          ("knowledge_acquired_untrained", "Knowledge acquired per stage, never-trained questions")):
        stats = {g.label: g.per_stage(metric) for g in groups}
        width = max(map(len, stats.values()), default=0)
        if width:
            lines += ["", f"## {title}", "", "| group | " + " | ".join(f"stage {i}" for i in range(width)) + " |",
                      "|---" * (width + 1) + "|"]
            lines += ["| " + " | ".join([_md_escape(label), *(_cell(s, 1) for s in st), *["-"] * (width - len(st))])
                      + " |" for label, st in stats.items()]
    if failed:
        lines += ["", "## Failed jobs", "", "| job | overrides | error |", "|---|---|---|"]
        lines += [f"| `{j.dir.relative_to(sweep_dir)}` | {_md_escape(' '.join(j.overrides))} "
                  f"| {_md_escape(j.error or '')} |" for j in failed]
    if unreadable:
        lines += ["", "## Unreadable jobs", "", "Left out of the tables: a file of the job dir could not be parsed or "
                  "has not the expected shape.", "", "| job | reason |", "|---|---|"]
        lines += [f"| `{j.dir.relative_to(sweep_dir)}` | {_md_escape(j.error or '')} |" for j in unreadable]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def write_plots(out_dir: Path, groups: Sequence[Group]) -> list[str]:
    """Save the plots of the groups that have a finished job into `out_dir`; their file names, for report.md."""
    from gradual_lightning.plots import knowledge_acquired_figure, save_png, transitions_figure

    done = [g for g in groups if g.finished]
    if not done:
        return []
    series = {g.label: [(s.mean, s.low, s.high) for s in g.per_stage("knowledge_acquired")] for g in done}
    save_png(knowledge_acquired_figure(series), out_dir / PLOTS[0])
    written = [PLOTS[0]]
    mats = {f"{g.label}\n(final stage, mean of {len(g.finished)})": m for g in done
            if (m := g.mean_final_transitions()) is not None}
    if mats:
        save_png(transitions_figure(mats), out_dir / PLOTS[1])
        written.append(PLOTS[1])
    return written
