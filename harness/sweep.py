"""`attnbench sweep`: latency, memory and FLOPs of registered variants over a grid, into CSV.

Python API (the CLI is a thin layer over it):

    cfg = harness.config.load(SweepConfig, "sweep", profile="quick")
    df = harness.sweep.run(cfg)          # pandas.DataFrame, also <out>/<run_id>/sweep.csv

The grid is variants x backend x compile x modes x seq_len x n_heads x n_kv_heads. Cells are
deduplicated by the spec each variant resolves to (mha and mqa fix g), pairs with h % g != 0
or g > h are skipped and counted, and the cells of one shape run back to back so that a
variant and its mha reference see the same machine state. Each cell: build (with `compile`:
one eager call, which builds flex's block masks, `setup_s`, then the first compiled call,
`compile_s`), FLOPs of the uncompiled step counted on the meta device (harness/flops.py), on
CUDA a peak estimate over fake tensors first (too big: a skipped_memory row), `warmup` calls,
one profiled call (memory, SDPA backend), then `repeats` timed calls (timing.method_name);
graphs compiled during them are counted (`recompiles`) and named in `error`.
A failing cell becomes a row with its status; Ctrl-C keeps the rows written so far.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import json
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Protocol

import pandas as pd
import torch

import attn_variants as av
from attn_variants.backends import is_unavailable
from attn_variants.flex import MASKS
from attn_variants.registry import Mode

from . import calibrate, dashboard, executors, flops, measure, timing, workload
from . import config as config_mod
from .records import CsvSink, Row, check_writable, read_frame, read_rows, write_run_json
from .variant_choice import VariantChoice, check_builds, parse_one, parse_variants, with_backends

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


@dataclass(frozen=True)
class Cell:
    """One point of the grid: a variant (with options) at one resolved shape and mode."""

    choice: VariantChoice
    mode: str
    batch: int
    seq_len: int
    n_visual: int
    spec: av.AttnSpec  # after the variant's preset
    dtype: str
    layout: str = "prefix"  # where the n_visual image tokens sit (multimodal variants)
    n_images: int = 0  # images in the sequence: 1 for prefix with n_visual > 0
    compile: str = "off"

    def key(self) -> tuple[str, ...]:
        s = self.spec
        values = (self.choice.name, self.choice.options_text, self.mode, self.batch, self.seq_len)
        key = (*values, self.n_visual, s.n_heads, s.n_kv_heads, s.head_dim, self.dtype)
        # The prefix layout and compile "off" keep the old key, so existing CSVs and the check
        # baseline still match.
        key = key if self.layout == "prefix" else (*key, self.layout, self.n_images)
        return tuple(map(str, key if self.compile == "off" else (*key, f"compile={self.compile}")))

    @property
    def backend(self) -> str:
        """The kernel this cell asks for: its `backend` option, or the registry default."""
        return dict(self.choice.options).get("backend", av.info(self.choice.name).options["backend"])


def row_key(row: dict[str, str]) -> tuple[str, ...]:
    """The `Cell.key` of a row read back from a CSV (resume)."""
    names = ("variant", "options", "mode", "batch", "seq_len", "n_visual", "n_heads", "n_kv_heads")
    key = tuple(str(row[k]) for k in (*names, "head_dim", "dtype"))
    layout = row.get("layout")
    layout = layout if isinstance(layout, str) and layout else "prefix"  # older CSVs: prefix
    key = key if layout == "prefix" else (*key, layout, str(row["n_images"]))
    compile = row.get("compile")
    compile = compile if isinstance(compile, str) and compile else "off"  # older CSVs: off
    return key if compile == "off" else (*key, f"compile={compile}")


def grid(cfg: SweepConfig) -> tuple[list[Cell], list[tuple[int, int]]]:
    """The cells to run, and the (n_heads, n_kv_heads) pairs skipped as invalid."""
    choices = with_backends(parse_variants(cfg.variants), cfg.backend)
    runs = [(c, comp) for c in choices for comp in cfg.compile]
    if cfg.reference != "none":
        runs.insert(0, (parse_one(cfg.reference), "off"))  # the speedup baseline: sdpa, eager
    pairs = [(h, g) for h in cfg.heads for g in cfg.kv_heads]
    skipped = [(h, g) for h, g in pairs if g > h or h % g]
    cells: dict[tuple[str, ...], Cell] = {}
    for mode in cfg.modes:
        for n in cfg.seq_len:
            for h, g in (p for p in pairs if p not in skipped):
                for choice, comp in runs:
                    cell = cell_at(choice, mode, n, h, g, cfg, comp)
                    cells.setdefault(cell.key(), cell)
    if not cells:
        raise ValueError(
            f"empty grid: no valid (n_heads, n_kv_heads) pair in heads={cfg.heads}, "
            f"kv_heads={cfg.kv_heads} (n_heads must be divisible by n_kv_heads)"
        )
    return _by_shape(cells.values()), skipped


def cell_at(
    choice: VariantChoice, mode: str, n: int, h: int, g: int, cfg: SweepConfig | Any, compile: str = "off"
) -> Cell:
    """The cell of `choice` at (mode, n, h, g): the variant's preset resolves g, multimodal
    variants get round(visual_frac * n) visual tokens. `cfg` gives batch, head_dim, dtype and
    visual_frac (a SweepConfig, or the check's CheckConfig, which has the same fields; the
    check has no `layout`, so its cells are prefix). Multimodal cells of the interleaved
    layout hold `images` images."""
    entry = av.info(choice.name)
    spec = entry.resolve(av.AttnSpec(dim=h * cfg.head_dim, n_heads=h, n_kv_heads=g))
    n_visual = round(cfg.visual_frac * n) if entry.multimodal else 0
    cell_layout = getattr(cfg, "layout", "prefix") if n_visual else "prefix"
    images = getattr(cfg, "images", 1) if cell_layout == "interleaved" else int(n_visual > 0)
    return Cell(choice, mode, cfg.batch, n, n_visual, spec, cfg.dtype, cell_layout, images, compile)


def _by_shape(cells: Iterable[Cell]) -> list[Cell]:
    """Group the cells of one (mode, n, h) together, in grid order (stable)."""
    cells = list(cells)
    shapes = list(dict.fromkeys((c.mode, c.seq_len, c.spec.n_heads) for c in cells))
    return sorted(cells, key=lambda c: shapes.index((c.mode, c.seq_len, c.spec.n_heads)))


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
            _measure_on_host if cfg.executor == "ray" else measure_cell,
            cfg=cfg, device=device, dtype=dtype_ok, env=env, run_id=run_dir.name,
        )  # fmt: skip
        with CsvSink(csv_path) as sink:
            for cell, result in pool.map(task, todo, device=device):
                row = result if isinstance(result, Row) else failed_row(cell, result, env, run_dir.name)
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


def measure_cell(
    cell: Cell, cfg: SweepConfig, device: torch.device, dtype: torch.dtype, env: dict, run_id: str
) -> Row:
    """One row: the cell measured, or its failure as status and error (the sweep goes on)."""
    start = time.perf_counter()
    MASKS.clear()  # each cell builds, and times, its own block masks
    try:
        fields = _measure(cell, cfg, device, dtype)
        status, error = "ok", fields.pop("error")  # ok, maybe with a note (recompiles)
    except workload.UnsupportedMode as err:
        status, error, fields = "unsupported", str(err), {}
    except measure.MemorySkip as err:
        status, error, fields = "skipped_memory", str(err), {"peak_mem_estimate_bytes": err.estimate}
    except Exception as err:  # noqa: BLE001 (any failure is recorded, the sweep goes on)
        status = _failure_status(err)
        error, fields = error_text(err), {}
    if status in ("oom", "error"):  # the exception (now gone) held the cell's tensors: free them
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return _row(cell, env, run_id, status, error, cell_s=round(time.perf_counter() - start, 6), **fields)


def _failure_status(err: BaseException) -> str:
    if measure.is_oom(err):
        return "oom"
    if is_unavailable(err):  # a forced SDPA kernel refused this dtype/shape/device
        return "unsupported"
    return "invalid" if isinstance(err, ValueError) else "error"


def _measure_on_host(cell: Cell, *, cfg: SweepConfig, env: dict, **kwargs: Any) -> Row:
    """`measure_cell` on a Ray worker (which fixed its thread count): the row describes the
    worker's own machine, host and real thread count."""
    local = measure.host_environment(kwargs["device"])
    return measure_cell(cell, cfg=cfg, env={**env, **local}, **kwargs)


