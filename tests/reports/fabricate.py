"""Fabricate plausible run directories (sweep.csv, accuracy.csv, run.json) for the report tests.

The numbers follow simple cost models (attention ~ n^2 in prefill, ~ n*g in decode) with
seeded noise; they are test fixtures, not measurements.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

SWEEP_COLUMNS = (
    "run_id timestamp git_commit device device_name torch_version threads dtype variant options mode "
    "batch seq_len n_visual dim n_heads n_kv_heads head_dim latency_ms_median latency_ms_p10 "
    "latency_ms_p90 repeats peak_mem_bytes kv_cache_bytes flops tflops sdpa_backend status error"
).split()
ACCURACY_COLUMNS = (
    "run_id task variant options n_heads n_kv_heads seed steps accuracy loss wall_s kv_cache_bytes "
    "status error init"
).split()
# (variant, options, n_kv_heads for h=8)
GROUPED = [("mha", "", 8), ("mqa", "", 1), ("gqa", "", 2), ("gqa", "", 4), ("kdgqa", "", 2)]
GROUPED += [("dgqa", '{"kind": "ema"}', 2)]


def _cell(variant, options, mode, n, h, g, *, b=2, e=64, rng, oom_at=None, slow=1.0) -> dict:
    base = dict(run_id="fab", timestamp="2025-01-01T00:00:00", git_commit="abc1234", device="cpu")
    base |= dict(device_name="fake-cpu", torch_version="2.13.0", threads=2, dtype="float32")
    base |= dict(variant=variant, options=options, mode=mode, batch=b, seq_len=n, n_visual=0)
    base |= dict(dim=h * e, n_heads=h, n_kv_heads=g, head_dim=e, repeats=10, sdpa_backend="math")
    base |= dict(kv_cache_bytes=2 * b * g * n * e * 4, error="", status="ok")
    if mode == "decode" and variant in ("kdgqa", "dgqa"):
        return base | dict(status="unsupported", error=f"{variant} does not support decode")
    if oom_at is not None and n >= oom_at:
        return base | dict(status="oom", error="CUDA out of memory. Tried to allocate 2.00 GiB")
    kv = g / h
    if mode == "decode":
        ms, flops = 0.02 + 2e-5 * n * (0.3 + kv), 4 * b * h * n * e
    else:
        ms, flops = 0.05 + 3e-7 * n * n * (0.8 + 0.2 * kv), 4 * b * h * n * n * e
        ms, flops = (ms * 2.5, flops * 3.5) if mode == "fwd_bwd" else (ms, flops)
    ms *= slow * float(rng.uniform(0.95, 1.05))
    base |= dict(latency_ms_median=ms, latency_ms_p10=ms * 0.93, latency_ms_p90=ms * 1.12)
    peak = b * h * n * (n if mode != "decode" else 1) * 4 + base["kv_cache_bytes"] * 2
    return base | dict(peak_mem_bytes=peak, flops=flops, tflops=flops / (ms * 1e-3) / 1e12)


def sweep_frame(seed=0, seq_lens=(128, 256, 512, 1024), heads=(8,), slow=1.0, oom_at=1024) -> pd.DataFrame:
    """A sweep over the grouped family; mha fwd_bwd runs out of memory at `oom_at`."""
    rng, rows = np.random.default_rng(seed), []
    for h in heads:
        for variant, options, g8 in GROUPED:
            g = max(1, g8 * h // 8)
            for mode in ("fwd", "fwd_bwd", "decode"):
                oom = oom_at if (variant == "mha" and mode == "fwd_bwd") else None
                for n in seq_lens:
                    rows.append(_cell(variant, options, mode, n, h, g, rng=rng, oom_at=oom, slow=slow))
    return pd.DataFrame(rows, columns=SWEEP_COLUMNS)


def accuracy_frame(seed=0, seeds=(0, 1, 2)) -> pd.DataFrame:
    """Accuracy rows for two tasks; one gqa run on digits errored."""
    rng, rows = np.random.default_rng(seed), []
    quality = {"mha": 0.95, "mqa": 0.86, "gqa": 0.92, "kdgqa": 0.93, "dgqa": 0.91}
    for task in ("mqar", "digits"):
        for variant, options, g in GROUPED:
            for s in seeds:
                mean = quality[variant] * (0.9 if task == "mqar" else 1)
                acc = float(np.clip(mean + rng.normal(0, 0.02), 0, 1))
                row = dict(run_id="fab", task=task, variant=variant, options=options, n_heads=8)
                row |= dict(n_kv_heads=g, seed=s, steps=300, accuracy=acc, loss=1 - acc, wall_s=12.0)
                row |= dict(kv_cache_bytes=2 * 1 * g * 64 * 32 * 4, status="ok", error="")
                row |= dict(init="scratch" if variant == "mha" else "uptrained")
                rows.append(row)
    rows.append(rows[-1] | dict(variant="gqa", options="", n_kv_heads=4, seed=9, accuracy=None, loss=None))
    rows[-1] |= dict(status="error", error="RuntimeError: loss is NaN at step 120")
    return pd.DataFrame(rows, columns=ACCURACY_COLUMNS)


def write_run(path: Path, *, sweep: pd.DataFrame | None = None, accuracy: pd.DataFrame | None = None) -> Path:
    """Write a run directory holding the given tables and a run.json."""
    path.mkdir(parents=True, exist_ok=True)
    if sweep is not None:
        sweep.to_csv(path / "sweep.csv", index=False)
    if accuracy is not None:
        accuracy.to_csv(path / "accuracy.csv", index=False)
    meta = {"command": "sweep", "config": {"variants": ["mha", "mqa", "gqa"], "seq_lens": [128, 256]}}
    meta["environment"] = {"torch": "2.13.0", "device_name": "fake-cpu", "threads": 2}
    (path / "run.json").write_text(json.dumps(meta))
    return path
