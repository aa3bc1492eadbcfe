"""The serving figure: decode tokens per second against batch size, per variant, for one
distribution of request lengths and one cache layout per panel.

Reads sweep.csv columns only: decode rows with `tokens_per_s` (b * q_len / median step time),
grouped by `lengths` (the distribution the b requests' cache lengths were drawn from),
`kv_layout`/`page_size` and `q_len`. Each panel's caption names its mean padding waste.
"""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from .load import with_labels
from .style import colors, figure_legend, panels, plain_log_x

SERVING_COLUMNS = ("tokens_per_s", "lengths", "kv_layout")
PANEL = ["lengths", "kv_layout", "page_size", "q_len"]


def serving_points(sweep: pd.DataFrame) -> pd.DataFrame:
    """ok decode rows with tokens_per_s, one label per variant series (batch is the x axis)."""
    ok = sweep[(sweep["status"] == "ok") & (sweep["mode"] == "decode")].dropna(subset=["tokens_per_s"])
    candidates = ("dim", "n_heads", "n_kv_heads", "head_dim", "dtype", "compile")
    return with_labels(ok, candidates=candidates, run=True)


def throughput_figure(sweep: pd.DataFrame) -> Figure:
    """One panel per (lengths, layout, q_len): tokens/s against b, a line per variant."""
    points = serving_points(sweep)
    if points.empty:
        raise ValueError("no ok decode rows with tokens_per_s")
    groups = list(points.groupby(PANEL, sort=True, dropna=False))
    labels = sorted(points["label"].unique())
    fig, axes = panels(len(groups))
    palette = colors(labels)
    for ax, (key, group) in zip(axes, groups, strict=False):
        for label, series in group.groupby("label", sort=True):
            series = series.groupby("batch", as_index=False)["tokens_per_s"].median().sort_values("batch")
            ax.plot(series["batch"], series["tokens_per_s"], marker="o", color=palette[label], label=label)
        plain_log_x(ax)
        ax.set_yscale("log")
        ax.set_xlabel("batch size b (requests per step)")
        ax.set_ylabel("tokens/s (b * q_len / median step)")
        ax.set_title(_title(key, group), fontsize=9)
    figure_legend(fig, axes)
    fig.suptitle("Decode throughput against batch size")
    return fig


def _title(key: tuple, group: pd.DataFrame) -> str:
    lengths, layout, page, q_len = key
    where = f"{layout} (pages of {page:g})" if layout == "paged" else str(layout)
    waste = group["padding_waste"].mean() if "padding_waste" in group else float("nan")
    return f"lengths {lengths} · {where} · q_len {q_len:g} · mean padding_waste {waste:.2f}"
