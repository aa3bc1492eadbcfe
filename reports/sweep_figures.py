"""Figures from sweep.csv: latency, memory, speedup against MHA, achieved TFLOP/s.

Each function takes the combined sweep table (load.combined adds the `run` column) and
returns a matplotlib Figure. Cells that did not run (status oom/unsupported/invalid/error)
are drawn as red-labelled x marks at the bottom of their panel, never dropped.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

from benchstats import speedup

from .load import require, with_labels
from .style import (
    MODE_TITLES,
    PAGE_INCHES,
    byte_unit,
    colors,
    empty_note,
    figure_legend,
    log_axes,
    mark_failures,
    modes,
    panels,
)

LATENCY_COLUMNS = ("variant", "mode", "seq_len", "status", "latency_ms_median")
MEMORY_COLUMNS = ("variant", "mode", "seq_len", "status", "peak_mem_bytes")
TFLOPS_COLUMNS = ("variant", "mode", "seq_len", "status", "tflops")
SPEEDUP_COLUMNS = ("variant", "mode", "seq_len", "status", "latency_ms_median", "n_heads", "n_kv_heads")
N_AXIS = "sequence length n (tokens)"
HEATMAP_COLUMNS = 4
SERIES_PER_PANEL = 6
SATURATE = 4.0  # speedup heatmaps: the colour scale's ends, 1/4x and 4x


def _ok(df: pd.DataFrame, column: str) -> pd.DataFrame:
    return df[(df["status"] == "ok") & df[column].notna()].sort_values("seq_len")


def _series_panel(ax, df: pd.DataFrame, column: str, palette: dict, *, scale=1.0, band=None):
    """One line per series of `column` against seq_len, log-log, with failures marked."""
    failing = 0
    for label, group in df.groupby("label", sort=True):
        ok = _ok(group, column)
        if not ok.empty:
            ax.plot(ok["seq_len"], ok[column] / scale, marker="o", ms=4, color=palette[label], label=label)
        if band and not ok.empty and set(band) <= set(ok.columns):
            lo, hi = ok[band[0]] / scale, ok[band[1]] / scale
            ax.fill_between(ok["seq_len"], lo, hi, color=palette[label], alpha=0.18, linewidth=0)
        failed = group[group["status"] != "ok"]
        if not failed.empty:
            mark_failures(ax, failed, "seq_len", palette[label], failing, label)
            failing += 1
    if _ok(df, column).empty:
        empty_note(ax)
    log_axes(ax, sorted(df["seq_len"].unique()))
    ax.set_xlabel(N_AXIS)
    ax.grid(True, which="both", alpha=0.25)


def series_rows(df: pd.DataFrame) -> list[list[str]]:
    """The series split into rows of at most SERIES_PER_PANEL (small multiples: seventeen lines in
    one panel overlap into a tangle), mha's series, the reference, drawn in every row."""
    reference = sorted(set(df.loc[df["variant"] == "mha", "label"]))
    rest = sorted(set(df["label"]) - set(reference))
    rows = max(1, -(-len(rest) // SERIES_PER_PANEL))
    size = max(1, -(-len(rest) // rows))  # balanced: 16 series make rows of 6, 6, 4
    return [reference + rest[i : i + size] for i in range(0, len(rest), size)] or [reference]


def _small_multiples(df: pd.DataFrame, draws: list) -> tuple[Figure, list]:
    """One column per `draws` entry (a function of the axes and the rows' series), one row per
    group of series; returns the figure and its axes, row by row."""
    groups = series_rows(df)
    width = min(5.5, PAGE_INCHES / len(draws))  # the columns share the page's width
    fig, axes = panels(len(groups) * len(draws), width=width, cols=len(draws))
    for r, labels in enumerate(groups):
        part = df[df["label"].isin(labels)]
        for c, draw in enumerate(draws):
            draw(axes[r * len(draws) + c], part)
    return fig, axes


def latency_figure(sweep: pd.DataFrame) -> Figure:
    """Median latency against n, log-log, p10-p90 band: one column per mode, one row per group of
    series (mha in each). Each series' fitted slope is in the latency table (reports/tables.py)."""
    require(sweep, LATENCY_COLUMNS, "sweep.csv (latency figure)")
    df = with_labels(sweep)
    palette = colors(df["label"])

    def draw(mode):
        def panel(ax, part):
            band = ("latency_ms_p10", "latency_ms_p90")
            _series_panel(ax, part[part["mode"] == mode], "latency_ms_median", palette, band=band)
            ax.set_ylabel("latency, median (ms); band p10-p90")
            ax.set_title(f"latency: {MODE_TITLES.get(mode, mode)}")

        return panel

    fig, axes = _small_multiples(df, [draw(mode) for mode in modes(df)])
    figure_legend(fig, axes)
    fig.suptitle("Latency against sequence length (mha, the reference, in every row)")
    return fig


def memory_figure(sweep: pd.DataFrame) -> Figure:
    """Memory against n, a column per mode: the transient peak (`peak_mem_bytes`, above the
    step's start); decode, where rows carry it, the step's resident bytes (weights + tokens +
    cache, `resident_bytes`) with the transient peak on top; and the KV-cache bytes. One row per
    group of series (mha in each)."""
    require(sweep, MEMORY_COLUMNS, "sweep.csv (memory figure)")
    df = with_labels(sweep)
    palette = colors(df["label"])

    def draw(mode):
        def panel(ax, part):
            _memory_panel(ax, part[part["mode"] == mode], mode, palette)

        return panel

    draws = [draw(mode) for mode in modes(df)]
    if "kv_cache_bytes" in df.columns and df["kv_cache_bytes"].notna().any():
        kv_div, kv_unit = byte_unit(df["kv_cache_bytes"])

        def kv_panel(ax, part):
            # The KV cache size does not depend on the mode: one point per series and n.
            kv = part[part["kv_cache_bytes"].notna()].drop_duplicates(["label", "seq_len"])
            _series_panel(ax, kv.assign(status="ok"), "kv_cache_bytes", palette, scale=kv_div)
            ax.set_ylabel(f"kv_cache_bytes ({kv_unit})")
            ax.set_title("KV cache as the variant holds it")

        draws.append(kv_panel)
    fig, axes = _small_multiples(df, draws)
    figure_legend(fig, axes)
    fig.suptitle("Memory against sequence length (mha, the reference, in every row)")
    return fig


def _resident(rows: pd.DataFrame) -> bool:
    """Decode rows that carry resident_bytes (older CSVs do not: their panel shows the peak)."""
    return "resident_bytes" in rows.columns and rows["resident_bytes"].notna().any()


def _memory_panel(ax, rows: pd.DataFrame, mode: str, palette: dict) -> None:
    """One mode's memory: resident + transient peak where the rows carry resident bytes (decode),
    else the transient peak alone."""
    if _resident(rows):
        held = rows.assign(held=rows["resident_bytes"] + rows["peak_mem_bytes"].fillna(0))
        div, unit = byte_unit(held["held"])
        _series_panel(ax, held, "held", palette, scale=div)
        ax.set_ylabel(f"resident + transient peak ({unit})")
        ax.set_title(f"memory of a step: {MODE_TITLES.get(mode, mode)}\n(weights + tokens + cache + peak)")
        return
    div, unit = byte_unit(rows["peak_mem_bytes"])
    _series_panel(ax, rows, "peak_mem_bytes", palette, scale=div)
    ax.set_ylabel(f"transient peak above the step's start ({unit})")
    ax.set_title(f"transient peak: {MODE_TITLES.get(mode, mode)}")


def tflops_figure(sweep: pd.DataFrame) -> Figure:
    """Achieved TFLOP/s as grouped bars: one group per n, one bar per series, one panel per mode."""
    require(sweep, TFLOPS_COLUMNS, "sweep.csv (TFLOP/s figure)")
    df = with_labels(sweep)
    palette, mode_list = colors(df["label"]), modes(df)
    fig, axes = panels(len(mode_list))
    for ax, mode in zip(axes, mode_list, strict=True):
        _bars(ax, df[df["mode"] == mode], palette)
        ax.set_title(f"achieved TFLOP/s: {MODE_TITLES.get(mode, mode)}")
    figure_legend(fig, axes)
    fig.suptitle("Achieved TFLOP/s (FlopCounterMode FLOPs / median latency)")
    return fig


def _bars(ax, df: pd.DataFrame, palette: dict) -> None:
    seq_lens = sorted(df["seq_len"].unique())
    labels = sorted(df["label"].unique())
    width, failing = 0.8 / max(len(labels), 1), 0
    for i, label in enumerate(labels):
        group = df[df["label"] == label].set_index("seq_len")
        xs = np.arange(len(seq_lens)) + (i - (len(labels) - 1) / 2) * width
        ok = group[(group["status"] == "ok") & group["tflops"].notna()]
        pos = dict(zip(seq_lens, xs, strict=True))
        ax.bar([pos[n] for n in ok.index], ok["tflops"], width, color=palette[label], label=label)
        failed = group[group["status"] != "ok"].reset_index()
        failed["x"] = failed["seq_len"].map(pos)
        if not failed.empty:
            mark_failures(ax, failed, "x", palette[label], failing, label)
            failing += 1
    ax.set_xticks(np.arange(len(seq_lens)), [str(n) for n in seq_lens])
    ax.set_xlabel(N_AXIS)
    ax.set_ylabel("achieved TFLOP/s")
    ax.grid(True, axis="y", alpha=0.25)


def speedup_cells(sweep: pd.DataFrame, seq_len: int | None = None) -> pd.DataFrame:
    """Speedup against MHA (mha median / variant median) per (run, mode, variant, h, g) at one n.

    The speedup is benchstats/speedup.py's, the sweep summary's: mha with no options at the same
    shape, dtype, threads, backend and compile setting; none where there is no such row (the
    note says "no mha"). Backend (an option), compile and threads that vary name the panel, so
    an eager and an sdpa gqa, or a compiled and an eager one, never share a cell. n is `seq_len`
    if given, else the largest n with a speedup in that panel. Batch and dtype are held at their
    most common value. Failed cells keep their status.
    """
    require(sweep, SPEEDUP_COLUMNS, "sweep.csv (speedup heatmap)")
    df = sweep.assign(run=sweep["run"] if "run" in sweep.columns else "run")
    for col in ("batch", "dtype"):
        if col in df.columns and df[col].nunique() > 1:
            df = df[df[col] == df[col].mode().iloc[0]]
    cells = speedup.with_speedup(df, "mha")
    cells = cells[cells["variant"] != "mha"].rename(
        columns={"reference_ms": "mha_ms", "reference_sdpa_backend": "mha_sdpa_backend"}
    )
    no_mha = np.where(cells["mha_ms"].isna(), "no mha", "")
    cells["note"] = np.where(cells["status"] != "ok", cells["status"], no_mha)
    label_by = ("batch", "visual_frac", "dtype", "compile", "threads")  # backend is in options
    cells = with_labels(cells, candidates=label_by, run=False)  # run is a panel row
    if seq_len is not None:
        return cells[cells["seq_len"] == seq_len]
    panel = ["run", "mode", "label"]
    # A panel with no speedup at all (every cell failed) still shows its failures at its largest n.
    best = cells[cells["speedup"].notna()].groupby(panel)["seq_len"].max()
    best = best.combine_first(cells.groupby(panel)["seq_len"].max())
    chosen = cells.join(best.rename("chosen"), on=panel)
    return chosen[chosen["seq_len"] == chosen["chosen"]].drop(columns="chosen")


def speedup_figure(sweep: pd.DataFrame, seq_len: int | None = None) -> Figure:
    """Heatmaps of speedup against MHA over (n_heads x n_kv_heads): rows (run, mode), columns variant."""
    cells = speedup_cells(sweep, seq_len)
    if cells.empty:
        raise ValueError(f"no non-mha cells to compare with mha at seq_len={seq_len}")
    rows = list(cells[["run", "mode"]].drop_duplicates().itertuples(index=False, name=None))
    cols = sorted(cells["label"].unique())
    # At most HEATMAP_COLUMNS panels a row, so the figure stays page-wide (~14 in at 110 dpi) and its
    # numbers read without zooming; a mode with more variants wraps onto further rows.
    # A panel is as tall as its h rows need (one h: a strip, not a square of empty colour).
    n, n_h = len(rows) * len(cols), cells["n_heads"].nunique()
    fig, axes = panels(n, width=3.6, height=min(3.2, 1.6 + 0.5 * n_h), cols=min(n, HEATMAP_COLUMNS))
    finite = cells["speedup"].dropna()
    lo, hi = min(finite.min(), 0.95) if len(finite) else 0.5, max(finite.max(), 1.05) if len(finite) else 2
    # The colour saturates at SATURATE× either way: one 16× decode cell would otherwise wash every
    # other cell to the centre colour. The number written in the cell stays exact.
    norm = TwoSlopeNorm(vcenter=1.0, vmin=max(lo, 1 / SATURATE), vmax=min(hi, SATURATE))
    image = None
    for i, (run, mode) in enumerate(rows):
        for j, label in enumerate(cols):
            ax = axes[i * len(cols) + j]
            panel = cells[(cells["run"] == run) & (cells["mode"] == mode) & (cells["label"] == label)]
            image = _heatmap(ax, panel, norm) or image
            run_part = f" · {run}" if len(set(cells["run"])) > 1 else ""
            n_part = f", n={int(panel['seq_len'].iloc[0])}" if not panel.empty else ""
            ax.set_title(f"{label}\n{mode}{n_part}{run_part}", fontsize=9)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.6, label="speedup vs mha (mha ms / variant ms; >1 faster)")
    fig.suptitle("Speedup against MHA over (n_heads x n_kv_heads)")
    return fig


def _heatmap(ax, panel: pd.DataFrame, norm):
    if panel.empty:
        ax.set_axis_off()
        return None
    grid = panel.groupby(["n_heads", "n_kv_heads"]).agg(
        speedup=("speedup", "median"), note=("note", "first"), kernels_differ=("kernels_differ", "any")
    )
    hs, gs = sorted(panel["n_heads"].unique()), sorted(panel["n_kv_heads"].unique())
    values = np.full((len(hs), len(gs)), np.nan)
    for (h, g), cell in grid.iterrows():
        i, j = hs.index(h), gs.index(g)
        values[i, j] = cell["speedup"]
        mark = "*" if cell["kernels_differ"] else ""  # another SDPA kernel than mha's: see the caption
        text = f"{cell['speedup']:.2f}×{mark}" if np.isfinite(cell["speedup"]) else f"✗ {cell['note']}"
        shade = float(norm(cell["speedup"])) if np.isfinite(cell["speedup"]) else 0.5
        dark = shade < 0.15 or shade > 0.85  # the saturated ends of RdYlGn: black would not read
        color = ("white" if dark else "black") if np.isfinite(cell["speedup"]) else "#c0392b"
        ax.text(j, i, text, ha="center", va="center", fontsize=10, color=color)
    image = ax.imshow(np.ma.masked_invalid(values), cmap="RdYlGn", norm=norm, aspect="auto")
    ax.set_facecolor("#eeeeee")
    ax.set_xticks(range(len(gs)), [str(int(g)) for g in gs])
    ax.set_yticks(range(len(hs)), [str(int(h)) for h in hs])
    ax.set_xlabel("n_kv_heads g")
    ax.set_ylabel("n_heads h")
    return image
