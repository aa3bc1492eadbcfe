"""`attnbench sweep`: latency, memory and FLOPs of registered variants over a grid, into CSV.

Python API (the CLI is a thin layer over it):

    cfg = harness.config.load(SweepConfig, "sweep", profile="quick")
    df = harness.sweep.run(cfg)          # pandas.DataFrame, also <out>/<run_id>/sweep.csv

This module runs a sweep: the config, the checks before any cell runs, the run folder
(run.json, sweep.csv, benchmark.json), resuming, and the speedup against the reference. The
cells are harness/sweep/grid.py's; each is measured by harness/sweep/cell.py, on the executor the
config names (executors.py). A failing cell becomes a row with its status; Ctrl-C keeps the
rows written so far.
"""

from __future__ import annotations

import dataclasses
import functools
import secrets
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import torch

import attn_variants as av
import runfiles as files
from attn_variants import plugins
from benchstats import speedup

from .. import config as config_mod
from .. import dashboard, measure
from ..measure import calibrate, timing
from ..records import CsvSink, Row, check_writable, read_frame, read_sweep, write_run_json
from ..variant_choice import check_builds
from . import cell as sweep_cell
from . import cluster, executors
from .config import SweepConfig
from .grid import Cell, Skipped, expand, row_key

TEXT_COLUMNS = (
    "options", "error", "latency_ms_samples", "sdpa_backend", "backend", "compile", "lengths", "kv_layout",
    "kernel", "gpu_index", "accelerator",
)  # fmt: skip


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
    return config_mod.build(SweepConfig, files.read_run_json(path)["config"], where=str(path))


def repair(run_dir: Path) -> str:
    """Resume never trusts sweep.csv: rows cut short by a kill, garbled, lacking a status or
    repeating a cell are dropped (their cells are measured again) and the file is rewritten
    atomically. The line naming what was dropped ('' if nothing was)."""
    table = read_sweep(Path(run_dir) / "sweep.csv", repair=True)
    if not table.dropped:
        return ""
    files.rewrite(table)
    return table.dropped_line()


def grid(cfg: SweepConfig) -> tuple[list[Cell], Skipped]:
    """The sweep's cells, the reference first at every shape, and the (h, g) pairs skipped,
    after loading `cfg.plugins` (their variants are named in cfg.variants)."""
    plugins.load_all(cfg.plugins)
    return expand(cfg, reference_first=True, layout=cfg.layout, images=cfg.images)


def preflight(cfg: SweepConfig, run_dir: Path | None = None) -> tuple[list[Cell], Skipped]:
    """`grid(cfg)`, with every input checked before any cell runs (ValueError): each distinct
    variant built once (its options), the device, then the output folder made and written to.
    `run` takes what it returns, so a run expands its grid once."""
    cells, skipped = grid(cfg)
    check_builds((c.choice, c.spec) for c in cells)
    check_lengths(cfg, cells)
    if cfg.executor == "local":  # a Ray cluster's devices are its workers' (executors.py)
        measure.resolve_device(cfg.device)  # 'cuda' without a GPU
    check_writable(run_dir if run_dir is not None else cfg.out)
    return cells, skipped


def check_lengths(cfg: SweepConfig, cells: Sequence[Cell]) -> None:
    """With a memory limit set, a decode cell whose padded cache (b requests at the longest
    drawn length) would not fit is bad input, named before any cell runs."""
    if cfg.length_dist.fixed or cfg.memory_limit_mb <= 0:
        return
    limit = cfg.memory_limit_mb * 2**20
    cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    dtype = measure.DTYPES[resolve_dtype(cfg.dtype, torch.device("cuda" if cuda else "cpu"))]
    for c in (c for c in cells if c.mode == "decode"):
        entry = av.info(c.choice.name)
        need = entry.kv_cache_bytes(c.spec, dict(c.choice.options), c.batch, max(c.lengths), dtype)
        if need > limit:
            raise ValueError(
                f"lengths={cfg.lengths!r}: the longest request ({max(c.lengths)} tokens) gives "
                f"{c.choice.name} a {need / 2**20:.0f} MiB cache at b={c.batch}, over "
                f"memory_limit_mb={cfg.memory_limit_mb:g}"
            )


