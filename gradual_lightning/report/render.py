"""What the report looks like: report.md (tables per group, paired comparisons with the baseline, failed and
unreadable jobs, plots), report.csv (one row per group, metric and stage, then one per group and difference with the
baseline) and the PNGs. Pure text from groups and comparisons, except `write_plots`, which saves the figures."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path

from gradual_lightning.categories import CATEGORIES
from gradual_lightning.report.compare import ACCURACIES, SHARES, Comparison, Difference
from gradual_lightning.report.jobs import PER_STAGE, RATES, SCALARS, Job
from gradual_lightning.report.stats import Group, Sharing, Stat, common_overrides, compute_sharing

# Difference rows (metric "diff_<metric>") fill the columns after n_failed; "mean" is the difference, "n" the seeds.
CSV_COLUMNS = ("group", "metric", "stage", "n", "mean", "ci_low", "ci_high", "n_failed", "baseline", "method",
               "n_questions", "p_value", "p_per_seed", "detectable", "only_baseline_right", "only_group_right")
PLOTS = ("knowledge_acquired.png", "transitions_final.png", "paired_differences.png")
# What the forest plot shows, with panel titles.
FOREST = {"test_accuracy": "test accuracy", "retention": "retention (base HighlyKnown)",
          "knowledge_acquired_trained": "acquired, trained", "knowledge_acquired_untrained": "acquired, never trained",
          "test_hallucination_rate": "hallucination rate (test)"}


def _num(x: float) -> str:
    return "" if math.isnan(x) else f"{x:.6g}"


def _opt(x: float | None) -> str:
    return "" if x is None else _num(x)


def csv_text(groups: Sequence[Group], comparisons: Sequence[Comparison] = ()) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for g in groups:
        rows = [(m, "", g.scalar(m)) for m in (*SCALARS, *RATES)]
        rows += [(m, i, st) for m in PER_STAGE for i, st in enumerate(g.per_stage(m))]
        for metric, stage, st in rows:
            row = [g.name, metric, stage, st.n, _num(st.mean), _num(st.low), _num(st.high), len(g.failed)]
            w.writerow(row + [""] * (len(CSV_COLUMNS) - len(row)))
    for c in comparisons:
        for d in c.differences:
            b, o = d.discordant or ("", "")
            w.writerow([c.group.name, f"diff_{d.metric}", "", d.n_seeds, _num(d.diff), _num(d.low), _num(d.high),
                        len(c.group.failed), c.baseline.name, d.method, d.n_questions or "", _opt(d.p_value),
                        ";".join(f"{s}:{_num(p)}" for s, p in d.p_per_seed.items()), _opt(d.detectable), b, o])
    return buf.getvalue()


def _cell(st: Stat, digits: int) -> str:
    if st.n == 0:
        return "-"
    if math.isnan(st.low):
        return f"{st.mean:.{digits}f}"
    return f"{st.mean:.{digits}f} [{st.low:.{digits}f}, {st.high:.{digits}f}]"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _diff_cell(d: Difference | None) -> str:
    if d is None:
        return "-"
    digits = 3 if d.metric in SHARES else 1
    if math.isnan(d.low):
        return f"{d.diff:+.{digits}f}"
    return f"{d.diff:+.{digits}f} [{d.low:+.{digits}f}, {d.high:+.{digits}f}]"


def _pairing(c: Comparison) -> str:
    if c.paired:
        return f"paired, seeds {', '.join(map(str, c.paired_seeds))}"
    return f"**unpaired** ({len(c.baseline.finished)} vs {len(c.group.finished)} seeds)"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def sharing_lines(sharing: Sharing) -> list[str]:
    """report.md's paragraph on the stage cache: how many stages were reused, and the training time that saved."""
    if not sharing.stages:
        return []
    if not sharing.reused:
        return [f"Stage cache: no stage was reused; all {sharing.stages} stages of the finished jobs were trained.", ""]
    return [f"Stage cache: {sharing.reused} of the finished jobs' {sharing.stages} stages were reused from another "
            f"job's training instead of trained again, saving {_duration(sharing.saved_s)} of compute (the wall time "
            "those stages took where they were trained; `reused_from` in metrics.json).", ""]


