"""Honest timing primitives: warm-up, device synchronisation, every sample kept.

On CUDA, CUDA events bracket one call and the host waits for the end event (optionally after
an L2 flush, or replaying a CUDA graph of the call); on CPU, `time.perf_counter_ns` around the
call, with the thread count fixed by the caller.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

# Median and p10/p90 of samples: one definition, shared with reports/ (reports.stats imports no torch).
from reports.stats import Summary, summarize

__all__ = [
    "CPU_TIMING", "L2Flush", "Summary", "cuda_graph", "method_name", "sample", "summarize", "threads",
    "time_call",
]  # fmt: skip


# triton.testing.do_bench's practice: before each timed call, write a buffer larger than the
# L2 cache (50 MB on H100 and H200), so the call reads its inputs from HBM as it would inside a
# model, not from the cache the previous call of the same step left warm.
L2_FLUSH_BYTES = 256 * 2**20
CPU_TIMING = "cpu_perf_counter"  # on CPU the L2 flush and the CUDA graph are no-ops


def method_name(device: torch.device, *, l2_flush: bool, cuda_graph: bool) -> str:
    """The `timing` column: how the samples were taken. Every method times one call per sample,
    the host waiting for it (latency, not the throughput of back-to-back calls)."""
    if device.type != "cuda":
        return CPU_TIMING
    return "+".join(["cuda_graph" if cuda_graph else "cuda_event"] + (["l2_flush"] if l2_flush else []))


class L2Flush:
    """Zeroes a 256 MiB buffer on the device, outside the timed events; a no-op on CPU."""

    def __init__(self, device: torch.device, enabled: bool = True) -> None:
        on = enabled and device.type == "cuda"
        self.buffer = torch.empty(L2_FLUSH_BYTES // 4, dtype=torch.int32, device=device) if on else None

    def __call__(self) -> None:
        if self.buffer is not None:
            self.buffer.zero_()


def time_call(
    fn: Callable[[], object], device: torch.device, flush: Callable[[], None] | None = None
) -> float:
    """Seconds one call of `fn` takes on `device` (synchronised); `flush` runs before the
    start event, so it is not timed but the call starts with a cold L2."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        if flush is not None:
            flush()
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - t0) / 1e9


def warm_up(fn: Callable[[], object], device: torch.device, *, calls: int, seconds: float) -> int:
    """Untimed calls of `fn` until at least `calls` were made and at least `seconds` have passed
    (wall time, synchronised); the number of calls made. A 0.1 ms decode step needs hundreds of
    calls before its caches, allocator and branch predictors settle: over runs of 100 repeats
    the first 20 samples of decode cells ran 1.08x slower on average than the last 20 after a
    fixed 3-call warm-up, while 3 calls of a 50 ms prefill are 150 ms of warm-up."""
    if calls < 0 or seconds < 0:
        raise ValueError(f"warm-up calls={calls} and seconds={seconds} must be >= 0")
    made, start = 0, time.perf_counter()
    while made < calls or time.perf_counter() - start < seconds:
        fn()
        made += 1
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return made


def sample(
    fn: Callable[[], object],
    device: torch.device,
    *,
    warmup: int,
    repeats: int,
    flush: Callable[[], None] | None = None,
) -> list[float]:
    """`warmup` untimed calls, then `repeats` timed ones; every sample in seconds."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats={repeats} must be >= 1 and warmup={warmup} >= 0")
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return [time_call(fn, device, flush) for _ in range(repeats)]


def cuda_graph(fn: Callable[[], object], device: torch.device, warmup: int = 3) -> Callable[[], None]:
    """`fn` captured once into a CUDA graph; the returned callable replays it.

    The documented pattern (torch.cuda.graphs): warm up on a side stream so lazy
    initialisation (cuBLAS handles, autotuning) happens outside the capture, then capture.
    A step that syncs with the host or changes shapes between calls cannot be captured
    (torch raises); the caller falls back to eager timing and says so."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


@contextmanager
def threads(n: int) -> Iterator[None]:
    """torch's intra-op thread count fixed to `n` for a block (0 keeps torch's default), then
    restored: the sweep, the accuracy runs and the check all time with a fixed count."""
    previous = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
