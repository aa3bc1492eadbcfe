"""One measurable step of a variant: a forward, a training step, or one decode step.

Shared by the sweep, the regression check and the pytest-benchmark suite, so all three
time exactly the same thing.

Kernels and compilation are axes here: the variant's `backend` option picks the kernel
(attn_variants/backends.py) and `compile` ("off", "default", "max-autotune") wraps the module
in `torch.compile(mode=..., fullgraph=True)`. Set-up never lands in a timed call: `build`
runs one eager call first (it builds FlexAttention's block masks: `setup_s`), then the first
compiled call (its wall time is `compile_s`); `graphs_since_build()` counts graphs dynamo
compiled afterwards, i.e. recompiles.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch._subclasses.fake_tensor import FakeTensor

import attn_variants as av
from attn_variants import backends
from attn_variants.flex import MASKS
from attn_variants.registry import MODES

COMPILE_MODES = ("off", "default", "max-autotune")
Step = Callable[[], object]
LAYOUTS = ("prefix", "interleaved")  # where a multimodal workload's image tokens sit


class UnsupportedMode(ValueError):
    """The variant's registry entry does not list this mode."""


@dataclass
class Workload:
    """`step()` runs one timed unit of work; everything else was set up beforehand."""

    module: nn.Module
    spec: av.AttnSpec  # the spec the variant runs with (presets resolved)
    step: Step  # compiled when `compile` is not "off"
    kv_cache_bytes: int  # analytic b*n*(cache elements per token)*itemsize; GQA family: 2*b*g*n*e*itemsize
    eager_step: Step | None = None  # the same step uncompiled (FLOP counting); None: `step` is
    compile: str = "off"
    compile_s: float | None = None  # wall seconds of the first compiled call (None: not compiled)
    setup_s: float = 0.0  # seconds spent building block masks (flex) for this step
    graphs: int = 0  # dynamo's graph count right after the first compiled call
    # Drops what the previous call left behind that the next call replaces (fwd_bwd: the
    # gradients), so a memory baseline taken after it counts them in the call's peak.
    reset: Callable[[], None] = lambda: None
    cache: av.KVCache | None = None  # decode: the step's cache
    kv_bytes: tuple[int, int] | None = None  # decode: the cache's bytes needed and held, at prefill

    @property
    def uncompiled(self) -> Step:
        """The step without torch.compile, e.g. for FLOP counting."""
        return self.eager_step or self.step

    def graphs_since_build(self) -> int:
        """Graphs dynamo compiled since the first compiled call: recompiles (0 when off)."""
        return dynamo_graphs() - self.graphs if self.compile != "off" else 0


