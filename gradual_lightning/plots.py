"""Figures shared by W&B logging and the sweep report: transition heatmaps, knowledge acquired per stage, and
differences against a baseline (forest plot).

Built with matplotlib's object API (`Figure`, no pyplot): no global state, no display backend, safe in workers.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.figure import Figure

from gradual_lightning.categories import CATEGORIES, Category
from gradual_lightning.io import atomic_write_bytes


def draw_transitions(ax, matrix: Sequence[Sequence[float]], title: str = "") -> None:
    """One 4x4 heatmap on `ax`: rows = base category, columns = category now (CATEGORIES order), cells annotated."""
    if len(matrix) != len(CATEGORIES) or any(len(row) != len(CATEGORIES) for row in matrix):
        raise ValueError(f"a transition matrix is {len(CATEGORIES)}x{len(CATEGORIES)}, got {matrix!r}")
    top = max((v for row in matrix for v in row), default=0) or 1
    ax.imshow(matrix, cmap="Blues", vmin=0, vmax=top)
    short = [c.short for c in Category]
    ax.set_xticks(range(len(CATEGORIES)), short)
    ax.set_yticks(range(len(CATEGORIES)), short)
    ax.set_xlabel("category now")
    ax.set_ylabel("base model's category")
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            text = f"{v:g}" if float(v).is_integer() else f"{v:.1f}"
            ax.text(j, i, text, ha="center", va="center", color="white" if v > top / 2 else "black")
    if title:
        ax.set_title(title, fontsize=9)


def transitions_figure(matrices: Mapping[str, Sequence[Sequence[float]]], cols: int = 3) -> Figure:
    """One heatmap per entry ({title: matrix}), in a grid of at most `cols` columns."""
    if not matrices:
        raise ValueError("no transition matrix to plot")
    cols = min(cols, len(matrices))
    rows = math.ceil(len(matrices) / cols)
    fig = Figure(figsize=(3.6 * cols, 3.4 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (title, matrix) in zip(axes, matrices.items()):
        draw_transitions(ax, matrix, title)
    for ax in axes[len(matrices):]:
        ax.set_visible(False)
    return fig


def knowledge_acquired_figure(series: Mapping[str, Sequence[tuple[float, float, float]]]) -> Figure:
    """Knowledge acquired per stage, one line per group: {label: [(mean, low, high) per stage]}; the CI is drawn as
    error bars where it is known (NaN bounds: one seed, no bar)."""
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.subplots()
    for k, (label, points) in enumerate(series.items()):
        x = [i + 0.06 * (k - (len(series) - 1) / 2) for i in range(len(points))]  # dodge: bars side by side
        ax.errorbar(x, [m for m, _, _ in points], yerr=_err(points), marker="o", capsize=3, label=label)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("stage (0 = base model)")
    ax.set_ylabel("knowledge acquired (HighlyKnown - base)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    if series:
        ax.legend(fontsize=8)
    return fig


def _err(points: Sequence[tuple[float, float, float]]) -> list[list[float]]:
    """Error-bar lengths below and above each (value, low, high); 0 where a bound is unknown (NaN)."""
    return [[0.0 if math.isnan(lo) else m - lo for m, lo, _ in points],
            [0.0 if math.isnan(hi) else hi - m for m, _, hi in points]]


def differences_figure(labels: Sequence[str], panels: Mapping[str, Mapping[str, tuple[float, float, float]]]) -> Figure:
    """Forest plot: one panel per metric ({title: {label: (difference, low, high)}}), one row per label (the same
    rows in every panel; a label a panel lacks is left empty), the difference against the baseline with its
    interval, and a line at 0 (no difference)."""
    if not panels or not labels:
        raise ValueError("no difference to plot")
    fig = Figure(figsize=(3.4 * len(panels) + 1.6, 0.45 * len(labels) + 1.3), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False, sharey=True).ravel()
    for ax, (title, rows) in zip(axes, panels.items()):
        shown = [(i, rows[label]) for i, label in enumerate(labels) if label in rows]
        points = [p for _, p in shown]
        ax.errorbar([m for m, _, _ in points], [i for i, _ in shown], xerr=_err(points), fmt="o", capsize=3)
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_title(title, fontsize=9)
    axes[0].set_yticks(range(len(labels)), labels, fontsize=8)
    axes[0].set_ylim(len(labels) - 0.5, -0.5)  # first label on top
    return fig


def png_bytes(fig: Figure, dpi: int = 120) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def save_png(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Write the figure as a PNG atomically."""
    return atomic_write_bytes(path, png_bytes(fig, dpi))
