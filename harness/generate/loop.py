"""Greedy generation with per-layer KV caches, timed token by token; and its cache-free reference.

`generate` prefills a prompt of P tokens into fresh caches and takes the first token from its
last logits (time to first token), then decodes T - 1 more, one step each. Every step is timed
on its own with the harness's `timing.time_call` (CUDA events and a wait for the end event, or
`perf_counter_ns` on the CPU), and `wall_s` is a separate clock around the whole generation,
so `ttft_s + sum(step_s)` can be checked against it.
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

Step = Callable[[Tensor, list[av.KVCache]], Tensor]  # token (b, 1), caches -> next token (b, 1)


@dataclass
class Generation:
    """One timed generation: its tokens, caches and clocks."""

    tokens: Tensor  # (b, T) the generated tokens
    caches: list[av.KVCache]  # every layer's cache at the end: P + T - 1 tokens
    ttft_s: float  # prefill and the first token
    step_s: list[float]  # the T - 1 decode steps
    wall_s: float  # the whole generation, one clock
    # Each decode step's CPU time in this thread: on the CPU with one intra-op thread, the step's
    # work, which a busy machine's preemptions do not inflate (on CUDA, the host's launch work).
    step_cpu_s: list[float]


def greedy(logits: Tensor) -> Tensor:
    """logits (b, n, vocab) -> the argmax of the last position (b, 1)."""
    return logits[:, -1].argmax(dim=-1, keepdim=True)


def decode_step(model: Decoder) -> Step:
    """One token through the caches to the next token."""

    def step(token: Tensor, caches: list[av.KVCache]) -> Tensor:
        return greedy(model(token, caches, last=True))

    return step


def compiled_step(model: Decoder, mode: str, compiler: str = "inductor") -> Step:
    """`decode_step` under torch.compile(mode), the attention calls left eager: a KVCache's length
    is a Python int that grows every token, and dynamo recompiles on it at every step (measured:
    a graph per token, the recompile limit hit at the eighth). Embedding, norms, MLPs and head
    compile at the fixed shape (b, 1, d); mode "reduce-overhead" replays them as CUDA graphs.
    `compiler` is torch.compile's backend (tests use "aot_eager", which skips code generation)."""
    for block in model.blocks:
        if "attend" not in vars(block):  # once per model
            block.attend = torch.compiler.disable(block.attend, recursive=True)
    compiled = torch.compile(decode_step(model), mode=None if mode == "default" else mode, backend=compiler)

    def step(token: Tensor, caches: list[av.KVCache]) -> Tensor:
        # A CUDA graph's outputs are overwritten by its next replay; the generation keeps every
        # token, so each is copied out ((b, 1) integers), and each call starts a new graph step.
        torch.compiler.cudagraph_mark_step_begin()
        return compiled(token, caches).clone()

    return step


def generate(
    model: Decoder,
    prompt: Tensor,
    new_tokens: int,
    *,
    n_visual: int = 0,
    step: Step | None = None,
    layout: str = "padded",
    page_size: int = 16,
) -> Generation:
    """Prefill `prompt` (b, P) into fresh caches (`layout` padded or paged), then decode greedily
    with `step` (default: `decode_step`) until `new_tokens` tokens are generated."""
    if new_tokens < 1:
        raise ValueError(f"new_tokens={new_tokens} must be >= 1")
    device, caches = prompt.device, model.new_caches(layout, page_size)
    step = step or decode_step(model)
    out: list[Tensor] = []
    with torch.no_grad():
        start = time.perf_counter()
        ttft = timing.time_call(
            lambda: out.append(greedy(model(prompt, caches, n_visual, last=True))), device
        )
        steps, cpu = [], []
        for _ in range(new_tokens - 1):
            cpu_start = time.thread_time_ns()
            steps.append(timing.time_call(lambda: out.append(step(out[-1], caches)), device))
            cpu.append((time.thread_time_ns() - cpu_start) / 1e9)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall = time.perf_counter() - start
    return Generation(torch.cat(out, dim=1), caches, ttft, steps, wall, cpu)  # tokens (b, T)


def generate_uncached(model: Decoder, prompt: Tensor, new_tokens: int, *, n_visual: int = 0) -> Tensor:
    """The reference: each token from a full forward over everything so far, no cache; (b, T)."""
    seq = prompt
    with torch.no_grad():
        for _ in range(new_tokens):
            seq = torch.cat([seq, greedy(model(seq, None, n_visual))], dim=1)  # (b, P + t)
    return seq[:, prompt.shape[1] :]
