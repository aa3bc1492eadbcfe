"""The roofline figure: arithmetic intensity against achieved FLOP/s, under this machine's roof.

Reads sweep.csv columns only. The roof is not stored there as such, but every ok row carries
it: flops_util = achieved / peak_flops and bw_util = achieved bytes/s / peak bandwidth, so
peak_flops = (flops_effective / t) / flops_util and likewise for bandwidth (the peaks
`attnbench calibrate` measured). One roof per (run, device_name, dtype).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .load import with_labels
from .style import colors, legend_below, legend_height, panels

ROOFLINE_COLUMNS = ("flops_effective", "bytes_moved", "flops_util", "bw_util", "latency_ms_median")
MARKERS = {"fwd": "o", "fwd_bwd": "s", "decode": "^"}
LEGEND_COLUMNS = 3


def roofline_points(sweep: pd.DataFrame) -> pd.DataFrame:
    """ok rows with intensity (FLOP/byte), achieved FLOP/s and the roof they were measured under."""
    ok = sweep[(sweep["status"] == "ok")].dropna(subset=list(ROOFLINE_COLUMNS)).copy()
    seconds = ok["latency_ms_median"] / 1e3
    ok["intensity"] = ok["flops_effective"] / ok["bytes_moved"]
    ok["achieved"] = ok["flops_effective"] / seconds
    ok["peak_flops"] = ok["achieved"] / ok["flops_util"]
    ok["peak_bw"] = ok["bytes_moved"] / seconds / ok["bw_util"]
    return ok[(ok["flops_util"] > 0) & (ok["bw_util"] > 0)]


def roofline_figure(sweep: pd.DataFrame) -> Figure:
    """One panel per (run, device, dtype): each ok cell as a point, the roof as lines."""
    points = with_labels(roofline_points(sweep), candidates=("batch", "visual_frac"), run=False)
    if points.empty:
        raise ValueError("no ok rows with flops_util and bw_util to place on a roofline")
    keys = ["run", "device_name", "dtype"] if "run" in points else ["device_name", "dtype"]
    groups = list(points.groupby(keys, sort=True))
    labels, modes = sorted(points["label"].unique()), sorted(points["mode"].unique())
    rows = -(-(1 + len(labels) + len(modes)) // LEGEND_COLUMNS)
    fig, axes = panels(len(groups), width=6.5, height=legend_height(rows))
    palette = colors(labels)
    for ax, (key, group) in zip(axes, groups, strict=False):
        _roof(ax, group)
        for (label, mode), cell in group.groupby(["label", "mode"], sort=True):
            ax.scatter(cell["intensity"], cell["achieved"] / 1e12, color=palette[label],
                       marker=MARKERS.get(mode, "x"), s=22)  # fmt: skip
        _legend_keys(ax, palette, labels, modes)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("arithmetic intensity (flops_effective / bytes_moved, FLOP/byte)")
        ax.set_ylabel("achieved TFLOP/s (flops_effective / latency)")
        ax.set_title(" · ".join(str(k) for k in (key if isinstance(key, tuple) else (key,))), fontsize=9)
        legend_below(ax, ncol=LEGEND_COLUMNS)
    fig.suptitle("Roofline against the measured peaks (attnbench calibrate)")
    return fig


def _legend_keys(ax, palette: dict, labels: list, modes: list) -> None:
    """Colour names the variant and marker the mode: one legend entry each, not one per pair
    (ten variants x three modes made a 30-line legend that squeezed the axes to nothing)."""
    for label in labels:
        ax.plot([], [], lw=6, color=palette[label], label=label)  # a colour bar: no mode's marker
    for mode in modes:
        ax.plot([], [], ls="", marker=MARKERS.get(mode, "x"), color="grey", label=f"mode: {mode}")


def _roof(ax, group: pd.DataFrame) -> None:
    peak_flops, peak_bw = group["peak_flops"].median(), group["peak_bw"].median()
    lo, hi = group["intensity"].min() / 4, group["intensity"].max() * 4
    x = np.geomspace(min(lo, peak_flops / peak_bw / 4), max(hi, peak_flops / peak_bw * 4), 200)
    ax.plot(x, np.minimum(peak_flops, x * peak_bw) / 1e12, color="black", lw=1.2,
            label=f"roof: {peak_flops / 1e12:.3g} TFLOP/s, {peak_bw / 1e9:.3g} GB/s")  # fmt: skip
