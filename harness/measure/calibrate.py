"""`attnbench calibrate`: this machine's achievable peaks, the roof of the roofline.

- `peak_flops`: dense matmul FLOP/s, the best of repeated (k x k) @ (k x k) products in the
  sweep's dtype (2 k^3 FLOPs each);
- `peak_bytes_per_s`: memory bandwidth, the best of repeated copies of a buffer far larger than
  the last-level cache (read + write: 2 x its size per copy).

Measured, never looked up from a datasheet: a row's `flops_util` and `bw_util` say how close a
cell came to what this machine actually does. The best sample is the roof, so a measured cell
cannot exceed it by more than noise. Results are cached per device name, dtype (and on CPU
thread count) in the user's cache folder: $ATTNBENCH_CACHE_DIR, else $XDG_CACHE_HOME/attnbench,
else ~/.cache/attnbench.

Each calibration records the 1-minute load average it was taken under. A roof measured while
the machine was busier than it is now by a core or more is too low (eight jobs on two cores
cached a CPU roof 6x under the quiet one), so `get` takes it again and keeps, per peak, the
better of the two: the roof is the best the machine has shown.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import torch

from .. import measure
from . import timing

# Sizes: a k x k matmul near the device's peak, a copy well beyond its caches.
MATMUL_K = {"cuda": 8192, "cpu": 1024}
COPY_BYTES = {"cuda": 2**30, "cpu": 2**27}
MIN_SECONDS = 0.25  # keep sampling each measurement until this much time was timed
MAX_SAMPLES = 50


@dataclass(frozen=True)
class Calibration:
    device_name: str
    dtype: str
    threads: int  # torch threads on CPU; 0 on CUDA (not a factor there)
    peak_flops: float  # FLOP/s
    peak_bytes_per_s: float
    matmul_k: int
    copy_bytes: int
    torch_version: str
    measured: str  # ISO 8601, when
    load_avg: float = -1.0  # the host's 1-minute load average then; -1: unknown (older caches)


def cache_dir() -> Path:
    """Where calibrations are kept (see the module doc)."""
    if os.environ.get("ATTNBENCH_CACHE_DIR"):
        return Path(os.environ["ATTNBENCH_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "attnbench"


def key(device_name: str, dtype: str, threads: int) -> str:
    return f"{device_name} | {dtype} | threads={threads}"


_SEEN: dict[tuple[str, str], Calibration] = {}  # this process's, so a sweep reads the file once


def get(device: torch.device, dtype: str, *, refresh: bool = False) -> Calibration:
    """The cached calibration for this device and dtype, measured and cached on first use."""
    threads = torch.get_num_threads() if device.type == "cpu" else 0
    path = cache_dir() / "calibration.json"
    seen = (str(path), f"{device} | {dtype} | {threads}")
    if seen in _SEEN and not refresh:
        return _SEEN[seen]
    name = measure.host_environment(device)["device_name"]
    cached = _read(path)
    k = key(str(name), dtype, threads)
    old = Calibration(**cached[k]) if k in cached else None
    if old is not None and not refresh and not taken_under_load(old):
        _SEEN[seen] = old
        return old
    result = measure_peaks(device, dtype, str(name), threads)
    if old is not None and not refresh:  # retaken on a quieter machine: the best of both
        result = best_of(old, result)
    cached[k] = asdict(result)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cached, indent=2) + "\n")
    _SEEN[seen] = result
    return result


def load_avg() -> float:
    """The host's 1-minute load average; -1 where the OS has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return -1.0


def taken_under_load(c: Calibration) -> bool:
    """Measured while the machine was busier than now by at least one core's worth of work."""
    now = load_avg()
    return c.load_avg >= 0 and now >= 0 and c.load_avg - now >= 1.0


def best_of(old: Calibration, new: Calibration) -> Calibration:
    """`new`, with each peak the higher of the two (the roof is the best sample seen)."""
    return replace(
        new,
        peak_flops=max(old.peak_flops, new.peak_flops),
        peak_bytes_per_s=max(old.peak_bytes_per_s, new.peak_bytes_per_s),
    )


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # no cache yet, or a corrupt one: measure again


def measure_peaks(device: torch.device, dtype: str, device_name: str, threads: int) -> Calibration:
    """Time the matmul and the copy on `device` now."""
    load = load_avg()  # before this measurement's own work adds to it
    k, n_bytes = MATMUL_K[device.type], COPY_BYTES[device.type]
    dt = measure.DTYPES[dtype]
    x, y = torch.randn(k, k, device=device).to(dt), torch.randn(k, k, device=device).to(dt)
    matmul_s = _best(lambda: x @ y, device)
    src = torch.empty(n_bytes // 4, dtype=torch.int32, device=device).fill_(1)
    dst = torch.empty_like(src)
    copy_s = _best(lambda: dst.copy_(src), device)
    return Calibration(
        device_name=device_name,
        dtype=dtype,
        threads=threads,
        peak_flops=2 * k**3 / matmul_s,
        peak_bytes_per_s=2 * n_bytes / copy_s,
        matmul_k=k,
        copy_bytes=n_bytes,
        torch_version=torch.__version__,
        measured=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        load_avg=load,
    )


def _best(fn: object, device: torch.device) -> float:
    """The fastest of repeated single calls (after 2 warm-ups), until MIN_SECONDS were timed."""
    samples = timing.sample(fn, device, warmup=2, repeats=3)  # type: ignore[arg-type]
    start = time.perf_counter()
    while sum(samples) < MIN_SECONDS and len(samples) < MAX_SAMPLES and time.perf_counter() - start < 5:
        samples += timing.sample(fn, device, warmup=0, repeats=3)  # type: ignore[arg-type]
    return min(samples)
