"""One sweep cell measured into one row (`measure_cell`), or its failure recorded as a row.

Each cell: build (with `compile`: one eager call, which builds flex's block masks, `setup_s`,
then the first compiled call, `compile_s`), FLOPs of the uncompiled step counted on the meta
device (harness/measure/flops.py), on CUDA a peak estimate over fake tensors first (too big: a
skipped_memory row), a warm-up of at least `warmup` calls and `warmup_s` seconds
(timing.warm_up), one profiled call (memory, SDPA backend), then `repeats`
timed calls (timing.method_name); graphs compiled during them are counted (`recompiles`) and
named in `error`. A failing cell becomes a row with its status, and the sweep goes on.
"""

from __future__ import annotations

import functools
import gc
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import torch

import attn_variants as av
from attn_variants import plugins
from attn_variants.backends import is_unavailable
from attn_variants.flex import MASKS

from .. import measure
from ..measure import calibrate, flops, roof, timing, workload
from ..records import Row, error_text
from . import cluster, lengths
from .config import SweepConfig
from .grid import Cell


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


def measure_on_host(cell: Cell, *, cfg: SweepConfig, env: dict, code: str = "", **kwargs: Any) -> Row:
    """`measure_cell` on a Ray worker (which fixed its thread count): the row describes the
    worker's own machine, host, GPU index, node label and real thread count. A worker whose code
    is not the driver's (`code`, cluster.code_hash) measures nothing: its row is an error."""
    shipped = cluster.worker_plugins(cfg.plugins)  # the driver's plugin files, by module name
    local = cluster.where(kwargs["device"])
    mine = cluster.worker_code_hash(shipped)
    if code and mine != code:
        error = f"the worker on {local['host']} runs code {mine}, not the driver's {code}: not measured"
        return _row(cell, {**env, **local}, kwargs["run_id"], "error", error)
    plugins.load_all(shipped)  # a worker process: the driver's plugins, before the registry is read
    return measure_cell(cell, cfg=cfg, env={**env, **local}, **kwargs)


def failed_row(cell: Cell, err: BaseException, env: dict, run_id: str) -> Row:
    """The row of a cell whose worker died or raised outside the measurement (status error)."""
    nowhere = {"host": "", "gpu_index": "", "accelerator": ""}  # a lost worker: where is unknown
    return _row(cell, {**env, **nowhere}, run_id, "error", error_text(err))


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
        **_serving_fields(cell),
        **fields,
    )


def _serving_fields(cell: Cell) -> dict[str, Any]:
    """A decode row's request lengths (distribution, min/mean/max), layout and q_len."""
    if cell.mode != "decode":
        return {}
    drawn = list(cell.lengths) or [cell.seq_len] * cell.batch
    return dict(
        lengths=cell.length_dist, **lengths.summary(drawn), kv_layout=cell.kv_layout,
        page_size=cell.page_size, q_len=cell.q_len,
    )  # fmt: skip


def _served(w: workload.Workload, cell: Cell, seconds: float, dtype: torch.dtype) -> dict[str, Any]:
    """A decode row's serving figures from its cache: tokens per second, the bytes the requests
    need and the layout holds, and the attention kernel that read them."""
    if cell.mode != "decode" or w.kv_bytes is None or w.cache is None:
        return {}
    need, held = w.kv_bytes
    kernel = w.cache.kernel or "dense"
    if cell.kv_layout == "paged" and not kernel.endswith("-paged"):  # read after a gather of the pages
        kernel = "gather+" + kernel
    return dict(
        kernel=kernel,
        tokens_per_s=cell.batch * cell.q_len / seconds,
        kv_bytes_needed=need,
        kv_bytes_allocated=held,
        padding_waste=held / need if need else None,
    )


def _bytes_moved(cell: Cell, w, counted: flops.Count, dtype: torch.dtype, served: dict[str, Any]) -> int:
    """The step's traffic, the scope of flops_effective: weights, input and output, and the
    attention's tensors at the widths the variant ran (flops.bytes_moved). Decode: the cache the
    variant holds (the registry's bytes), its weights, the tokens in and out (roof.decode_bytes);
    a served decode (drawn lengths, paged, q_len > 1) reads the bytes its requests need, not the
    padded frame."""
    if cell.mode != "decode":
        weights = roof.weight_bytes(w.module)
        return flops.bytes_moved(
            cell.mode,
            cell.batch,
            cell.seq_len,
            cell.spec,
            dtype,
            weight_bytes=weights,
            calls=counted.attention,
        )
    plain = not cell.lengths and cell.kv_layout == "padded" and cell.q_len == 1
    cache = w.kv_cache_bytes if plain or not served else served["kv_bytes_needed"]
    return roof.decode_bytes(w.module, cache, cell.batch, cell.q_len, dtype)


