"""The roofline figure: arithmetic intensity against achieved FLOP/s, under this machine's roof.

Reads sweep.csv columns only. The roof is not stored there as such, but every ok row carries
it: flops_util = achieved / peak_flops and bw_util = achieved bytes/s / peak bandwidth, so
peak_flops = (flops_effective / t) / flops_util and likewise for bandwidth (the peaks
`attnbench calibrate` measured). One roof per (run, device_name, dtype).

Decode points are marked: a decode row that carries `decode_bytes` (the cache, weights and token
a step must move) sits at flops_effective / decode_bytes, and a dotted line rises from it to the
roof at that intensity. The roof there is flops_effective / roof_s, so the line spans exactly
1 / roof_util: how far the step is from this machine's roof.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .load import with_labels
from .style import colors, figure_legend, panels

ROOFLINE_COLUMNS = ("flops_effective", "bytes_moved", "flops_util", "bw_util", "latency_ms_median")
MARKERS = {"fwd": "o", "fwd_bwd": "s", "decode": "^"}
XLABEL = "arithmetic intensity, FLOP/byte (flops_effective / bytes_moved; decode: / decode_bytes)"


def roofline_points(sweep: pd.DataFrame) -> pd.DataFrame:
    """ok rows with intensity (FLOP/byte), achieved FLOP/s and the roof they were measured under."""
    ok = sweep[(sweep["status"] == "ok")].dropna(subset=list(ROOFLINE_COLUMNS)).copy()
    seconds = ok["latency_ms_median"] / 1e3
    ok["intensity"] = ok["flops_effective"] / ok["bytes_moved"]
    if "decode_bytes" in ok:  # a decode step's own traffic: cache, weights, token in and out
        real = (ok["mode"] == "decode") & (pd.to_numeric(ok["decode_bytes"], errors="coerce") > 0)
        ok.loc[real, "intensity"] = ok["flops_effective"] / pd.to_numeric(ok.loc[real, "decode_bytes"])
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
    fig, axes = panels(len(groups))
    palette = colors(labels)
    for ax, (key, group) in zip(axes, groups, strict=False):
        _roof(ax, group)
        for (label, mode), cell in group.groupby(["label", "mode"], sort=True):
            ax.scatter(cell["intensity"], cell["achieved"] / 1e12, color=palette[label],
                       marker=MARKERS.get(mode, "x"), s=22)  # fmt: skip
        marked = _decode_gaps(ax, group, palette)
        _legend_keys(ax, palette, labels, modes, marked)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(
            "arithmetic intensity (flops_effective / bytes_moved; decode: / decode_bytes), FLOP/byte"
        )
        ax.set_ylabel("achieved TFLOP/s (flops_effective / latency)")
        ax.set_title(" · ".join(str(k) for k in (key if isinstance(key, tuple) else (key,))), fontsize=9)
    figure_legend(fig, axes)
    fig.suptitle("Roofline against the measured peaks (attnbench calibrate)")
    return fig


def _decode_gaps(ax, group: pd.DataFrame, palette: dict) -> bool:
    """A dotted line from each decode point with `decode_bytes` up to the roof at its intensity
    (the line's length is 1 / roof_util on the log axis); True if any was drawn."""
    if "decode_bytes" not in group:
        return False
    decode = group[(group["mode"] == "decode") & (pd.to_numeric(group["decode_bytes"], errors="coerce") > 0)]
    peak_flops, peak_bw = group["peak_flops"].median(), group["peak_bw"].median()
    for _, row in decode.iterrows():
        top = min(peak_flops, row["intensity"] * peak_bw)  # the roof at this intensity, FLOP/s
        ax.plot([row["intensity"]] * 2, [row["achieved"] / 1e12, top / 1e12], ls=":", lw=1,
                color=palette[row["label"]])  # fmt: skip
    return not decode.empty


def _legend_keys(ax, palette: dict, labels: list, modes: list, decode_gaps: bool = False) -> None:
    """Colour names the variant and marker the mode: one legend entry each, not one per pair
    (ten variants x three modes made a 30-line legend that squeezed the axes to nothing)."""
    for label in labels:
        ax.plot([], [], lw=6, color=palette[label], label=label)  # a colour bar: no mode's marker
    for mode in modes:
        ax.plot([], [], ls="", marker=MARKERS.get(mode, "x"), color="grey", label=f"mode: {mode}")
    if decode_gaps:
        ax.plot([], [], ls=":", color="grey", label="decode: up to its roof (1 / roof_util)")


def _roof(ax, group: pd.DataFrame) -> None:
    peak_flops, peak_bw = group["peak_flops"].median(), group["peak_bw"].median()
    lo, hi = group["intensity"].min() / 4, group["intensity"].max() * 4
    x = np.geomspace(min(lo, peak_flops / peak_bw / 4), max(hi, peak_flops / peak_bw * 4), 200)
    ax.plot(x, np.minimum(peak_flops, x * peak_bw) / 1e12, color="black", lw=1.2,
            label=f"roof: {peak_flops / 1e12:.3g} TFLOP/s, {peak_bw / 1e9:.3g} GB/s")  # fmt: skip
