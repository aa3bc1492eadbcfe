"""Attention's share of a decode step, measured by timers around the attention calls.

Every layer's attention call is bracketed (`DecoderBlock.attend`):
- on CUDA by events recorded on the stream before and after the call, read after the step has
  finished (the host waits for the step's end event; nothing inside the step waits);
- on the CPU with one intra-op thread by the calling thread's CPU time (`time.thread_time_ns`):
  every operation runs in that thread, so its CPU time is the step's work, and a shared machine
  that preempts the thread mid-step does not count against whichever call was running (on a
  busy 2-core box the wall-clock share of one gqa cell ranged 0.10-0.82 over 20 steps, the CPU
  time share 0.31-0.40);
- on the CPU with more threads by `perf_counter_ns` (wall time: worker threads' CPU time is not
  the calling thread's).

The share is taken at a fixed context, the generation's last: every step starts from caches cut
back to that length (`KVCache.truncate`) and decodes the same token. Bracketed and plain steps
alternate, so `attn_step_ratio` (bracketed step / plain step, medians) says what the brackets
themselves cost: near 1, the share is the share of the step the generation ran.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

import attn_variants as av

from ..measure import timing
from .decoder import Decoder
from .loop import Step

CUDA_EVENTS = "cuda_event_around_attention"
THREAD_TIME = "cpu_thread_time_around_attention"
WALL_TIME = "cpu_perf_counter_around_attention"


def method(device: torch.device) -> str:
    """How attention is timed on `device` with the current thread count (the module doc says why)."""
    if device.type == "cuda":
        return CUDA_EVENTS
    return THREAD_TIME if torch.get_num_threads() == 1 else WALL_TIME


class AttentionTimer:
    """Sums the time of the attention calls between `reset()` and `total_s()`."""

    def __init__(self, how: str) -> None:
        self.cuda = how == CUDA_EVENTS
        self.clock: Callable[[], int] = time.thread_time_ns if how == THREAD_TIME else time.perf_counter_ns
        self.spans: list[list] = []

    def reset(self) -> None:
        self.spans = []

    def mark(self) -> object:
        if not self.cuda:
            return self.clock()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def start(self) -> None:
        self.spans.append([self.mark()])

    def stop(self) -> None:
        self.spans[-1].append(self.mark())

    def total_s(self) -> float:
        """Seconds inside attention calls since `reset` (the caller has waited for the step)."""
        if self.cuda:
            return sum(a.elapsed_time(b) for a, b in self.spans) / 1e3
        return sum(b - a for a, b in self.spans) / 1e9

    def time_step(self, fn: Callable[[], object], device: torch.device) -> float:
        """Seconds of one call of `fn` on this timer's clock (CUDA: events, synchronised)."""
        if self.cuda:
            return timing.time_call(fn, device)
        start = self.clock()
        fn()
        return (self.clock() - start) / 1e9


@dataclass(frozen=True)
class Share:
    """Attention's share of a decode step at one context length."""

    attn_share: float  # median over bracketed steps of (attention seconds / step seconds)
    attn_s: float  # median attention seconds of a step (all layers)
    step_s: float  # median plain step seconds at the same context, on the same clock
    attn_step_ratio: float  # median bracketed step / median plain step: the brackets' cost
    method: str


def measure(model: Decoder, caches: list[av.KVCache], step: Step, token: Tensor, repeats: int) -> Share:
    """`repeats` bracketed and `repeats` plain decode steps, alternating, each from the caches as
    they are now (their length restored after every step); one untimed step first."""
    device, length = token.device, caches[0].length
    timer = AttentionTimer(method(device))

    def one() -> None:
        for cache in caches:
            cache.truncate(length)
        with torch.no_grad():
            step(token, caches)

    one()  # the caches' buffers may double here, not inside a timed step
    plain, bracketed, attn = [], [], []
    for _ in range(repeats):
        plain.append(timer.time_step(one, device))
        model.set_timer(timer)
        timer.reset()
        try:
            bracketed.append(timer.time_step(one, device))
        finally:
            model.set_timer(None)
        attn.append(timer.total_s())
    for cache in caches:
        cache.truncate(length)
    median = lambda xs: timing.summarize(xs).median  # noqa: E731
    return Share(
        attn_share=median([a / s for a, s in zip(attn, bracketed, strict=True)]),
        attn_s=median(attn),
        step_s=median(plain),
        attn_step_ratio=median(bracketed) / median(plain),
        method=method(device),
    )
