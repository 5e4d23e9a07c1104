"""What a probe found, for people: counts per category overall and per relation, a table, a stacked bar chart."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from gradual_lightning.categories import CATEGORIES, Category
from gradual_lightning.training.metrics import category_counts


def counts_by_relation(results: Sequence) -> dict[str, dict[str, int]]:
    relations = sorted({r.relation for r in results})
    return {rel: category_counts([r.category for r in results if r.relation == rel]) for rel in relations}


def summary_table(results: Sequence, title: str = "Probe categories"):
    """A rich Table: one row per relation plus a total row."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("relation")
    for c in CATEGORIES:
        table.add_column(c, justify="right")
    table.add_column("total", justify="right")
    for rel, counts in counts_by_relation(results).items():
        table.add_row(rel, *(str(counts[c]) for c in CATEGORIES), str(sum(counts.values())))
    total = category_counts([r.category for r in results])
    table.add_row("[bold]all", *(f"[bold]{total[c]}" for c in CATEGORIES), f"[bold]{len(results)}")
    return table


def plot_categories(results: Sequence, path: str | Path, title: str = "SliCK categories per relation") -> Path:
    """Stacked horizontal bars, one per relation: where the model's knowledge is."""
    from matplotlib.figure import Figure

    from gradual_lightning.plots import save_png

    by_rel = counts_by_relation(results)
    rels = list(by_rel)
    fig = Figure(figsize=(8, 1.6 + 0.45 * len(rels)), layout="constrained")
    ax = fig.subplots()
    left = [0] * len(rels)
    for c in Category:
        vals = [by_rel[r][c.value] for r in rels]
        ax.barh(rels, vals, left=left, color=c.colour, label=c.value)
        left = [a + b for a, b in zip(left, vals)]
    ax.set_xlabel("questions")
    ax.set_title(title)
    ax.invert_yaxis()
    fig.legend(ncol=4, loc="outside lower center", frameon=False)  # below the axis label, never over it
    return save_png(fig, path, dpi=110)
