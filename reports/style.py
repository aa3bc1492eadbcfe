"""Plot helpers shared by the figure modules: colours, byte units, failure marks, legends.

Figures are built as bare `matplotlib.figure.Figure` objects, not through pyplot: no backend
or global figure registry is touched, nothing opens a window, and figures are freed when
dropped. Saving to PNG renders with Agg.
"""

from __future__ import annotations

from collections.abc import Iterable

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogFormatter, NullLocator

MODE_ORDER = ("fwd", "fwd_bwd", "decode")
MODE_TITLES = {"fwd": "fwd (prefill)", "fwd_bwd": "fwd_bwd (training step)", "decode": "decode (1 token)"}
BYTE_UNITS = ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB"), (1, "B"))
FAIL_COLOR = "#c0392b"
FAIL_GID = "failed-cells"  # marks the x scatters, so legends (and tests) can find them


def modes(df: pd.DataFrame) -> list[str]:
    """The modes present, in the canonical order, unknown ones after."""
    present = list(dict.fromkeys(df["mode"].astype(str)))
    return [m for m in MODE_ORDER if m in present] + sorted(m for m in present if m not in MODE_ORDER)


def colors(labels: Iterable[str]) -> dict[str, tuple]:
    """One colour per series label, the same in every panel of a figure."""
    unique = sorted(set(labels))
    cmap = matplotlib.colormaps["tab10" if len(unique) <= 10 else "tab20"]
    return {label: cmap(i % cmap.N) for i, label in enumerate(unique)}


def byte_unit(values: pd.Series) -> tuple[float, str]:
    """The binary unit (divisor, name) that suits the largest value."""
    top = float(np.nanmax(values)) if len(values) and np.isfinite(np.nanmax(values)) else 0.0
    return next((div, name) for div, name in BYTE_UNITS if top >= div or div == 1)


def panels(n: int, width: float = 5.5, height: float = 4.2, cols: int | None = None) -> tuple[Figure, list]:
    """A row (or grid) of n panels; returns the figure and a flat list of axes."""
    cols = cols or (n if n <= 3 else -(-n // 2))  # four panels read better as 2x2 than 1x4
    rows = -(-n // cols)
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_axis_off()
    return fig, flat[:n]


PAGE_INCHES = 16.0  # widest figure: 1,760 px at the report's 110 dpi, in a 1,600 px page at >= 90 %
FAILED_ENTRY = "x: cell did not run (status written beside it)"
LEGEND_COLUMNS = 4  # entries per legend row: 17 series make 5 rows under a 3-panel figure


def figure_legend(fig: Figure, axes: Iterable[Axes], ncol: int = LEGEND_COLUMNS) -> None:
    """One legend for the whole figure, under its panels: every series once (a label drawn in
    several panels has one colour everywhere), so no panel carries its own long legend and the
    axes keep their size. Where any panel marked failures, one extra entry explains the x."""
    entries: dict[str, object] = {}
    failed = False
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
        failed = failed or any(c.get_gid() == FAIL_GID for c in ax.collections)
    if failed:
        entries[FAILED_ENTRY] = Line2D([], [], ls="", marker="x", color="grey", mew=2)
    if entries:
        fig.legend(list(entries.values()), list(entries), loc="outside lower center", fontsize=9,
                   frameon=False, ncols=min(ncol, len(entries)))  # fmt: skip


def mark_failures(ax: Axes, failed: pd.DataFrame, x: str, color, row: int, label: str) -> None:
    """Cells that did not run: an x at the bottom of the panel at their x, the status written once.

    `row` (0, 1, ...) stacks several failing series so their marks do not overlap.
    """
    y = 0.04 + 0.08 * row
    ax.scatter(failed[x], [y] * len(failed), transform=ax.get_xaxis_transform(), marker="x", s=40,
               color=color, linewidths=2, zorder=5, clip_on=False, gid=FAIL_GID)  # fmt: skip
    statuses = "/".join(sorted(set(failed["status"])))
    ax.annotate(f"{label}: {statuses}", (failed[x].min(), y), xycoords=ax.get_xaxis_transform(),
                xytext=(-4, 5), textcoords="offset points", fontsize=7, color=FAIL_COLOR)  # fmt: skip


class _PlainLog(LogFormatter):
    """LogFormatter's choice of which ticks to label, written as 0.05 rather than 5e-02."""

    def __call__(self, x, pos=None):
        return f"{x:.3g}" if super().__call__(x, pos) else ""


def plain_log_x(ax: Axes) -> None:
    """Log-2 x axis labelled 16, 32, 64 rather than 2^4."""
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


def log_axes(ax: Axes, ticks: list) -> None:
    """Log-log axes that read as plain numbers: x ticks at the measured n, y as 0.05 not 5x10^-2."""
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(_PlainLog())
    ax.yaxis.set_minor_formatter(_PlainLog(minor_thresholds=(1.5, 0.6)))
    ax.tick_params(axis="y", which="minor", labelsize=7)


def empty_note(ax: Axes, text: str = "no successful cells") -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="grey")


def fit_slope(x: pd.Series, y: pd.Series) -> float | None:
    """Slope of log(y) against log(x): how cost grows with n (1 linear, 2 quadratic)."""
    mask = (np.asarray(x) > 0) & (np.asarray(y) > 0)
    xs, ys = np.log(np.asarray(x, float)[mask]), np.log(np.asarray(y, float)[mask])
    if len(np.unique(xs)) < 2:
        return None
    return float(np.polyfit(xs, ys, 1)[0])
