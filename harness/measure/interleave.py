"""Side-by-side timing: several callables measured interleaved, round by round, in one process.

Shared machines drift (other jobs, clocks, thermals); timing A then B lets drift pose as a
difference. Interleaving puts every candidate in every round, so a ratio per round cancels
most of the drift. Used by the regression check and the benchmarks ratio scripts.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping

import torch

from .timing import Summary, summarize, time_call


def interleaved(
    fns: Mapping[str, Callable[[], object]],
    device: torch.device | str = "cpu",
    *,
    rounds: int = 20,
    warmup: int = 3,
    min_sample_s: float = 0.0,
    flush: Callable[[], None] | None = None,
) -> dict[str, list[float]]:
    """Seconds per call of each fn: `rounds` rounds, each fn sampled once per round.

    The order rotates by one each round, so every fn runs first (and in every other position)
    equally often and none always runs in another's wake (caches, clock ramps, allocator); with
    two fns the order alternates. With `min_sample_s` > 0 a sample is `calls_for` calls in a
    row, divided by that count (tiny shapes: one call is near the timer's own noise).

    On CUDA a sample is always one synchronised call, as in the sweep (`min_sample_s` is
    ignored): back-to-back calls between one pair of events would let the host launch the next
    call while the GPU runs this one, timing throughput rather than the sweep's latency.
    `flush` (timing.L2Flush) runs before each timed call, outside the events.
    """
    device = torch.device(device)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    names = list(fns)
    repeat = min_sample_s > 0 and device.type != "cuda"
    calls = {name: calls_for(fns[name], device, min_sample_s) if repeat else 1 for name in names}
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn = functools.partial(_repeat, fns[name], calls[name])
            samples[name].append(time_call(fn, device, flush) / calls[name])
    return samples


def ratios(samples: Mapping[str, list[float]], reference: str) -> dict[str, Summary]:
    """Per-round time ratio of every candidate to `reference`, summarised."""
    ref = samples[reference]
    return {name: summarize([a / b for a, b in zip(s, ref, strict=True)]) for name, s in samples.items()}


def print_table(samples: Mapping[str, list[float]], reference: str, title: str = "") -> None:
    """A plain table: median ms, p10-p90, and median per-round ratio to `reference`."""
    rel = ratios(samples, reference)
    if title:
        print(title)
    print(f"{'candidate':<28}{'median ms':>12}{'p10-p90 ms':>20}{'ratio vs ' + reference:>22}")
    for name, s in samples.items():
        t = summarize(s)
        spread = f"{t.p10 * 1e3:.2f}-{t.p90 * 1e3:.2f}"
        r = rel[name]
        print(f"{name:<28}{t.median * 1e3:>12.2f}{spread:>20}{r.median:>12.3f} [{r.p10:.2f},{r.p90:.2f}]")


def calls_for(fn: Callable[[], object], device: torch.device, min_sample_s: float) -> int:
    """How many back-to-back calls of `fn` make one sample of at least `min_sample_s` seconds
    (tiny shapes: one call is a few microseconds, near the timer's and Python's own noise)."""
    once = min(time_call(fn, device) for _ in range(3))
    return max(1, math.ceil(min_sample_s / max(once, 1e-9)))


def _repeat(fn: Callable[[], object], k: int) -> None:
    for _ in range(k):
        fn()
