"""Two fabricated sweeps with stored samples for the run-against-run tests: B equals A except
for cells scaled by a known factor; every other cell is fresh noise around the same median.

The samples are log-normal around each row's median (seeded); they are fixtures, not measurements.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .fabricate import sweep_frame, write_run

SLOWER = ("gqa", 2, "fwd", 256)  # (variant, n_kv_heads, mode, seq_len): 1.5x slower in B
FASTER = ("mqa", 1, "decode", 128)  # 1.5x faster in B


def cell_mask(df: pd.DataFrame, cell: tuple) -> pd.Series:
    variant, g, mode, n = cell
    return (df["variant"] == variant) & (df["n_kv_heads"] == g) & (df["mode"] == mode) & (df["seq_len"] == n)


def with_samples(
    df: pd.DataFrame, *, seed: int, n: int = 30, noise: float = 0.05, scale=None
) -> pd.DataFrame:
    """`df` with `latency_ms_samples` (n per ok row) and medians recomputed from them; `scale`
    maps a cell (see SLOWER) to the factor its samples are multiplied by."""
    rng, out = np.random.default_rng(seed), df.copy()
    factor = pd.Series(1.0, index=df.index)
    for cell, f in (scale or {}).items():
        factor[cell_mask(df, cell)] = f
    texts, medians = [], []
    for ms, f, status in zip(df["latency_ms_median"], factor, df["status"], strict=True):
        if status != "ok":
            texts.append("")
            medians.append(np.nan)
            continue
        s = ms * f * np.exp(rng.normal(0.0, noise, n))
        texts.append(";".join(f"{x:.6f}" for x in s))
        medians.append(float(np.median(s)))
    return out.assign(latency_ms_samples=texts, latency_ms_median=medians)


def pair(seq_lens=(128, 256), slower=1.5, faster=1 / 1.5, **kw) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(A, B): B has SLOWER at 1.5x, FASTER at 1/1.5x, the rest noise only; only the decode
    cells of kdgqa and dgqa do not run (unsupported, in both)."""
    base = sweep_frame(seq_lens=seq_lens, oom_at=None)
    a = with_samples(base, seed=1, **kw)
    b = with_samples(base, seed=2, scale={SLOWER: slower, FASTER: faster}, **kw)
    return a, b


def drifted_runs(
    base: pd.DataFrame, k: int, *, sd: float, seed: int, scale: float = 1.0
) -> list[pd.DataFrame]:
    """`k` runs of the same code: each cell of each run moved by its own log-normal drift (sd in
    log space, as separate processes on a shared machine are), every latency times `scale`."""
    rng = np.random.default_rng(seed)
    return [
        base.assign(
            latency_ms_median=base["latency_ms_median"] * scale * np.exp(rng.normal(0, sd, len(base)))
        )
        for _ in range(k)
    ]


def write_pair(root: Path, a: pd.DataFrame | None = None, b: pd.DataFrame | None = None) -> tuple[Path, Path]:
    """Run directories root/run-a and root/run-b (the default pair unless given)."""
    if a is None or b is None:
        a, b = pair()
    return write_run(root / "run-a", sweep=a), write_run(root / "run-b", sweep=b)