def dynamo_graphs() -> int:
    """torch._dynamo's count of graphs compiled in this process (`unique_graphs`)."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def build(
    variant: str,
    spec: av.AttnSpec,
    mode: str,
    *,
    batch: int,
    seq_len: int,
    n_visual: int = 0,
    layout: str = "prefix",
    images: int = 1,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    options: Mapping[str, Any] | None = None,
    seed: int = 0,
    compile: str = "off",
    compiler: str | Callable = "inductor",
    serving: Serving | None = None,
) -> Workload:
    """Build variant `variant` and inputs for `mode` (fwd, fwd_bwd or decode).

    `compile`: "off", or a `torch.compile` mode ("default", "max-autotune"), always with
    fullgraph=True: a graph break is an error, not a silently slower cell. `compiler` is
    torch.compile's backend (the tests capture graphs with "aot_eager", which skips codegen).
    A backend the device cannot run raises UnsupportedMode saying why.

    n_visual image tokens sit as `layout` says: "prefix", one image first (n_visual=m);
    "interleaved", `images` images between text (`modality_ids`), as in multi-image chat.

    `serving` (decode): each request's own cache length, the cache layout and the query tokens
    per step; None is b requests at seq_len, padded, one token."""
    entry = av.info(variant)
    _check_mode(variant, mode, entry.modes, compile)
    if batch <= 0 or seq_len <= 0:
        raise ValueError(f"batch={batch} and seq_len={seq_len} must be positive")
    device = torch.device(device)
    options = dict(options or {})
    why = backends.unsupported(str(options.get("backend", entry.options["backend"])), device, mode)
    if why:
        raise UnsupportedMode(why)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    torch.manual_seed(seed)  # parameter init
    with device:  # initialise the weights where they will live: d = 4096 on the CPU takes seconds
        module = to(av.create(variant, spec, **options), device, dtype)
    resolved = entry.resolve(spec)  # what the module was built with (a plugin need not keep `.spec`)
    serving = serving or Serving()
    decode = functools.partial(_decode, serving=serving, seed=seed)
    make = {"fwd": _forward, "fwd_bwd": _forward_backward, "decode": decode}[mode]
    x = randn((batch, seq_len, spec.dim), gen, device, dtype)  # (b, n, d)
    layout_kw = layout_inputs(batch, seq_len, n_visual, layout, images, device)
    kv_bytes = entry.kv_cache_bytes(resolved, options, batch, seq_len, dtype)
    if "modality" in layout_kw:  # an interleaved cache also holds each token's modality id (b, n)
        kv_bytes += batch * seq_len * layout_kw["modality"].element_size()
    masks_before, inputs = MASKS.seconds, gen.get_state()
    eager_step = make(module, module, x, layout_kw, gen)
    backend = options.get("backend", entry.options["backend"])
    cache = {"cache": getattr(eager_step, "cache", None), "kv_bytes": getattr(eager_step, "kv_bytes", None)}
    if compile == "off" and backend != "flex":
        return Workload(module, resolved, eager_step, kv_bytes, reset=_reset(eager_step), **cache)
    eager_step()  # block masks come from an untimed eager call, never from a timed one or a graph
    setup_s = MASKS.seconds - masks_before
    if compile == "off":
        return Workload(
            module, resolved, eager_step, kv_bytes, setup_s=setup_s, reset=_reset(eager_step), **cache
        )
    torch._dynamo.reset()  # each cell compiles afresh: no cache-size limit reached over a sweep
    mode_arg = None if compile == "default" else compile
    compiled = torch.compile(module, mode=mode_arg, fullgraph=True, backend=compiler)
    gen.set_state(inputs)  # the same decode token / upstream gradient as the eager step
    step = make(module, compiled, x, layout_kw, gen)
    start = time.perf_counter()
    step()  # the first compiled call: tracing, compilation and one run
    _sync(device)
    compile_s = time.perf_counter() - start
    return Workload(
        module,
        resolved,
        step,
        kv_bytes,
        eager_step,
        compile,
        compile_s,
        setup_s,
        dynamo_graphs(),
        reset=_reset(step),
        cache=getattr(step, "cache", None),
        kv_bytes=getattr(step, "kv_bytes", None),
    )


def _reset(step: Step) -> Callable[[], None]:
    """The step's reset (fwd_bwd: drop its gradients), or nothing to do."""
    return getattr(step, "reset", lambda: None)


