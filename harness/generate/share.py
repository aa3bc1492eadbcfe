"""Attention's share of a decode step, measured by synchronised timers around the attention calls.

Every layer's attention call is bracketed (`DecoderBlock.attend`): on the CPU by
`perf_counter_ns` (the CPU runs the ops in order, so the bracket holds exactly the call's work);
on CUDA by events recorded on the stream before and after the call, read after the step has
finished (the host waits for the step's end event; nothing inside the step waits).

The share is taken at a fixed context, the generation's last: every step starts from caches cut
back to that length (`KVCache.truncate`) and decodes the same token. Bracketed and plain steps
alternate, so `attn_step_ratio` (bracketed step / plain step, medians) says what the brackets
themselves cost: near 1, the share is the share of the step the generation ran.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor

import attn_variants as av

from .. import timing
from .decoder import Decoder
from .loop import Step

METHODS = {"cpu": "cpu_perf_counter_around_attention", "cuda": "cuda_event_around_attention"}


class AttentionTimer:
    """Sums the time of the attention calls between `reset()` and `total_s()`."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.spans: list[tuple] = []

    def reset(self) -> None:
        self.spans = []

    def start(self) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.spans.append((event,))
        else:
            self.spans.append((time.perf_counter_ns(),))

    def stop(self) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
        else:
            event = time.perf_counter_ns()
        self.spans[-1] = (self.spans[-1][0], event)

    def total_s(self) -> float:
        """Seconds inside attention calls since `reset` (the caller has waited for the step)."""
        if self.cuda:
            return sum(a.elapsed_time(b) for a, b in self.spans) / 1e3
        return sum(b - a for a, b in self.spans) / 1e9


@dataclass(frozen=True)
class Share:
    """Attention's share of a decode step at one context length."""

    attn_share: float  # median over bracketed steps of (attention seconds / step seconds)
    attn_s: float  # median attention seconds of a step (all layers)
    step_s: float  # median plain step seconds at the same context
    attn_step_ratio: float  # median bracketed step / median plain step: the brackets' cost
    method: str


def measure(model: Decoder, caches: list[av.KVCache], step: Step, token: Tensor, repeats: int) -> Share:
    """`repeats` bracketed and `repeats` plain decode steps, alternating, each from the caches as
    they are now (their length restored after every step); one untimed step first."""
    device, length = token.device, caches[0].length
    timer = AttentionTimer(device)

    def one() -> None:
        for cache in caches:
            cache.truncate(length)
        with torch.no_grad():
            step(token, caches)

    one()  # the caches' buffers may double here, not inside a timed step
    plain, bracketed, attn = [], [], []
    for _ in range(repeats):
        plain.append(timing.time_call(one, device))
        model.set_timer(timer)
        timer.reset()
        try:
            bracketed.append(timing.time_call(one, device))
        finally:
            model.set_timer(None)
        attn.append(timer.total_s())
    for cache in caches:
        cache.truncate(length)
    shares = [a / s for a, s in zip(attn, bracketed, strict=True)]
    median = timing.summarize
    return Share(
        attn_share=median(shares).median,
        attn_s=median(attn).median,
        step_s=median(plain).median,
        attn_step_ratio=median(bracketed).median / median(plain).median,
        method=METHODS[device.type],
    )
