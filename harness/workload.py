"""One measurable step of a variant: a forward, a training step, or one decode step.

Shared by the sweep, the regression check and the pytest-benchmark suite, so all three
time exactly the same thing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch._subclasses.fake_tensor import FakeTensor

import attn_variants as av
from attn_variants.registry import MODES


class UnsupportedMode(ValueError):
    """The variant's registry entry does not list this mode."""


@dataclass
class Workload:
    """`step()` runs one timed unit of work; everything else was set up beforehand."""

    module: nn.Module
    spec: av.AttnSpec  # the spec the variant runs with (presets resolved)
    step: Callable[[], object]
    kv_cache_bytes: int  # analytic 2*b*g*n*e*itemsize at this shape
    # Drops what the previous call left behind that the next call replaces (fwd_bwd: the
    # gradients), so a memory baseline taken after it counts them in the call's peak.
    reset: Callable[[], None] = lambda: None


def build(
    variant: str,
    spec: av.AttnSpec,
    mode: str,
    *,
    batch: int,
    seq_len: int,
    n_visual: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    options: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> Workload:
    """Build variant `variant` and inputs for `mode` (fwd, fwd_bwd or decode)."""
    entry = av.info(variant)
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid modes: {list(MODES)}")
    if mode not in entry.modes:
        raise UnsupportedMode(
            f"variant {variant!r} does not support mode {mode!r}; it supports {list(entry.modes)}"
        )
    if batch <= 0 or seq_len <= 0:
        raise ValueError(f"batch={batch} and seq_len={seq_len} must be positive")
    device = torch.device(device)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    torch.manual_seed(seed)  # parameter init
    with device:  # initialise the weights where they will live: d = 4096 on the CPU takes seconds
        module = to(av.create(variant, spec, **(options or {})), device, dtype)
    resolved = module.spec
    make = {"fwd": _forward, "fwd_bwd": _forward_backward, "decode": _decode}[mode]
    x = randn((batch, seq_len, spec.dim), gen, device, dtype)  # (b, n, d)
    made = make(module, x, n_visual, gen)
    step, reset = made if isinstance(made, tuple) else (made, lambda: None)
    kv_bytes = av.KVCache.bytes_for(batch, resolved.n_kv_heads, seq_len, resolved.head_dim, dtype)
    return Workload(module, resolved, step, kv_bytes, reset)


def randn(shape: tuple[int, ...], gen: torch.Generator, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Seeded normal values drawn on the CPU (the same on every device), then moved; on the meta
    device or under FakeTensorMode (harness/flops.py) no values are drawn: at n = 16k, d = 4096
    drawing them takes the CPU about a second, for tensors that hold no data."""
    if device.type == "meta" or isinstance(torch.empty(0), FakeTensor):
        return torch.empty(shape, device=device, dtype=dtype)
    return torch.randn(shape, generator=gen).to(device=device, dtype=dtype)


def to(module: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """`module.to(device, dtype)`; under FakeTensorMode (harness/flops.py) each parameter and
    buffer is replaced instead, since `nn.Module._apply` swaps fake parameters in place and the
    swap fails when the fake tensor has a weak reference (it does, at random)."""
    if not isinstance(torch.empty(0), FakeTensor):
        return module.to(device=device, dtype=dtype)
    for mod in module.modules():
        for slots in (mod._parameters, mod._buffers):
            for name, t in slots.items():
                if t is None:
                    continue
                moved = t.to(device=device, dtype=dtype if t.is_floating_point() else t.dtype)
                slots[name] = nn.Parameter(moved, t.requires_grad) if isinstance(t, nn.Parameter) else moved
    return module


def _forward(module: nn.Module, x: torch.Tensor, n_visual: int, gen: torch.Generator) -> Callable[[], object]:
    module.eval()

    def step() -> object:
        with torch.no_grad():
            return module(x, n_visual=n_visual)

    return step


def _forward_backward(
    module: nn.Module, x: torch.Tensor, n_visual: int, gen: torch.Generator
) -> tuple[Callable[[], object], Callable[[], None]]:
    """The step and its reset: the gradients the last step left, dropped."""
    module.train()
    x = x.detach().requires_grad_(True)
    grad = randn(x.shape, gen, x.device, x.dtype)  # a random upstream gradient (b, n, d)

    def reset() -> None:
        module.zero_grad(set_to_none=True)
        x.grad = None

    def step() -> object:
        reset()
        module(x, n_visual=n_visual).backward(grad)
        return x.grad

    return step, reset


def _decode(module: nn.Module, x: torch.Tensor, n_visual: int, gen: torch.Generator) -> Callable[[], object]:
    """Prefill a cache with all n tokens (untimed); each step decodes one more text token."""
    module.eval()
    cache = av.KVCache()
    x_next = randn((x.shape[0], 1, x.shape[2]), gen, x.device, x.dtype)  # (b, 1, d)
    with torch.no_grad():
        module(x, n_visual=n_visual, cache=cache)
    prefill = cache.length

    def step() -> object:
        cache.truncate(prefill)  # every step starts from the same cache of length n
        with torch.no_grad():
            return module(x_next, cache=cache)

    return step
