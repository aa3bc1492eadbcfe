"""`attnbench sweep`: latency, memory and FLOPs of registered variants over a grid, into CSV.

Python API (the CLI is a thin layer over it):

    cfg = harness.config.load(SweepConfig, "sweep", profile="quick")
    df = harness.sweep.run(cfg)          # pandas.DataFrame, also <out>/<run_id>/sweep.csv

This module runs a sweep: the config, the checks before any cell runs, the run folder
(run.json, sweep.csv, benchmark.json), resuming, and the speedup against the reference. The
cells are harness/grid.py's; each is measured by harness/sweep_cell.py, on the executor the
config names (executors.py). A failing cell becomes a row with its status; Ctrl-C keeps the
rows written so far.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import pandas as pd
import torch

import attn_variants as av
from attn_variants.registry import Mode

from . import calibrate, dashboard, executors, measure, sweep_cell, timing, workload
from . import config as config_mod
from .grid import Cell, grid, row_key
from .records import CsvSink, Row, check_writable, read_frame, read_rows, write_run_json
from .variant_choice import check_builds

TEXT_COLUMNS = ("options", "error", "latency_ms_samples", "sdpa_backend", "backend", "compile")
CompileMode = Literal["off", "default", "max-autotune"]


@dataclass(frozen=True)
class SweepConfig:
    """The `[sweep]` table of bench.toml; every field is also a CLI flag."""

    variants: tuple[str, ...] = ("all",)  # names, 'name:key=value:...' with options, or 'all'
    reference: str = "mha"  # added to the grid so every shape has a speedup baseline; 'none': don't
    seq_len: tuple[int, ...] = (256, 512, 1024, 2048)
    heads: tuple[int, ...] = (8,)
    kv_heads: tuple[int, ...] = (1, 2, 4, 8)
    modes: tuple[Mode, ...] = ("fwd", "fwd_bwd", "decode")
    # The kernel axis: each variant runs with each of these `backend` options (one given in
    # the variant's own options wins); the reference stays on sdpa. See attn_variants/backends.py.
    backend: tuple[str, ...] = ("sdpa",)
    # torch.compile(mode=..., fullgraph=True) axis; "off" is eager. The reference stays "off".
    compile: tuple[CompileMode, ...] = ("off",)
    batch: int = 2
    head_dim: int = 64  # e; the model width is d = h * e, so every h keeps the same head size
    # auto: bfloat16 on CUDA (no fused CUDA kernel takes float32 with h != g, see
    # attn_variants.backends.no_fused_gqa), float32 on CPU. A dtype given anywhere is kept.
    dtype: Literal["auto", "float32", "float64", "float16", "bfloat16"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA when torch sees one
    repeats: int = 20  # timed calls per cell, at least
    # ...and more until the timed calls add up to this many seconds: fast cells (decode) would
    # otherwise be mostly harness overhead (build, prefill, FLOP and memory passes). 0: off.
    min_time_s: float = 0.0
    warmup: int = 3  # plain calls before the profiled call; the FLOP pass runs the step once too
    threads: int = 0  # torch.set_num_threads for the run; 0 keeps torch's default (it is recorded)
    visual_frac: float = 0.25  # multimodal variants: n_visual = round(visual_frac * seq_len)
    # Where multimodal variants' image tokens sit: "prefix" (one image, then text) or
    # "interleaved" (`images` images between text, workload.modality_ids); rows say which.
    layout: Literal["prefix", "interleaved"] = "prefix"
    images: int = 2  # images of the interleaved layout
    seed: int = 0
    out: str = "results"
    # Outside variants imported first (attn_variants/plugins.py): module names or .py files;
    # bench.toml's top-level `plugins` and each --plugin add up here (harness/config.py);
    # run.json keeps them, so --resume and Ray workers import the same.
    plugins: tuple[str, ...] = ()
    # local: cells run one by one in this process. ray: one Ray task per cell, holding a whole
    # GPU (GPU sweeps) or one CPU slot per thread (CPU sweeps), so cells never share a device.
    # CUDA timing (no-ops on CPU; the `timing` column names the method): zero a 256 MiB buffer
    # before each fwd/fwd_bwd call so it starts with a cold L2 (triton's do_bench), and time
    # decode as replays of a captured CUDA graph (a decode step is mostly launch overhead).
    l2_flush: bool = True
    cuda_graph: bool = False
    # Cells whose fake-tensor peak estimate exceeds this many MiB become skipped_memory rows;
    # 0: on CUDA what the allocator can still get, on CPU no limit.
    memory_limit_mb: float = 0.0
    executor: Literal["local", "ray"] = "local"
    ray_address: str = ""  # '' starts a local Ray (or joins RAY_ADDRESS); 'auto' or HOST:PORT joins a cluster

    def __post_init__(self) -> None:
        for name in ("variants", "seq_len", "heads", "kv_heads", "modes", "backend", "compile"):
            if not getattr(self, name):
                raise ValueError(f"empty grid: {name} has no values")
        for name in self.backend:
            av.get_backend(name)  # unknown names raise, listing the valid backends
        for name in ("seq_len", "heads", "kv_heads"):
            bad = [v for v in getattr(self, name) if v <= 0]
            if bad:
                raise ValueError(f"{name} values must be positive; got {bad}")
        lows = (
            ("batch", 1),
            ("head_dim", 1),
            ("repeats", 1),
            ("warmup", 0),
            ("threads", 0),
            ("min_time_s", 0),
            ("memory_limit_mb", 0),
            ("images", 1),
        )
        for name, low in lows:
            if getattr(self, name) < low:
                raise ValueError(f"{name}={getattr(self, name)} must be >= {low}")
        if not 0.0 <= self.visual_frac <= 1.0:
            raise ValueError(f"visual_frac={self.visual_frac} must be in [0, 1]")
        if self.layout not in workload.LAYOUTS:
            raise ValueError(f"layout={self.layout!r} is not one of {list(workload.LAYOUTS)}")


class Observer(Protocol):
    """Progress hooks (the CLI's rich progress bar)."""

    def start(self, total: int, done: int) -> None: ...

    def cell(self, cell: Cell, row: Row) -> None: ...


def new_run_dir(cfg: SweepConfig) -> Path:
    """<out>/<run_id>: a timestamp and a short random suffix (two runs in one second differ)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(cfg.out) / f"{stamp}-{secrets.token_hex(2)}"


def resume_config(run_dir: Path) -> SweepConfig:
    """The config a run was started with, read back from its run.json."""
    path = Path(run_dir) / "run.json"
    if not path.is_file():
        raise ValueError(f"cannot resume {str(run_dir)!r}: no run.json there")
    return config_mod.build(SweepConfig, json.loads(path.read_text())["config"], where=str(path))


def preflight(cfg: SweepConfig, run_dir: Path | None = None) -> tuple[list[Cell], list[tuple[int, int]]]:
    """`grid(cfg)`, with every input checked before any cell runs (ValueError): each distinct
    variant built once (its options), the device, then the output folder made and written to."""
    cells, skipped = grid(cfg)
    check_builds((c.choice, c.spec) for c in cells)
    if cfg.executor == "local":  # a Ray cluster's devices are its workers' (executors.py)
        measure.resolve_device(cfg.device)  # 'cuda' without a GPU
    check_writable(Path(run_dir) if run_dir is not None else Path(cfg.out))
    return cells, skipped


def run(
    cfg: SweepConfig,
    *,
    run_dir: Path | None = None,
    observer: Observer | None = None,
    settings: dict | None = None,
) -> pd.DataFrame:
    """Measure every cell of `cfg`'s grid not already in `run_dir`/sweep.csv; return all rows.

    `settings` (`config.Settings.record()`: which file the config came from) goes to run.json.
    The frame's `attrs` hold run_dir, csv, skipped pairs, and this session's wall and timed seconds.
    At the end, benchmark.json beside the CSV holds every ok row as dashboard records (dashboard.py).
    """
    preflight(cfg, run_dir)  # before Ray starts or any cell runs
    pool = executors.make(cfg.executor, cfg.ray_address, cfg.threads)
    device = pool.device(cfg.device)
    cfg = dataclasses.replace(cfg, dtype=resolve_dtype(cfg.dtype, device))  # run.json and rows: the real one
    cells, skipped = grid(cfg)
    dtype_ok = measure.DTYPES[cfg.dtype]
    run_dir = Path(run_dir) if run_dir is not None else new_run_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    csv_path = run_dir / "sweep.csv"
    done = {row_key(r) for r in read_rows(csv_path)}
    todo = [c for c in cells if c.key() not in done]
    with timing.threads(cfg.threads):
        # Before the clock starts: the roof of the roofline (cached: measured once per machine,
        # dtype and thread count) and the tools' one-off imports. Ray workers pay both in their
        # first cell.
        peaks = calibrate.get(device, cfg.dtype) if cfg.executor == "local" else None
        startup = measure.warm_up_tools(device) if cfg.executor == "local" else 0.0
    t0, timed = time.perf_counter(), 0.0
    with timing.threads(cfg.threads):
        env = pool.environment(device)  # Ray: from a worker (the driver may have no GPU)
        _write_run_json(run_dir, cfg, env, skipped, len(cells), settings, peaks)
        if observer:
            observer.start(len(cells), len(cells) - len(todo))
        task = functools.partial(
            sweep_cell.measure_on_host if cfg.executor == "ray" else sweep_cell.measure_cell,
            cfg=cfg, device=device, dtype=dtype_ok, env=env, run_id=run_dir.name,
        )  # fmt: skip
        with CsvSink(csv_path) as sink:
            for cell, result in pool.map(task, todo, device=device):
                failed = not isinstance(result, Row)  # the worker died or raised outside the cell
                row = sweep_cell.failed_row(cell, result, env, run_dir.name) if failed else result
                sink.write(row)
                timed += row.timed_s or 0.0
                if observer:
                    observer.cell(cell, row)
    df = load(csv_path)
    records = dashboard.sweep_records(dashboard.read_csv(csv_path), dashboard.metric_columns(Row))
    dashboard.write(run_dir / dashboard.FILE, records)
    df.attrs.update(
        run_dir=str(run_dir),
        csv=str(csv_path),
        skipped=skipped,
        measured=len(todo),
        wall_s=time.perf_counter() - t0,
        timed_s=timed,
        startup_s=startup,
    )
    return df


def resolve_dtype(name: str, device: torch.device) -> str:
    """The dtype a sweep runs in: `name`, or for 'auto' bfloat16 on CUDA and float32 on CPU."""
    if name != "auto":
        return name
    return "bfloat16" if device.type == "cuda" else "float32"


def load(csv_path: Path) -> pd.DataFrame:
    """A sweep CSV as a DataFrame, text columns as '' (not NaN) where empty."""
    return read_frame(csv_path, TEXT_COLUMNS)


def _write_run_json(
    run_dir: Path,
    cfg: SweepConfig,
    env: dict,
    skipped: Sequence,
    cells: int,
    settings: dict | None,
    peaks: Any = None,
) -> None:
    if (run_dir / "run.json").exists():  # resuming: the first session's record stays unchanged
        return
    calibration = dataclasses.asdict(peaks) if peaks is not None else None
    pairs = [list(p) for p in skipped]
    write_run_json(run_dir, cfg, env, cells, skipped_pairs=pairs, settings=settings, calibration=calibration)


SHAPE = ["device", "dtype", "mode", "batch", "seq_len", "n_heads", "head_dim"]


def with_speedup(df: pd.DataFrame, reference: str = "mha") -> pd.DataFrame:
    """`df` plus `speedup`: the reference's median latency / this row's, at the same shape;
    `reference_sdpa_backend`, the kernel the reference ran there; and `kernels_differ`, True
    where that is not this row's `sdpa_backend`: such a speedup compares kernels, not variants
    (CUDA float32 GQA on math against MHA on memory-efficient, or an eager variant)."""
    ok = df[df["status"] == "ok"]
    if "compile" in ok:  # the reference is uncompiled mha (a compiled mha row is a variant row)
        ok = ok[ok["compile"].isin(["off", ""])]
    ref = ok[(ok["variant"] == reference) & (ok["options"] == "")]
    ref = ref.groupby(SHAPE, as_index=False).agg(
        _ref_ms=("latency_ms_median", "median"), reference_sdpa_backend=("sdpa_backend", _kernels)
    )
    out = df.merge(ref, on=SHAPE, how="left")
    out["speedup"] = out["_ref_ms"] / out["latency_ms_median"]
    out["reference_sdpa_backend"] = out["reference_sdpa_backend"].fillna("")
    known = (out["status"] == "ok") & (out["reference_sdpa_backend"] != "")
    out["kernels_differ"] = known & (out["sdpa_backend"] != out["reference_sdpa_backend"])
    return out.drop(columns="_ref_ms")


def _kernels(backends: pd.Series) -> str:
    """The reference's backend at one shape ('a+b' if its rows disagree)."""
    return "+".join(sorted(set(backends)))
