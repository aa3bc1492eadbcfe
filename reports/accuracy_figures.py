"""Figures from accuracy.csv: accuracy per task and variant with the seed spread, and accuracy
against KV-cache bytes (the GQA trade-off: fewer KV heads, smaller cache, how much accuracy).

Series are named by variant, options and whichever of n_heads, n_kv_heads, init and run vary.
Rows that did not finish (status != ok) are drawn as red x marks with their status.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .load import require, with_labels
from .marks import MARK, MARK_NOTE, leaky
from .style import (
    FAIL_COLOR,
    FAIL_GID,
    PAGE_INCHES,
    byte_unit,
    colors,
    empty_note,
    figure_legend,
    panels,
    plain_log_x,
)

ACCURACY_COLUMNS = ("task", "variant", "accuracy", "status")
TRADEOFF_COLUMNS = (*ACCURACY_COLUMNS, "kv_cache_bytes")
LABEL_COLUMNS = ("n_heads", "n_kv_heads", "init")


def accuracy_stats(accuracy: pd.DataFrame) -> pd.DataFrame:
    """Per (task, label): mean and sample std of accuracy over ok seeds, seed count, failures."""
    require(accuracy, ACCURACY_COLUMNS, "accuracy.csv")
    df = with_labels(accuracy, LABEL_COLUMNS)
    ok = df[(df["status"] == "ok") & df["accuracy"].notna()]
    agg = dict(mean=("accuracy", "mean"), std=("accuracy", "std"), seeds=("accuracy", "size"))
    if "kv_cache_bytes" in ok.columns:
        agg["kv_cache_bytes"] = ("kv_cache_bytes", "median")
    if "loss" in ok.columns:
        agg["loss"] = ("loss", "mean")
    stats = ok.groupby(["task", "label"]).agg(**agg)
    failed = df[df["status"] != "ok"].groupby(["task", "label"]).size().rename("failed")
    marked = df.assign(leak=leaky(df)).groupby(["task", "label"])["leak"].any()
    stats = stats.join(failed, how="outer").join(marked, how="outer").reset_index()
    stats["std"] = stats["std"].fillna(0.0)  # one seed: no spread to show (tables say n=1)
    stats[["seeds", "failed"]] = stats[["seeds", "failed"]].fillna(0).astype(int)
    stats["leak"] = stats["leak"].fillna(False).astype(bool)
    return stats


def accuracy_figure(accuracy: pd.DataFrame) -> Figure:
    """One panel per task: a bar per series at the mean over seeds, ±1 std, and every seed as a dot."""
    stats = accuracy_stats(accuracy)
    df = with_labels(accuracy, LABEL_COLUMNS)
    tasks = sorted(df["task"].astype(str).unique())
    palette = colors(df["label"])
    width = max(5.0, 0.75 * df["label"].nunique() + 2)  # a bar per series, each name legible under it
    # Panels side by side while they fit the page (~16 in); wider ones (many series) stack.
    cols = max(1, min(len(tasks), int(PAGE_INCHES // width)))
    fig, axes = panels(len(tasks), width=min(width, PAGE_INCHES), height=4.6, cols=cols)
    for ax, task in zip(axes, tasks, strict=True):
        _task_bars(ax, df[df["task"] == task], stats[stats["task"] == task], palette)
        ax.set_title(f"task: {task}")
    note = f"; {MARK_NOTE}" if stats["leak"].any() else ""
    fig.suptitle(f"Accuracy per task (bar: mean over seeds, whisker: ±1 std, dots: seeds{note})")
    return fig


def _task_bars(ax, rows: pd.DataFrame, stats: pd.DataFrame, palette: dict) -> None:
    labels = sorted(rows["label"].unique())
    stats = stats.set_index("label").reindex(labels)
    xs = np.arange(len(labels))
    bar_colors = [palette[label] for label in labels]
    ax.bar(xs, stats["mean"].fillna(0), 0.7, yerr=stats["std"], capsize=4, color=bar_colors, alpha=0.8)
    jitter = np.random.default_rng(0)  # fixed, so redrawing a run gives the same picture
    for x, label in zip(xs, labels, strict=True):
        seeds = rows[(rows["label"] == label) & (rows["status"] == "ok")]["accuracy"].dropna()
        ax.scatter(x + jitter.uniform(-0.15, 0.15, len(seeds)), seeds, s=14, color="black", zorder=4)
        failed = rows[(rows["label"] == label) & (rows["status"] != "ok")]
        if not failed.empty:
            status = "/".join(sorted(set(failed["status"])))
            ax.scatter([x], [0.03], marker="x", s=60, color=FAIL_COLOR, linewidths=2, zorder=5, gid=FAIL_GID)
            ax.annotate(f"{len(failed)} {status}", (x, 0.03), xytext=(0, 6), textcoords="offset points",
                        ha="center", fontsize=7, color=FAIL_COLOR)  # fmt: skip
    flags = stats["leak"].fillna(False).astype(bool)
    names = [label + (MARK if flags[label] else "") for label in labels]
    ax.set_xticks(xs, names, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy (fraction correct)")
    ax.grid(True, axis="y", alpha=0.25)


def tradeoff_figure(accuracy: pd.DataFrame) -> Figure:
    """One panel per task: mean accuracy (±1 std over seeds) against KV-cache bytes, log x."""
    require(accuracy, TRADEOFF_COLUMNS, "accuracy.csv (accuracy vs KV-cache figure)")
    stats = accuracy_stats(accuracy)
    tasks = sorted(stats["task"].astype(str).unique())
    palette = colors(stats["label"])
    div, unit = byte_unit(stats["kv_cache_bytes"].dropna())
    fig, axes = panels(len(tasks), width=5.5)
    for ax, task in zip(axes, tasks, strict=True):
        points = stats[(stats["task"] == task) & stats["mean"].notna() & stats["kv_cache_bytes"].notna()]
        # Variants sharing a cache size (gqa and kdgqa at the same g) are nudged apart to stay visible.
        rank = (
            points.groupby("kv_cache_bytes").cumcount()
            - (points.groupby("kv_cache_bytes")["label"].transform("size") - 1) / 2
        )
        for row, nudge in zip(points.itertuples(), rank, strict=True):
            name = row.label + (MARK if row.leak else "")
            ax.errorbar(row.kv_cache_bytes / div * 2 ** (0.06 * nudge), row.mean, yerr=row.std, fmt="o", ms=7,
                        capsize=4, color=palette[row.label], label=name)  # fmt: skip
        if points.empty:
            empty_note(ax, "no finished rows with kv_cache_bytes")
        plain_log_x(ax)
        ax.set_xlabel(f"KV-cache size ({unit}, log scale)")
        ax.set_ylabel("accuracy (fraction correct)")
        ax.set_title(f"task: {task}")
        ax.grid(True, which="both", alpha=0.25)
    figure_legend(fig, axes)
    note = f"; {MARK_NOTE}" if stats["leak"].any() else ""
    fig.suptitle(f"Accuracy against KV-cache size (mean ± std over seeds{note})")
    return fig
