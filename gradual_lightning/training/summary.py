"""The table a run prints at the end: per-stage counts, accuracy, acquired knowledge, and the last transitions; for a
schedule that trains abstention, the test answers by base category (correct, abstained, hallucinated)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from gradual_lightning.categories import CATEGORIES


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def stage_table(metrics: dict[str, Any]) -> Table:
    t = Table(title="Pool categories and test accuracy per stage (stage 0 = base model)")
    for col in ("stage", *CATEGORIES, "test acc", "acquired", "trained/untrained", "forgotten", "trained on"):
        t.add_column(col, justify="right")
    stages = metrics["stages"]
    for s, counts in enumerate(metrics["pool_counts"]):
        rec = stages[s - 1] if s > 0 else {}
        split = f"{metrics['knowledge_acquired_trained'][s]:+d}/{metrics['knowledge_acquired_untrained'][s]:+d}" \
            if s < len(metrics["knowledge_acquired_trained"]) else "-"
        t.add_row(str(s), *(str(counts[c]) for c in CATEGORIES), _pct(metrics["test_accuracy_per_stage"][s]),
                  f"{metrics['knowledge_acquired'][s]:+d}", split, str(metrics["forgotten"][s]),
                  _trained_on(rec) if s else "-")
    return t


def _trained_on(rec: dict[str, Any]) -> str:
    """n_selected+n_replay replay, with the questions trained to abstain between them when there are any."""
    abstain = f"{rec['n_abstain']} abstain+" if rec.get("n_abstain") else ""
    return f"{rec.get('n_selected', 0)}+{abstain}{rec.get('n_replay', 0)} replay"


def transition_table(matrix: list[list[int]], stage: int) -> Table:
    t = Table(title=f"Transitions base -> after stage {stage} (rows: base category)")
    t.add_column("base \\ now")
    for c in CATEGORIES:
        t.add_column(c, justify="right")
    for c, row in zip(CATEGORIES, matrix):
        t.add_row(c, *(str(v) for v in row))
    return t


def abstention_table(metrics: dict[str, Any]) -> Table:
    stage = len(metrics["stages"])
    t = Table(title=f"Test answers after stage {stage} by base category ({metrics['abstention_text']!r} = abstained)")
    for col in ("base category", "correct", "abstained", "hallucinated"):
        t.add_column(col, justify="right")
    by = [metrics[k] for k in ("test_accuracy_by_base_category", "test_abstention_by_base_category",
                               "test_hallucination_by_base_category")]
    for c in CATEGORIES:
        if c in by[0]:
            t.add_row(c, *(_pct(d.get(c)) for d in by))
    t.add_row("all", *(_pct(metrics[k]) for k in ("test_accuracy", "test_abstention_rate", "test_hallucination_rate")))
    return t


def print_summary(metrics: dict[str, Any], out_dir: str | Path, console: Console | None = None) -> None:
    console = console or Console(width=max(120, shutil.get_terminal_size((120, 24)).columns))
    console.print(stage_table(metrics))
    console.print(transition_table(metrics["transitions"][-1], len(metrics["transitions"]) - 1))
    if any(rec["config"].get("abstain_categories") or rec.get("n_abstain") for rec in metrics["stages"]):
        console.print(abstention_table(metrics))
    gain = metrics["incremental_gain"]
    console.print(
        f"test accuracy {_pct(metrics['test_accuracy'])} (base {_pct(metrics['test_accuracy_per_stage'][0])}), "
        f"retention {_pct(metrics['retention'])}, incremental gain of stage 2 over stage 1: "
        f"{'-' if gain is None else f'{gain:.2f}'}"
    )
    console.print(f"results in {out_dir} (metrics.json, run.json, probe/, checkpoints/)")
