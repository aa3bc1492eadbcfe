"""The run-against-run figure: B/A of the median latency per cell, its p10-p90 interval where
several runs a side give one (reports/run_drift.py), a line at 1 and the ±threshold band, cells
sorted by ratio (one panel per later run against the first). Drawn from the CSVs alone, through
reports/comparison.py."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .comparison import ALPHA, THRESHOLD, Comparison, common, compare, labels
from .style import FAIL_COLOR, _PlainLog, empty_note

VERDICT_COLORS = {"slower": FAIL_COLOR, "faster": "#1e8449", "same": "#555555", "undecided": "#aaaaaa"}
ROW_IN = 0.22  # inches per cell: labels stay readable with a hundred cells


def run_pairs(sweep: pd.DataFrame, threshold: float = THRESHOLD, alpha: float = ALPHA) -> list[Comparison]:
    """Every later run against the first, from the combined sweep table (its `run` column)."""
    runs = list(dict.fromkeys(sweep["run"]))
    if len(runs) < 2:
        raise ValueError(f"a comparison needs two runs; the sweep table holds {runs}")
    # Stacking runs fills a column one run lacks with NaN: drop it again, so a key column that
    # only the newer run has is reported as such (not compared across as '' against a value).
    parts = {run: sweep[sweep["run"] == run].dropna(axis=1, how="all") for run in runs}
    return [
        compare(parts[runs[0]], parts[run], labels=(runs[0], run), threshold=threshold, alpha=alpha)
        for run in runs[1:]
    ]


def ratio_figure(sweep: pd.DataFrame, threshold: float = THRESHOLD, alpha: float = ALPHA) -> Figure:
    """One panel per later run: each matched cell's ratio with its interval, slowest at the top."""
    comparisons = run_pairs(sweep, threshold, alpha)
    drawn = [c.cells["ratio"].notna().sum() for c in comparisons]
    height = 1.6 + ROW_IN * max(max(drawn), 4)
    fig = Figure(figsize=(7.5 * len(comparisons), height), layout="constrained")
    for ax, comp in zip(fig.subplots(1, len(comparisons), squeeze=False)[0], comparisons, strict=True):
        _panel(ax, comp)
    return fig


def _panel(ax, comp: Comparison) -> None:
    names = labels(comp)
    cells = comp.cells[comp.cells["ratio"].notna()].sort_values("ratio", kind="stable")
    y = np.arange(len(cells))  # the largest ratio (slowest in B) at the top
    ax.axvspan(
        1 - comp.threshold, 1 + comp.threshold, color="#eeeeee", zorder=0, label=f"±{comp.threshold:g}"
    )
    ax.axvline(1.0, color="black", lw=1, zorder=1)
    for verdict, color in VERDICT_COLORS.items():
        rows = cells["verdict"].to_numpy() == verdict
        if not rows.any():
            continue
        part = cells[rows]
        lo, hi = part["ratio"] - part["ratio_p10"], part["ratio_p90"] - part["ratio"]
        err = np.vstack([lo.fillna(0), hi.fillna(0)])
        ax.errorbar(part["ratio"], y[rows], xerr=err, fmt="o", ms=4, color=color, capsize=2, label=verdict)
    ax.set_yticks(y, names[cells.index], fontsize=7)
    ax.set_xscale("log")  # 2x slower and 2x faster lie equally far from 1
    ax.xaxis.set_major_formatter(_PlainLog())
    ax.xaxis.set_minor_formatter(_PlainLog(minor_thresholds=(1.5, 0.6)))
    ax.tick_params(axis="x", which="minor", labelsize=7)
    spread = "p10-p90 from between-run drift" if comp.drift.df else "one run a side: no interval"
    ax.set_xlabel(f"B/A median latency (<1: {comp.b} faster); {spread}")
    left = len(comp.cells) - len(cells)
    title = f"{comp.b} / {comp.a}" + (f"  ({common(comp)})" if common(comp) else "")
    ax.set_title(
        title + (f"\n{left} cells without a ratio (not run, or in one run only)" if left else ""), fontsize=9
    )
    if cells.empty:
        empty_note(ax, "no cell ran in both runs")
    else:
        ax.legend(fontsize=7, loc="lower right")
