"""Sweep results as rows: one frozen record per measured cell, written and flushed at once.

Column names are the ones reports/ and docs/sweep.md use. Times are milliseconds, memory bytes.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

# skipped_memory: the fake-tensor estimate of the cell's peak did not fit (never ran); oom: it ran
# out of memory (CUDA, cuBLAS/cuDNN workspace or the CPU allocator).
STATUSES = ("ok", "oom", "skipped_memory", "unsupported", "invalid", "error")


@dataclass(frozen=True)
class Row:
    """One cell of the sweep grid. Measured fields are None when `status` is not 'ok'."""

    run_id: str
    timestamp: str  # ISO 8601, when the cell finished
    git_commit: str  # `git describe --always --dirty` of the harness
    device: str  # 'cpu' or 'cuda'
    device_name: str
    host: str  # the machine that ran the cell (Ray sweeps spread cells over hosts)
    torch_version: str
    threads: int  # torch.get_num_threads(), fixed for the run
    dtype: str
    variant: str  # registry name
    options: str  # options given for this variant, 'key=value;...' ('' = registry defaults)
    mode: str  # fwd | fwd_bwd | decode
    batch: int  # b
    seq_len: int  # n; in decode mode the KV cache length (one new token is decoded)
    n_visual: int  # m, leading visual tokens (multimodal variants: round(visual_frac * n), else 0)
    layout: str  # where the n_visual image tokens sit: prefix (first, one image) or interleaved
    n_images: int  # images among the n_visual tokens (0 when there are none)
    dim: int  # d = h * e
    n_heads: int  # h
    n_kv_heads: int  # g, after the variant's preset (mha: g = h, mqa: g = 1)
    head_dim: int  # e
    status: str  # one of STATUSES
    error: str = ""  # 'ExceptionType: message' when status != 'ok'
    latency_ms_median: float | None = None
    latency_ms_p10: float | None = None
    latency_ms_p90: float | None = None
    repeats: int | None = None  # timed calls, after the warm-up
    warmup_calls: int | None = None  # untimed calls before timing: warmup, or more to fill warmup_s
    latency_ms_samples: str = ""  # every timed sample, ';'-separated, so any statistic can be redone
    # How each sample was taken (timing.method_name): cpu_perf_counter, or on CUDA cuda_event /
    # cuda_graph, '+l2_flush' when a 256 MiB write cooled the L2 first. Always one call per sample.
    timing: str = ""
    # The transient peak: measured allocation above the start of one call (what the call adds to
    # what is already held: weights, inputs and a decode's cache are not in it): CUDA allocator
    # statistics, or on CPU the peak running sum of torch.profiler's allocation events.
    peak_mem_bytes: int | None = None
    peak_mem_estimate_bytes: int | None = None  # live storage at the peak of the fake-tensor pass
    # Analytic b*n*(cached elements per token)*itemsize, separate from the measurement: the GQA
    # family's 2*b*g*n*e*itemsize; mla's b*n*(kv_lora + rope)*itemsize (registry cache hook).
    kv_cache_bytes: int | None = None
    # Decode rows: what the step holds resident before it starts (weights + the new tokens +
    # the cache as allocated); peak_mem_bytes comes on top of it.
    resident_bytes: int | None = None
    kv_heads_equiv: float | None = None  # the g of a GQA with this cache: cached per token / 2e
    # FlopCounterMode count of one call under the math SDPA backend. Convention: causal
    # attention is counted as if full (all n*s scores), as FlopCounterMode does everywhere;
    # the work a causal kernel actually needs is about half of the attention part.
    flops: int | None = None
    # The FLOPs a causal kernel must do: flops with each attention call counted over the pairs
    # it computes, n(n+1)/2 exactly for causal n = s (not halved); MMCA by its blocks.
    flops_effective: int | None = None
    # Least memory traffic of the step, the scope of flops_effective: weights, x in and out, the
    # attention's q, k, v, o at the widths the variant ran (flops.bytes_moved); fwd_bwd 3x the
    # forward; decode rows: decode_bytes.
    bytes_moved: int | None = None
    flops_util: float | None = None  # flops_effective per second / calibrated matmul FLOP/s
    bw_util: float | None = None  # bytes_moved per second / calibrated copy bandwidth
    # Decode rows only (harness/measure/roof.py): what the step must move, the registry's cache bytes
    # plus every weight and the token in and out; its roofline time, the longer of decode_bytes
    # at the calibrated bandwidth and flops_effective at the calibrated matmul FLOP/s; and
    # roof_util = roof_s / latency median (1: at this machine's roof).
    decode_bytes: int | None = None
    roof_s: float | None = None
    roof_util: float | None = None
    # MoH: the mean share of heads with a non-zero gate in one call, and `flops` with the
    # attention core counted for those heads only (the official code computes every head).
    active_head_frac: float | None = None
    flops_active: int | None = None
    tflops: float | None = None  # flops_effective / latency median / 1e12
    sdpa_backend: str = ""  # kernel(s) torch ran (profiler op names): flash_cpu, flash, math, flex; inductor
    backend: str = ""  # the kernel asked for, the variant's `backend` option: sdpa, sdpa_math, eager, flex...
    compile: str = "off"  # torch.compile mode (fullgraph=True): off, default, max-autotune
    compile_s: float | None = None  # wall seconds of the first compiled call; never in the latency
    setup_s: float | None = None  # seconds building flex block masks for this cell; never in the latency
    recompiles: int | None = None  # graphs dynamo compiled during the timed calls (compiled cells)
    # Decode as served (harness/sweep/lengths.py, attn_variants/cache.py): the distribution of the b
    # requests' cache lengths ('fixed': all at seq_len, which is the longest), their min, mean
    # and max; the cache layout (padded, paged) and page size; query tokens per request per
    # step; how attention read the cache (`kernel`: dense, split, mask, with 'gather+' when
    # the pages were gathered). Serving figures: tokens_per_s = b * q_len / median;
    # kv_bytes_needed, each request's own cache bytes summed (the cache's, metadata included);
    # kv_bytes_allocated, what the layout holds (padded to the longest, or whole pages);
    # padding_waste = allocated / needed. bw_util of such rows counts the bytes needed.
    lengths: str = ""
    len_min: int | None = None
    len_mean: float | None = None
    len_max: int | None = None
    kv_layout: str = ""
    page_size: int | None = None
    q_len: int | None = None
    kernel: str = ""
    tokens_per_s: float | None = None
    kv_bytes_needed: int | None = None
    kv_bytes_allocated: int | None = None
    padding_waste: float | None = None
    cell_s: float | None = None  # wall seconds of the whole cell: build, untimed passes, warm-up, repeats
    timed_s: float | None = None  # seconds inside the timed repeats (sum of samples)
    # Where the cell ran, beyond host and device_name: the GPU's physical index (CUDA_VISIBLE_DEVICES
    # entry; '' on CPU) and, on Ray, its node's accelerator label (accelerator_type:H100 -> H100).
    gpu_index: str = ""
    accelerator: str = ""
    attempts: int | None = None  # tries the cell took: > 1 where a Ray worker or its node was lost

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status={self.status!r} is not one of {list(STATUSES)}")


COLUMNS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Row))


class CsvSink:
    """Appends rows to a CSV (header once) and flushes each, so an interrupted run keeps them.

    `columns` are the fields of the row dataclass written (sweep `Row` by default)."""

    def __init__(self, path: Path, columns: tuple[str, ...] = COLUMNS) -> None:
        self.path = path
        new = not path.exists() or path.stat().st_size == 0
        torn = not new and path.read_bytes()[-1:] != b"\n"  # a hard kill cut the last line short
        self._file = open(path, "a", newline="")  # noqa: SIM115 (closed by close())
        if torn:
            self._file.write("\r\n")  # end the torn line; read_rows drops it
        self._writer = csv.DictWriter(self._file, fieldnames=columns)
        if new:
            self._writer.writeheader()
            self._file.flush()

    def write(self, row: Any) -> None:
        self._writer.writerow({k: "" if v is None else v for k, v in dataclasses.asdict(row).items()})
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> CsvSink:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def read_rows(path: Path) -> list[dict[str, str]]:
    """Rows of a sweep CSV as strings; a last line cut short by a hard kill is dropped."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is not None and tuple(reader.fieldnames) != COLUMNS:
            raise ValueError(f"{str(path)!r} has columns {reader.fieldnames}; expected {list(COLUMNS)}")
        return [row for row in reader if None not in row.values() and None not in row]


