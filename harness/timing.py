"""Honest timing primitives: warm-up, device synchronisation, every sample kept.

On CUDA, CUDA events bracket the call and the host waits for the end event; on CPU,
`time.perf_counter_ns` around the call, with the thread count fixed by the caller.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

# Median and p10/p90 of samples: one definition, shared with reports/ (reports.stats imports no torch).
from reports.stats import Summary, summarize

__all__ = ["Summary", "sample", "summarize", "threads", "time_call"]


def time_call(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds one call of `fn` takes on `device` (synchronised)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - t0) / 1e9


def sample(fn: Callable[[], object], device: torch.device, *, warmup: int, repeats: int) -> list[float]:
    """`warmup` untimed calls, then `repeats` timed ones; every sample in seconds."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats={repeats} must be >= 1 and warmup={warmup} >= 0")
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return [time_call(fn, device) for _ in range(repeats)]


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