def randn(shape: tuple[int, ...], gen: torch.Generator, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Seeded normal values drawn on the CPU (the same on every device), then moved; on the meta
    device or under FakeTensorMode (harness/measure/flops.py) no values are drawn: at n = 16k, d = 4096
    drawing them takes the CPU about a second, for tensors that hold no data."""
    if device.type == "meta" or isinstance(torch.empty(0), FakeTensor):
        return torch.empty(shape, device=device, dtype=dtype)
    return torch.randn(shape, generator=gen).to(device=device, dtype=dtype)


def to(module: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """`module.to(device, dtype)`; under FakeTensorMode (harness/measure/flops.py) each parameter and
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


def _check_mode(variant: str, mode: str, modes: tuple[str, ...], compile: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid modes: {list(MODES)}")
    if compile not in COMPILE_MODES:
        raise ValueError(f"compile={compile!r} is not one of {list(COMPILE_MODES)}")
    if mode not in modes:
        raise UnsupportedMode(
            f"variant {variant!r} does not support mode {mode!r}; it supports {list(modes)}"
        )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def layout_inputs(
    batch: int, seq_len: int, n_visual: int, layout: str, images: int, device: torch.device | str = "cpu"
) -> dict[str, Any]:
    """The layout keyword of a forward call: {"n_visual": m} or {"modality": ids (b, n)}."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; valid layouts: {list(LAYOUTS)}")
    if layout == "prefix" or n_visual == 0:
        return {"n_visual": n_visual}
    return {"modality": modality_ids(batch, seq_len, n_visual, images).to(device)}


def modality_ids(batch: int, seq_len: int, n_visual: int, images: int) -> torch.Tensor:
    """(b, n) ids [text_0, image 1, text_1, ..., image k, text_k]: n_visual image tokens in
    `images` images of near-equal size, the text split near-equally into the k + 1 gaps."""
    if not 1 <= images <= n_visual:
        raise ValueError(f"images={images} must be in [1, n_visual={n_visual}] (an image has >= 1 token)")
    sizes, gaps = _split(n_visual, images), _split(seq_len - n_visual, images + 1)
    ids = [0] * gaps[0]
    for k, (size, gap) in enumerate(zip(sizes, gaps[1:], strict=True), start=1):
        ids += [k] * size + [0] * gap
    return torch.tensor(ids).expand(batch, seq_len)  # (b, n)


def _split(total: int, parts: int) -> list[int]:
    """`total` as `parts` near-equal counts, the larger first."""
    return [total // parts + (i < total % parts) for i in range(parts)]


def _forward(
    module: nn.Module, run: Callable, x: torch.Tensor, layout_kw: dict, gen: torch.Generator
) -> Step:
    """`run` is the module or its compiled wrapper; `module` is the module itself."""
    module.eval()

    def step() -> object:
        with torch.no_grad():
            return run(x, **layout_kw)

    return step


def _forward_backward(
    module: nn.Module, run: Callable, x: torch.Tensor, layout_kw: dict, gen: torch.Generator
) -> Step:
    module.train()
    x = x.detach().requires_grad_(True)
    grad = randn(x.shape, gen, x.device, x.dtype)  # a random upstream gradient (b, n, d)

    def reset() -> None:
        module.zero_grad(set_to_none=True)
        x.grad = None

    def step() -> object:
        reset()
        run(x, **layout_kw).backward(grad)
        return x.grad

    step.reset = reset  # type: ignore[attr-defined]  (Workload.reset)
    return step


@dataclass(frozen=True)
class Serving:
    """How a decode cell serves its b requests: `lengths`, each request's cache length (None:
    every one at seq_len); the KV cache `kv_layout` ("padded" or "paged", pages of
    `page_size` tokens, handed out in an order seeded by the cell's seed); `q_len` query
    tokens per request per step (> 1: speculative decode, each request's tokens causal)."""

    lengths: tuple[int, ...] | None = None
    kv_layout: str = "padded"
    page_size: int = 16
    q_len: int = 1


def _decode(
    module: nn.Module,
    run: Callable,
    x: torch.Tensor,
    layout_kw: dict,
    gen: torch.Generator,
    *,
    serving: Serving = Serving(),
    seed: int = 0,
) -> Step:
    """Fill a cache with all n tokens (untimed, uncompiled; `KVCache.fill` skips the prompt's
    attention, whose output nobody reads), cut each request to its own length, then grow the
    cache's buffers (and pages) with one untimed eager step; each step decodes `q_len` more text
    tokens per request with `run`. x (b, n, d) is the padded prompt, n the longest request."""
    module.eval()
    cache = av.KVCache(layout=serving.kv_layout, page_size=serving.page_size, seed=seed)
    b, _, d = x.shape
    x_next = randn((b, serving.q_len, d), gen, x.device, x.dtype)  # (b, q, d)
    with torch.no_grad():
        cache.fill(module, x, **layout_kw)  # the cache as a forward leaves it, no n^2 attention
        prefill = list(serving.lengths) if serving.lengths is not None else cache.length
        cache.truncate(prefill)  # a ragged batch: each request keeps its own first tokens
        module(x_next, cache=cache)  # the buffers double here, not inside the first timed step
        cache.truncate(prefill)

    def step() -> object:
        cache.truncate(prefill)  # every step starts from the same cache
        with torch.no_grad():
            return run(x_next, cache=cache)

    step.cache = cache  # type: ignore[attr-defined]  (Workload.cache: bytes needed and held)
    step.kv_bytes = (cache.nbytes_needed, cache.nbytes)  # type: ignore[attr-defined]  at prefill
    return step