def failed_row(cell: Cell, err: BaseException, env: dict, run_id: str) -> Row:
    """The row of a cell whose worker died or raised outside the measurement (status error)."""
    return _row(cell, {**env, "host": ""}, run_id, "error", error_text(err))


def error_text(err: BaseException, limit: int = 500) -> str:
    """`Type: message`, cut at `limit` characters. A Ray task error is named by the exception
    the worker raised (its `cause`): Ray's own wrapper starts with a header (colours, pid, actor
    id, the remote traceback) that fills the limit before the message, and its length depends on
    the checkout's path."""
    cause = getattr(err, "cause", None)
    err = cause if isinstance(cause, BaseException) else err
    return f"{type(err).__name__}: {err}"[:limit]


def _row(cell: Cell, env: dict, run_id: str, status: str, error: str, **fields: Any) -> Row:
    s = cell.spec
    return Row(
        run_id=run_id,
        timestamp=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **env,
        dtype=cell.dtype,
        variant=cell.choice.name,
        options=cell.choice.options_text,
        mode=cell.mode,
        batch=cell.batch,
        seq_len=cell.seq_len,
        n_visual=cell.n_visual,
        layout=cell.layout,
        n_images=cell.n_images,
        dim=s.dim,
        n_heads=s.n_heads,
        n_kv_heads=s.n_kv_heads,
        head_dim=s.head_dim,
        status=status,
        error=error,
        backend=cell.backend,
        compile=cell.compile,
        **fields,
    )