def read_frame(path: Path, text_columns: tuple[str, ...]) -> pd.DataFrame:
    """A results CSV (sweep or accuracy) as a DataFrame, `text_columns` as '' (not NaN) where empty."""
    df = pd.read_csv(path, dtype=dict.fromkeys(text_columns, str))
    df[list(text_columns)] = df[list(text_columns)].fillna("")
    return df


def check_writable(folder: Path) -> None:
    """Make `folder` and write a scratch file in it; ValueError naming it if either fails.

    Called after every other input check, just before the first cell, so a bad --out is one
    line and exit 2 rather than a traceback after the work has started."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise ValueError(f"output folder {str(folder)!r} is not writable: {err.strerror or err}") from None


def write_run_json(run_dir: Path, config: Any, env: dict, cells: int, **extra: Any) -> None:
    """<run_dir>/run.json: the run's id, start time, resolved config (a dataclass), machine and
    cell count, plus `extra` fields; what `attnbench report` and `--resume` read back."""
    record = {
        "run_id": run_dir.name,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": dataclasses.asdict(config),
        "environment": env,
        "cells": cells,
        **extra,
    }
    (run_dir / "run.json").write_text(json.dumps(record, indent=2) + "\n")


def error_text(err: BaseException, limit: int = 500) -> str:
    """`Type: message`, cut at `limit` characters: the `error` of every row a failure writes.

    A Ray task error is named by the exception the worker raised (its `cause`): Ray's wrapper
    starts with a header (colours, pid, actor id, the remote traceback) that fills the limit
    before the message, and its length depends on the checkout's path."""
    cause = getattr(err, "cause", None)
    err = cause if isinstance(cause, BaseException) else err
    return f"{type(err).__name__}: {err}"[:limit]