def paired_section(comparisons: Sequence[Comparison]) -> list[str]:
    """The "Paired comparisons" section of report.md: every group minus the baseline, on the seeds both ran."""
    if not comparisons:
        return []
    base = comparisons[0].baseline
    lines = ["", "## Paired comparisons", "",
             f"Each group minus the baseline `{_md_escape(base.label)}` (`--baseline`, `report.baseline`), on the "
             "seeds both ran. Paired where the two jobs of a seed share the data split (same `data_fingerprint`): "
             "per test question, pooled over seeds, 95% interval from a stratified bootstrap (2000 resamples of the "
             "questions within each seed); p: exact McNemar test on the discordant questions summed over seeds "
             "(per-seed p in report.csv); discordant: questions only the baseline / only the group answers right; "
             "detectable: the difference these questions find with 80% power at alpha 0.05, "
             "2.80 * sqrt(discordant share / questions) (none without discordant questions; with few, trust p over "
             "the interval). Knowledge acquired (pool, final stage; trained and never "
             "trained questions): per-seed differences, Student t interval. Test hallucination (a wrong answer that "
             "is not the abstention text) and abstention rates: per question as accuracy where the job dirs keep "
             "their test answers (`probe/test_answers.json`), else per-seed differences, t interval (method in "
             "report.csv). **unpaired**: no seed shares the split; "
             "difference of the means across seeds, Welch interval (see the notes).", "",
             "| group | pairing | test accuracy diff | McNemar p | discordant | questions (all seeds) | detectable |",
             "|---|---|---|---|---|---|---|"]
    for c in comparisons:
        d = c.get("test_accuracy")
        cells = ["-"] * 4
        if d is not None and d.p_value is not None:  # paired per question
            cells = [f"{d.p_value:.3g}", f"{d.discordant[0]} / {d.discordant[1]}", str(d.n_questions),
                     "-" if math.isnan(d.detectable) else f"{d.detectable:.3f}"]
        lines.append(f"| {_md_escape(c.group.label)} | {_pairing(c)} | {_diff_cell(d)} | " + " | ".join(cells) + " |")
    others = [m for m in ACCURACIES if m != "test_accuracy"]
    heads = ["retention diff (base HighlyKnown)"] + [f"{c} diff" for c in CATEGORIES[1:]]
    heads += ["acquired, trained", "acquired, never trained", "hallucination rate diff", "abstention rate diff"]
    lines += ["", "| group | pairing | " + " | ".join(heads) + " |", "|---" * (len(heads) + 2) + "|"]
    for c in comparisons:
        cells = [_diff_cell(c.get(m)) for m in (*others, "knowledge_acquired_trained", "knowledge_acquired_untrained",
                                                *RATES)]
        lines.append(f"| {_md_escape(c.group.label)} | {_pairing(c)} | " + " | ".join(cells) + " |")
    notes = [f"- {_md_escape(c.group.label)}: {_md_escape(n)}" for c in comparisons for n in c.notes]
    if notes:
        lines += ["", "Seeds not paired:", "", *notes]
    return lines


def markdown_text(sweep_dir: Path, jobs: Sequence[Job], groups: Sequence[Group], plots: Sequence[str],
                  comparisons: Sequence[Comparison] = ()) -> str:
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
             *sharing_lines(compute_sharing(jobs)),
             "| group | seeds | failed | test accuracy | retention | knowledge acquired (final) | incremental gain "
             "| acquired, untrained (final) | hallucination rate | abstention rate |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for g in groups:
        seeds = f" ({', '.join(str(j.seed) for j in g.finished)})" if g.finished else ""
        lines.append(f"| {_md_escape(g.label)} | {len(g.finished)}{seeds} | {len(g.failed)} "
                     f"| {_cell(g.scalar('test_accuracy'), 3)} | {_cell(g.scalar('retention'), 3)} "
                     f"| {_cell(g.final('knowledge_acquired'), 1)} | {_cell(g.scalar('incremental_gain'), 2)} "
                     f"| {_cell(g.final('knowledge_acquired_untrained'), 1)} | "
                     + " | ".join(_cell(g.scalar(m), 3) for m in RATES) + " |")
    for metric, title in (("knowledge_acquired", "Knowledge acquired per stage"),
                          ("knowledge_acquired_untrained", "Knowledge acquired per stage, never-trained questions")):
        stats = {g.label: g.per_stage(metric) for g in groups}
        width = max(map(len, stats.values()), default=0)
        if width:
            lines += ["", f"## {title}", "", "| group | " + " | ".join(f"stage {i}" for i in range(width)) + " |",
                      "|---" * (width + 1) + "|"]
            lines += ["| " + " | ".join([_md_escape(label), *(_cell(s, 1) for s in st), *["-"] * (width - len(st))])
                      + " |" for label, st in stats.items()]
    lines += paired_section(comparisons)
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


def write_plots(out_dir: Path, groups: Sequence[Group], comparisons: Sequence[Comparison] = ()) -> list[str]:
    """Save the plots of the groups that have a finished job into `out_dir`; their file names, for report.md."""
    from gradual_lightning.plots import differences_figure, knowledge_acquired_figure, save_png, transitions_figure

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
    labels = [c.group.label + ("" if c.paired else " (unpaired)") for c in comparisons]
    panels = {f"{title}\nminus {comparisons[0].baseline.label}": {
        label: (d.diff, d.low, d.high) for label, c in zip(labels, comparisons) if (d := c.get(metric))}
        for metric, title in FOREST.items()} if comparisons else {}
    panels = {title: rows for title, rows in panels.items() if rows}
    if panels:
        save_png(differences_figure(labels, panels), out_dir / PLOTS[2])
        written.append(PLOTS[2])
    return written
