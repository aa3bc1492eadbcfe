"""Side-by-side timing: several callables measured interleaved, round by round, in one process.

Shared machines drift (other jobs, clocks, thermals); timing A then B lets drift pose as a
difference. Interleaving puts every candidate in every round, so a ratio per round cancels
most of the drift. Used by the regression check and the tests/bench ratio scripts.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping

import torch

from .timing import Summary, summarize, time_call


def interleaved(
    fns: Mapping[str, Callable[[], object]],
    device: torch.device | str = "cpu",
    *,
    rounds: int = 20,
    warmup: int = 3,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Seconds per call of each fn: `rounds` rounds, each fn once per round in shuffled order."""
    device = torch.device(device)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    order = list(fns)
    rng = random.Random(seed)
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        rng.shuffle(order)  # no candidate always runs first (cache, turbo and allocator effects)
        for name in order:
            samples[name].append(time_call(fns[name], device))
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
