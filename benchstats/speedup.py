"""Speedup against the reference variant (mha): one definition for the sweep's terminal summary
(harness/sweep/view.py), the report's speedup table and its heatmap.

speedup = reference latency / this row's latency, where the reference is the row of the
reference variant with no options (its backend aside, a key column of its own) that ran ok at
the same shape and the same settings, on the same device (a Ray sweep over GPU models: each
model, `device_name` and the node's `accelerator` label, is its own reference): every
REFERENCE_KEY column a sweep.csv holds (shape, dtype, threads, backend, compile, served-decode
axes, and the run when runs are stacked). A compiled gqa row is compared with compiled mha, an
eager one with eager mha; a row with no such reference has no speedup (NaN), never one
borrowed from another setting. Several reference rows under one key (a run measured twice)
give their median.

`reference_sdpa_backend` is the SDPA kernel the reference ran there and `kernels_differ` is True
where that is not this row's: such a speedup compares kernels, not variants (CUDA float32 GQA on
math against MHA on memory-efficient).
"""

from __future__ import annotations

import pandas as pd

REFERENCE_KEY = (
    "run", "device", "device_name", "accelerator", "dtype", "threads", "mode", "batch", "seq_len", "dim",
    "n_heads", "head_dim", "backend", "compile", "lengths", "kv_layout", "page_size", "q_len",
)  # fmt: skip


def reference_key(df: pd.DataFrame) -> list[str]:
    """The REFERENCE_KEY columns `df` holds."""
    return [c for c in REFERENCE_KEY if c in df.columns]


def with_speedup(df: pd.DataFrame, reference: str = "mha") -> pd.DataFrame:
    """`df` (index kept) plus `reference_ms`, `speedup`, `reference_sdpa_backend`, `kernels_differ`."""
    key = reference_key(df)
    options = df["options"] if "options" in df else pd.Series("", index=df.index)
    plain = options.map(_without_backend) == ""
    ref = df[(df["variant"] == reference) & plain & (df["status"] == "ok")]
    kernels = ref["sdpa_backend"] if "sdpa_backend" in ref else pd.Series("", index=ref.index)
    ref = _filled(ref, key).assign(_ms=ref["latency_ms_median"], _k=kernels.fillna("").astype(str))
    table = ref.groupby(key).agg(reference_ms=("_ms", "median"), reference_sdpa_backend=("_k", _kernels))
    joined = _filled(df, key).join(table, on=key)
    out = df.assign(reference_ms=joined["reference_ms"].to_numpy())
    out["speedup"] = out["reference_ms"] / out["latency_ms_median"]
    out["reference_sdpa_backend"] = joined["reference_sdpa_backend"].fillna("").to_numpy()
    mine = out["sdpa_backend"].fillna("").astype(str) if "sdpa_backend" in out else ""
    known = (out["status"] == "ok") & (out["reference_sdpa_backend"] != "")
    out["kernels_differ"] = known & (mine != out["reference_sdpa_backend"])
    return out


def _without_backend(options: object) -> str:
    """The options text ('k=v;...') less its backend entry: the backend is a key column of its
    own (an eager mha row holds options 'backend=eager' and is the eager rows' reference)."""
    text = "" if options is None or (isinstance(options, float) and options != options) else str(options)
    return ";".join(p for p in text.split(";") if p and not p.startswith("backend="))


def _filled(df: pd.DataFrame, key: list[str]) -> pd.DataFrame:
    """The key columns as text, blanks as '' (a column blank in every row of a setting still
    matches; 128 and 128.0 match)."""
    return df[key].apply(lambda col: col.map(_text))


def _text(value: object) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _kernels(backends: pd.Series) -> str:
    """The reference's kernel at one key ('a+b' if its rows disagree)."""
    return "+".join(sorted(set(backends) - {""}))
