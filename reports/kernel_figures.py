"""The kernel and compilation axes from sweep.csv: backend x compile latency per variant.

One panel per (variant, mode) at one shape: bars of median latency (whisker p10-p90) for
each backend (x) and torch.compile mode (colour); the first compiled call's wall time
(`compile_s`) and flex's block-mask build time (`setup_s`) are written over their bar, as
they are not part of the latency. Cells that did not run are a red x with their status.
Reads only the CSV's columns (reports never imports the harness).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .load import require
from .style import panels

COLUMNS = ("variant", "options", "mode", "seq_len", "status", "latency_ms_median", "backend", "compile")
BACKEND_ORDER = ("sdpa", "sdpa_flash", "sdpa_efficient", "sdpa_cudnn", "sdpa_math", "eager", "flex")
COMPILE_ORDER = ("off", "default", "max-autotune")
COMPILE_COLORS = {"off": "#7f8c8d", "default": "#2e86c1", "max-autotune": "#8e44ad"}
SHAPE = ("n_heads", "n_kv_heads", "batch", "head_dim", "dtype", "device")


def has_axes(sweep: pd.DataFrame) -> bool:
    """True when the CSV varies the backend or the compile mode (else the figure says nothing)."""
    if not set(COLUMNS) <= set(sweep.columns):
        return False
    return len(sweep[["backend", "compile"]].fillna("").drop_duplicates()) > 1


def without_backend(options: str) -> str:
    """The options text minus its backend entry: 'backend=flex;visual_attention=full' -> the rest."""
    parts = [p.strip() for p in str(options).replace(";", ",").split(",") if p.strip()]
    return ", ".join(p for p in parts if not p.startswith("backend="))


def kernel_cells(sweep: pd.DataFrame, seq_len: int | None = None) -> pd.DataFrame:
    """The rows drawn: one shape (the most common h, g, b, e, dtype, device; the largest n with
    a measured cell, or `seq_len`), labelled by variant and its options without the backend."""
    require(sweep, COLUMNS, "sweep.csv (backend x compile figure)")
    df = sweep.copy()
    df["compile"] = df["compile"].fillna("off").replace("", "off")
    df["backend"] = df["backend"].fillna("").replace("", "sdpa")
    for col in (c for c in SHAPE if c in df):
        df = df[df[col] == df[col].mode().iloc[0]]
    if seq_len is None:
        ok = df[df["status"] == "ok"]
        seq_len = int((ok if not ok.empty else df)["seq_len"].max())
    df = df[df["seq_len"] == seq_len].copy()
    opts = df["options"].fillna("").map(without_backend)
    df["label"] = df["variant"] + np.where(opts != "", "(" + opts + ")", "")
    return df


def backend_compile_figure(sweep: pd.DataFrame, seq_len: int | None = None) -> Figure:
    """Grouped bars: latency per backend (x) and compile mode (colour), one panel per variant and mode."""
    cells = kernel_cells(sweep, seq_len)
    if cells.empty:
        raise ValueError(f"no sweep rows at seq_len={seq_len} for the backend x compile figure")
    keys = list(cells[["label", "mode"]].drop_duplicates().itertuples(index=False, name=None))
    fig, axes = panels(len(keys), width=5.2, height=4.0)
    for ax, (label, mode) in zip(axes, keys, strict=True):
        _bars(ax, cells[(cells["label"] == label) & (cells["mode"] == mode)])
        ax.set_title(f"{label}: {mode}, n={int(cells['seq_len'].iloc[0])}", fontsize=10)
    fig.suptitle("Latency by kernel (backend) and torch.compile mode; compile_s / setup_s over the bars")
    return fig


def _order(values, order) -> list[str]:
    known = [v for v in order if v in set(values)]
    return known + sorted(set(values) - set(known))


def _bars(ax, panel: pd.DataFrame) -> None:
    backends = _order(panel["backend"], BACKEND_ORDER)
    compiles = _order(panel["compile"], COMPILE_ORDER)
    width = 0.8 / len(compiles)
    top = panel["latency_ms_p90"].max() if "latency_ms_p90" in panel else panel["latency_ms_median"].max()
    top = top if np.isfinite(top) else 1.0
    for j, comp in enumerate(compiles):
        for i, backend in enumerate(backends):
            row = panel[(panel["backend"] == backend) & (panel["compile"] == comp)]
            if row.empty:
                continue
            _bar(ax, row.iloc[0], i + (j - (len(compiles) - 1) / 2) * width, width, comp, top)
    ax.set_xticks(range(len(backends)), backends, rotation=20)
    ax.set_ylabel("latency, median (ms); whisker p10-p90")
    ax.set_ylim(0, top * 1.3)
    handles = [ax.bar(0, 0, color=COMPILE_COLORS.get(c, "#aaaaaa"), label=f"compile={c}") for c in compiles]
    ax.legend(handles=handles, fontsize=8, loc="upper left")
    ax.grid(True, axis="y", alpha=0.25)


def _bar(ax, row: pd.Series, x: float, width: float, comp: str, top: float) -> None:
    if row["status"] != "ok":
        ax.plot(x, top * 0.04, marker="x", color="#c0392b", ms=9, mew=2)
        ax.text(x, top * 0.1, row["status"], color="#c0392b", ha="center", rotation=90, fontsize=7)
        return
    median = row["latency_ms_median"]
    err = None
    if {"latency_ms_p10", "latency_ms_p90"} <= set(row.index):
        err = [[median - row["latency_ms_p10"]], [row["latency_ms_p90"] - median]]
    ax.bar(x, median, width, color=COMPILE_COLORS.get(comp, "#aaaaaa"), yerr=err, capsize=2)
    notes = [f"c {row['compile_s']:.1f}s" for _ in [0] if pd.notna(row.get("compile_s"))]
    notes += [f"m {row['setup_s'] * 1e3:.1f}ms" for _ in [0] if row.get("setup_s", 0) and row["setup_s"] > 0]
    if notes:
        ax.text(x, min(median * 1.05, top * 1.2), "\n".join(notes), ha="center", va="bottom", fontsize=6)