def _measure(cell: Cell, cfg: SweepConfig, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    options = dict(cell.choice.options)
    # FLOPs of the uncompiled step; flex through its sdpa twin (FlopCounterMode has no flex rule)
    flop_options = {**options, "backend": "sdpa"} if cell.backend == "flex" else options

    def make(on: torch.device, opts: dict = flop_options) -> Callable[[], object]:
        return _build(cell, cfg, on, dtype, opts, "off").step

    # fwd, fwd_bwd: on the meta device (no data, no n^2 allocation); decode: on the real
    # workload below (one query, linear memory; its ops can depend on values, see count_real)
    counted = flops.count(make) if cell.mode != "decode" else None
    limit = measure.memory_limit(device, cfg.memory_limit_mb)
    estimate = _estimate(functools.partial(make, opts=options), device) if limit is not None else None
    if estimate is not None:
        measure.check_fits(estimate, limit)
    w = _build(cell, cfg, device, dtype, options, cell.compile)
    counted = counted or flops.count_real(_flop_step(w, cell, cfg, device, dtype))
    for _ in range(cfg.warmup):
        w.step()
    probe = measure.probe(w.step, device, w.reset)  # untimed, the backend the timed calls use
    heads = measure.active_heads(w.module, counted.flops, counted.attention_flops)  # MoH's gates
    fn, method = _timed_fn(w.step, cell.mode, cfg, device)
    flush = timing.L2Flush(device, cfg.l2_flush and cell.mode != "decode")
    before = w.graphs_since_build()
    samples = timing.sample(fn, device, warmup=0, repeats=cfg.repeats, flush=flush)
    while sum(samples) < cfg.min_time_s:  # batches of `repeats` (timing.summarize keeps them all)
        samples += timing.sample(fn, device, warmup=0, repeats=cfg.repeats, flush=flush)
    recompiles = w.graphs_since_build() - before
    t = timing.summarize(samples)
    moved = flops.bytes_moved(cell.mode, cell.batch, cell.seq_len, cell.spec, dtype)
    peaks = calibrate.get(device, str(dtype).removeprefix("torch."))  # the dtype the cell ran in
    return dict(
        latency_ms_median=t.median * 1e3,
        latency_ms_p10=t.p10 * 1e3,
        latency_ms_p90=t.p90 * 1e3,
        repeats=t.n,
        latency_ms_samples=";".join(f"{x * 1e3:.4f}" for x in samples),
        timing=method,
        peak_mem_bytes=probe.peak_mem_bytes,
        peak_mem_estimate_bytes=estimate,
        kv_cache_bytes=w.kv_cache_bytes,
        kv_heads_equiv=av.info(cell.choice.name).kv_heads_equiv(w.spec, dict(cell.choice.options)),
        flops=counted.flops,
        flops_effective=counted.flops_effective,
        tflops=counted.flops_effective / t.median / 1e12,
        bytes_moved=moved,
        flops_util=counted.flops_effective / t.median / peaks.peak_flops,
        bw_util=moved / t.median / peaks.peak_bytes_per_s,
        **heads,
        sdpa_backend=_kernel_name(probe.sdpa_backend, cell.compile),
        timed_s=sum(samples),
        compile_s=w.compile_s,
        setup_s=w.setup_s,
        recompiles=recompiles if w.compile != "off" else None,
        error=f"recompiled {recompiles} time(s) during timing: latency includes compilation"
        if recompiles
        else "",
    )


def _estimate(make: Callable[[torch.device], Callable[[], object]], device: torch.device) -> int | None:
    """The fake-tensor peak estimate, or None (the cell runs unguarded, a real OOM is an oom
    row) where an op has no fake implementation: a safety check must not fail the cell."""
    try:
        return flops.peak_estimate(make, device)
    except Exception:  # noqa: BLE001
        return None


def _timed_fn(
    step: Callable[[], object], mode: str, cfg: SweepConfig, device: torch.device
) -> tuple[Callable[[], object], str]:
    """What the samples time, and the `timing` column naming it."""
    flush = cfg.l2_flush and mode != "decode"
    if not (cfg.cuda_graph and mode == "decode" and device.type == "cuda"):
        return step, timing.method_name(device, l2_flush=flush, cuda_graph=False)
    try:
        return timing.cuda_graph(step, device), timing.method_name(device, l2_flush=False, cuda_graph=True)
    except RuntimeError as err:  # a host sync or dynamic shape in the step: time it eagerly
        torch.cuda.synchronize(device)
        reason = str(err).splitlines()[0][:80]
        return step, f"cuda_event (graph capture failed: {reason})"


def _kernel_name(seen: str, compile: str) -> str:
    """The profiler's kernel name; 'inductor' for a compiled cell whose attention the profiler
    cannot see (Inductor generated it inside its graph, e.g. compiled flex or decomposed math)."""
    return "inductor" if compile != "off" and seen == "none" else seen


def _build(cell: Cell, cfg: SweepConfig, device: torch.device, dtype: torch.dtype, options, compile):
    return workload.build(
        cell.choice.name,
        cell.spec,
        cell.mode,
        batch=cell.batch,
        seq_len=cell.seq_len,
        n_visual=cell.n_visual,
        dtype=dtype,
        device=device,
        layout=cell.layout,
        images=cell.n_images,
        options=options,
        seed=cfg.seed,
        compile=compile,
    )


def _flop_step(w: workload.Workload, cell: Cell, cfg: SweepConfig, device: torch.device, dtype: torch.dtype):
    """The uncompiled step; for flex, the same variant through sdpa: FlopCounterMode has no
    rule for the flex_attention higher-order op (it raises), and the math is the same."""
    if cell.backend != "flex":
        return w.uncompiled
    return _build(cell, cfg, device, dtype, {**dict(cell.choice.options), "backend": "sdpa"}, "off").step


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