def run(
    cfg: SweepConfig,
    *,
    run_dir: Path | None = None,
    observer: Observer | None = None,
    settings: dict | None = None,
    checked: tuple[list[Cell], Skipped] | None = None,
) -> pd.DataFrame:
    """Measure every cell of `cfg`'s grid not already in `run_dir`/sweep.csv; return all rows.

    `settings` (`config.Settings.record()`: which file the config came from) goes to run.json.
    The frame's `attrs` hold run_dir, csv, skipped pairs, and this session's wall and timed seconds.
    At the end, benchmark.json beside the CSV holds every ok row as dashboard records (dashboard.py).
    `checked` is what `preflight(cfg)` returned, if the caller ran it already.
    """
    cells, skipped = checked or preflight(cfg, run_dir)  # before Ray starts or any cell runs
    pool = executors.make(cfg.executor, cfg.ray_address, cfg.threads, **_ray_settings(cfg))
    device = pool.device(cfg.device)
    cfg = dataclasses.replace(cfg, dtype=resolve_dtype(cfg.dtype, device))  # run.json and rows: the real one
    cells = [dataclasses.replace(c, dtype=cfg.dtype) for c in cells]  # 'auto' in the keys no more
    dtype_ok = measure.DTYPES[cfg.dtype]
    run_dir = Path(run_dir) if run_dir is not None else new_run_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    csv_path = run_dir / "sweep.csv"
    dropped = repair(run_dir)
    done = {row_key(r) for r in read_sweep(csv_path).rows}
    todo = [c for c in cells if c.key() not in done]
    with timing.threads(cfg.threads):
        # Before the clock starts: the roof of the roofline (cached: measured once per machine,
        # dtype and thread count) and the tools' one-off imports. Ray workers pay both in their
        # first cell.
        peaks = calibrate.get(device, cfg.dtype) if cfg.executor == "local" else None
        startup = measure.warm_up_tools(device) if cfg.executor == "local" else 0.0
    t0, timed = time.perf_counter(), 0.0
    pool.prepare(device, len(todo))  # Ray: every worker starts now, in parallel
    with timing.threads(cfg.threads):
        env = pool.environment(device)  # Ray: from a worker (the driver may have no GPU)
        code = cluster.code_hash(cfg.plugins)  # Ray workers confirm it before each cell
        _write_run_json(run_dir, cfg, {**env, "code_hash": code}, skipped, cells, settings, peaks)
        if observer:
            observer.start(len(cells), len(cells) - len(todo))
        on_ray = {"code": code} if cfg.executor == "ray" else {}
        task = functools.partial(
            sweep_cell.measure_on_host if cfg.executor == "ray" else sweep_cell.measure_cell,
            cfg=cfg, device=device, dtype=dtype_ok, env=env, run_id=run_dir.name, **on_ray,
        )  # fmt: skip
        with CsvSink(csv_path) as sink:  # the driver alone writes rows, each cell's once
            for cell, result, attempts in pool.map(task, todo, device=device):
                failed = not isinstance(result, Row)  # the worker died or raised outside the cell
                row = sweep_cell.failed_row(cell, result, env, run_dir.name) if failed else result
                row = dataclasses.replace(row, attempts=attempts)
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
        dropped=dropped,
    )
    return df


def _ray_settings(cfg: SweepConfig) -> dict[str, Any]:
    """What only the Ray executor takes from the config."""
    if cfg.executor != "ray":
        return {}
    return dict(retries=cfg.retries, accelerator_type=cfg.accelerator_type, plugins=cfg.plugins)


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
    cells: Sequence[Cell],
    settings: dict | None,
    peaks: Any = None,
) -> None:
    if (run_dir / "run.json").exists():  # resuming: the first session's record stays unchanged
        return
    calibration = dataclasses.asdict(peaks) if peaks is not None else None
    pairs = [list(p) for p in skipped]
    # The drawn request lengths of the decode cells, per batch size (every variant decodes these).
    drawn = {str(c.batch): list(c.lengths) for c in cells if c.lengths}
    write_run_json(
        run_dir, cfg, env, len(cells), skipped_pairs=pairs, settings=settings, calibration=calibration,
        lengths=drawn,
    )  # fmt: skip


def with_speedup(df: pd.DataFrame, reference: str = "mha") -> pd.DataFrame:
    """`df` plus `speedup` against `reference` and the kernel columns: benchstats/speedup.py's one
    definition (same shape, dtype, threads, backend and compile, no options), which the report's
    table and heatmap use too."""
    return speedup.with_speedup(df, reference).drop(columns="reference_ms")