def _measure(cell: Cell, cfg: SweepConfig, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    options = dict(cell.choice.options)
    # FLOPs of the uncompiled step; flex through its sdpa twin (FlopCounterMode has no flex rule)
    flop_options = {**options, "backend": "sdpa"} if cell.backend == "flex" else options

    def make(on: torch.device, opts: dict = flop_options) -> Callable[[], object]:
        return _build(cell, cfg, on, dtype, opts, "off").step

    # fwd, fwd_bwd: on the meta device (no data, no n^2 allocation); decode, and a variant
    # declared `flops_on_meta=False` (it reads values on the host): on the real workload below
    # (its ops can depend on values, see count_real)
    on_meta = cell.mode != "decode" and av.info(cell.choice.name).flops_on_meta
    counted = flops.count(make) if on_meta else None
    limit = measure.memory_limit(device, cfg.memory_limit_mb)
    estimate = _estimate(functools.partial(make, opts=options), device) if limit is not None else None
    if estimate is not None:
        measure.check_fits(estimate, limit)
    w = _build(cell, cfg, device, dtype, options, cell.compile)
    counted = counted or flops.count_real(_flop_step(w, cell, cfg, device, dtype))
    counted = flops.with_mask_density(counted, make, device)  # masked calls on meta: by real masks
    warmed = timing.warm_up(w.step, device, calls=cfg.warmup, seconds=cfg.warmup_s)
    probe = measure.probe(w.step, device, w.reset)  # untimed, the backend the timed calls use
    heads = measure.active_heads(w.module, counted.flops_effective, counted.attention_effective)  # MoH
    fn, method = _timed_fn(w.step, cell.mode, cfg, device)
    flush = timing.L2Flush(device, cfg.l2_flush and cell.mode != "decode")
    before = w.graphs_since_build()
    samples = timing.sample(fn, device, warmup=0, repeats=cfg.repeats, flush=flush)
    while sum(samples) < cfg.min_time_s:  # batches of `repeats` (timing.summarize keeps them all)
        samples += timing.sample(fn, device, warmup=0, repeats=cfg.repeats, flush=flush)
    recompiles = w.graphs_since_build() - before
    t = timing.summarize(samples)
    served = _served(w, cell, t.median, dtype)
    moved = _bytes_moved(cell, w, counted, dtype, served)
    peaks = calibrate.get(device, str(dtype).removeprefix("torch."))  # the dtype the cell ran in
    return dict(
        latency_ms_median=t.median * 1e3,
        latency_ms_p10=t.p10 * 1e3,
        latency_ms_p90=t.p90 * 1e3,
        repeats=t.n,
        warmup_calls=warmed,
        latency_ms_samples=";".join(f"{x * 1e3:.4f}" for x in samples),
        timing=method,
        peak_mem_bytes=probe.peak_mem_bytes,
        peak_mem_estimate_bytes=estimate,
        kv_cache_bytes=w.kv_cache_bytes,
        resident_bytes=_resident(cell, w, dtype, served),
        kv_heads_equiv=av.info(cell.choice.name).kv_heads_equiv(w.spec, dict(cell.choice.options)),
        flops=counted.flops,
        flops_effective=counted.flops_effective,
        tflops=counted.flops_effective / t.median / 1e12,
        bytes_moved=moved,
        flops_util=counted.flops_effective / t.median / peaks.peak_flops,
        bw_util=moved / t.median / peaks.peak_bytes_per_s,
        **_decode_roof(cell, moved, counted.flops_effective, t.median, peaks),
        **heads,
        sdpa_backend=_kernel_name(probe.sdpa_backend, cell.compile),
        timed_s=sum(samples),
        compile_s=w.compile_s,
        setup_s=w.setup_s,
        recompiles=recompiles if w.compile != "off" else None,
        **served,
        error=f"recompiled {recompiles} time(s) during timing: latency includes compilation"
        if recompiles
        else "",
    )


def _resident(cell: Cell, w, dtype: torch.dtype, served: dict[str, Any]) -> int | None:
    """A decode row's resident bytes: weights, the new tokens x (b, q_len, d), the cache as
    allocated (a served decode's padded or paged frame); None for other modes."""
    if cell.mode != "decode":
        return None
    cache = served["kv_bytes_allocated"] if served else w.kv_cache_bytes
    tokens = cell.batch * cell.q_len * w.spec.dim * torch.empty(0, dtype=dtype).element_size()
    return roof.weight_bytes(w.module) + tokens + cache


def _decode_roof(cell: Cell, n_bytes: int, flops_effective: int, median: float, peaks) -> dict[str, Any]:
    """A decode row's decode_bytes (its bytes_moved: cache, weights, tokens in and out), roof_s and
    roof_util (measure/roof.py); nothing for other modes."""
    if cell.mode != "decode":
        return {}
    roof_time = roof.roof_s(n_bytes, flops_effective, peaks.peak_bytes_per_s, peaks.peak_flops)
    return dict(decode_bytes=n_bytes, roof_s=roof_time, roof_util=roof_time / median)


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
        serving=workload.Serving(cell.lengths or None, cell.kv_layout, cell.page_size, cell.q_len),
    )


def _flop_step(w: workload.Workload, cell: Cell, cfg: SweepConfig, device: torch.device, dtype: torch.dtype):
    """The uncompiled step; for flex, the same variant through sdpa: FlopCounterMode has no
    rule for the flex_attention higher-order op (it raises), and the math is the same."""
    if cell.backend != "flex":
        return w.uncompiled
    return _build(cell, cfg, device, dtype, {**dict(cell.choice.options), "backend": "sdpa"}, "off").step
