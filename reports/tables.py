"""Summary tables for the index page and summary.md: plain DataFrames of display strings."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from .accuracy_figures import accuracy_stats
from .load import Run, with_labels
from .marks import MARK, spread
from .style import fit_slope, modes
from .sweep_figures import speedup_cells

ERROR_WIDTH = 140  # long tracebacks are cut: the CSV keeps the whole message


def _num(value: Any, digits: int = 3) -> str:
    return "" if pd.isna(value) else f"{value:.{digits}g}"


def latency_table(sweep: pd.DataFrame) -> pd.DataFrame:
    """Median latency (ms) per mode and series (rows) and seq_len (columns), failed cells showing
    their status, and each row's fitted log-log slope (1: linear in n, 2: quadratic)."""
    df = with_labels(sweep)
    df["cell"] = [
        _num(ms) if st == "ok" else st for ms, st in zip(df["latency_ms_median"], df["status"], strict=True)
    ]
    table = df.pivot_table(index=["mode", "label"], columns="seq_len", values="cell", aggfunc="first")
    table.columns = [f"n={n}" for n in table.columns]
    table = table.fillna("").reset_index().rename(columns={"label": "series"})
    ok = df[(df["status"] == "ok") & df["latency_ms_median"].notna()]
    columns = ok.groupby(["mode", "label"])[["seq_len", "latency_ms_median"]]
    slopes = columns.apply(lambda g: fit_slope(g["seq_len"], g["latency_ms_median"]))
    keys = zip(table["mode"], table["series"], strict=True)
    table["slope"] = [_num(slopes.get(key), 2) for key in keys]
    rank = table["mode"].map({m: i for i, m in enumerate(modes(df))})
    return table.iloc[rank.argsort(kind="stable")].reset_index(drop=True)


def speedup_table(sweep: pd.DataFrame, seq_len: int | None = None) -> pd.DataFrame:
    """The heatmap cells as rows: speedup against MHA (>1: faster than MHA), or why there is none."""
    cells = speedup_cells(sweep, seq_len)
    text = [
        _num(s) + "×" + ("*" if odd else "") if pd.notna(s) else note
        for s, note, odd in zip(cells["speedup"], cells["note"], cells["kernels_differ"], strict=True)
    ]
    out = pd.DataFrame(
        {"mode": cells["mode"], "series": cells["label"], "n_heads": cells["n_heads"]}
        | {"n_kv_heads": cells["n_kv_heads"], "seq_len": cells["seq_len"], "speedup vs mha": text}
    )
    if cells["kernels_differ"].any():  # * : the speedup compares kernels, not variants
        out["sdpa kernels"] = [
            f"{mine} vs mha's {theirs}: compares kernels, not variants" if odd else ""
            for mine, theirs, odd in zip(
                cells["sdpa_backend"], cells["mha_sdpa_backend"], cells["kernels_differ"], strict=True
            )
        ]
    if cells["run"].nunique() > 1:
        out.insert(0, "run", cells["run"])
    out["_rank"] = out["mode"].map({m: i for i, m in enumerate(modes(cells))})
    by = [c for c in ("run", "_rank", "series", "n_heads", "n_kv_heads") if c in out]
    return out.sort_values(by, kind="stable").drop(columns="_rank").reset_index(drop=True)


def accuracy_table(accuracy: pd.DataFrame) -> pd.DataFrame:
    """Per task and series: accuracy mean ± std over seeds, seeds, failed rows, loss, KV-cache bytes."""
    stats = accuracy_stats(accuracy)
    series = [
        label + (MARK if leak else "") for label, leak in zip(stats["label"], stats["leak"], strict=True)
    ]
    out = pd.DataFrame({"task": stats["task"], "series": series})
    out["accuracy (mean ± std)"] = [
        spread(m, s, n) for m, s, n in zip(stats["mean"], stats["std"], stats["seeds"], strict=True)
    ]
    out["seeds"], out["failed"] = stats["seeds"], stats["failed"]
    if "loss" in stats.columns:
        out["loss (mean)"] = stats["loss"].map(_num)
    if "kv_cache_bytes" in stats.columns:
        out["kv_cache_bytes"] = stats["kv_cache_bytes"].map(lambda v: "" if pd.isna(v) else f"{int(v):,}")
    return out


FAILURE_COLUMNS = (
    "run",
    "file",
    "variant",
    "options",
    "mode",
    "task",
    "n_heads",
    "n_kv_heads",
    "status",
    "error",
)


def _display(value: Any) -> str:
    """1024.0 -> '1024' (pandas widens int columns holding blanks to float), NaN -> ''."""
    if isinstance(value, float):
        return "" if pd.isna(value) else (str(int(value)) if value.is_integer() else f"{value:g}")
    return str(value)


def failures_table(runs: list[Run]) -> pd.DataFrame:
    """Every row whose status is not ok, from every run and every file, with its error.

    Cells that failed alike at several n (or seeds) are one row listing those n (or seeds).
    """
    frames = []
    for run in runs:
        for name, df in (
            ("sweep.csv", run.sweep),
            ("accuracy.csv", run.accuracy),
            ("generate.csv", run.generate),
        ):
            if df is not None and (df["status"] != "ok").any():
                frames.append(df[df["status"] != "ok"].assign(run=run.label, file=name))
    if not frames:
        return pd.DataFrame()
    failed = pd.concat(frames, ignore_index=True)
    if "error" in failed.columns:
        failed["error"] = failed["error"].fillna("").astype(str).str.slice(0, ERROR_WIDTH)
    keys = [c for c in FAILURE_COLUMNS if c in failed.columns]
    listed = {
        c: (c, lambda v: ", ".join(_display(x) for x in sorted(set(v.dropna())))) for c in ("seq_len", "seed")
    }
    listed = {c: agg for c, agg in listed.items() if c in failed.columns}
    listed["cells"] = ("status", "size")
    out = failed[keys].map(_display).join(failed[list(listed)[:-1]]).groupby(keys, sort=False).agg(**listed)
    out = out.reset_index().rename(columns={"seq_len": "seq_lens", "seed": "seeds"})
    return out[[*keys[:-2], *[c for c in ("seq_lens", "seeds") if c in out], "cells", *keys[-2:]]]


def flatten(meta: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """{'a': {'b': 1}} -> {'a.b': '1'}; lists are written as JSON."""
    flat: dict[str, str] = {}
    for key, value in meta.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat |= flatten(value, f"{name}.")
        else:
            flat[name] = value if isinstance(value, str) else json.dumps(value)
    return flat


def meta_table(runs: list[Run]) -> pd.DataFrame:
    """run.json of every run side by side: one row per (flattened) key, one column per run."""
    columns = {run.label: pd.Series(flatten(run.meta), dtype=object) for run in runs if run.meta}
    if not columns:
        return pd.DataFrame()
    table = pd.DataFrame(columns).fillna("")
    return table.rename_axis("key").reset_index()
