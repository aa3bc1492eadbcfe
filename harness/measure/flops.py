"""FLOPs and a peak-memory estimate from tensors without data: nothing of size n^2 exists.

The step is built and run on the `meta` device (FLOPs) or under
`torch._subclasses.fake_tensor.FakeTensorMode` (memory): every tensor has its shape and dtype
but no data, so the FLOP count of a b*h*n^2 score matrix costs nothing (the real-tensor count
ran the math SDPA kernel and materialised it; issue 13).

- `flops`: `torch.utils.flop_counter.FlopCounterMode` under the math SDPA backend, the count
  the real-tensor pass gave (tests/harness/measure/test_flops.py checks they are equal). Its
  convention: causal attention counted as if full (all n*s scores).
- `flops_effective`: `flops` with each attention call's full count replaced by the pairs a
  causal kernel must compute. Attention calls are recorded where every variant makes them,
  `attn_variants.backends.BACKENDS`, so MMCA's blocks (causal text->text, full text->visual,
  no math for visual->visual 'self') are counted as the blocks it calls.
- `peak_estimate`: the peak of live tensor storage over build + step on fake tensors of the
  run's device, under the default SDPA backend (the one the timed calls use), tracked with
  storage weak references. It is an estimate: the allocator's rounding and caching and a
  kernel's own workspace are not in it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.multiprocessing.reductions import StorageWeakRef
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from attn_variants import backends
from attn_variants.spec import AttnSpec


@dataclass(frozen=True)
class AttentionCall:
    """One backend call: q (b, h, n, e) over k (b, g, s, e), causal or not, with or without grad."""

    b: int
    h: int
    n: int
    s: int
    e: int
    causal: bool
    backward: bool

    def pairs(self) -> int:
        """(query, key) pairs a causal kernel computes; query i sits at s - n + i (bottom-right,
        as backends.causal_mask), so it sees min(s, s - n + i + 1) keys: n(n+1)/2 when n = s."""
        if not self.causal:
            return self.n * self.s
        return sum(min(self.s, self.s - self.n + i + 1) for i in range(self.n))

    def flops(self, pairs: int) -> int:
        """q k^T and p v: 2 matmuls of 2*e FLOPs per pair per head; backward: 4 more matmuls."""
        forward = 4 * self.b * self.h * pairs * self.e
        return forward * 3 if self.backward else forward


@dataclass
class _Recorder:
    calls: list[AttentionCall] = field(default_factory=list)

    def wrap(self, fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        def recorded(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool, **kw: Any) -> Any:
            b, h, n, e = q.shape
            grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
            self.calls.append(AttentionCall(b, h, n, k.shape[2], e, causal, grad))
            return fn(q, k, v, causal=causal, **kw)

        return recorded


@contextlib.contextmanager
def recording_backends() -> Iterator[_Recorder]:
    """Every kernel in `backends.BACKENDS` wrapped to record its calls (modules built inside
    the block look their kernel up there, see backends.get_backend)."""
    recorder, saved = _Recorder(), dict(backends.BACKENDS)
    backends.BACKENDS.update({name: recorder.wrap(fn) for name, fn in saved.items()})
    try:
        yield recorder
    finally:
        backends.BACKENDS.clear()
        backends.BACKENDS.update(saved)


class LiveBytes(TorchDispatchMode):
    """Peak bytes of live tensor storage over the ops run under it (fake or real tensors)."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.peak = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                ref = StorageWeakRef(storage)
                self.live.setdefault(ref.cdata, (ref, storage.nbytes()))
        self.live = {k: (r, nb) for k, (r, nb) in self.live.items() if not r.expired()}
        self.peak = max(self.peak, sum(nb for _, nb in self.live.values()))
        return out


@dataclass(frozen=True)
class Count:
    """The FLOPs of one step, and the attention calls they were corrected with."""

    flops: int
    flops_effective: int
    attention: tuple[AttentionCall, ...]
    attention_flops: int = 0  # the attention core's share of flops (MoH's flops_active needs it)


META = torch.device("meta")


def count(make: Callable[[torch.device], Callable[[], object]]) -> Count:
    """FLOPs of the step `make(device)` builds, counted on the meta device under the math backend.

    Meta tensors have shapes and no data, like fake ones, and dispatch straight to C++ meta
    kernels: about 4x faster than FakeTensorMode, which matters at small n where the count's
    cost is all overhead. The count equals the real-tensor count (tests/harness/measure/test_flops.py)."""
    with recording_backends() as recorder:
        step = make(META)
        first = len(recorder.calls)  # calls before this were the build's (decode's prefill)
        counter = FlopCounterMode(display=False)
        with sdpa_kernel(SDPBackend.MATH), counter:
            step()
    flops, calls = counter.get_total_flops(), tuple(recorder.calls[first:])
    effective = flops - sum(c.flops(c.n * c.s) - c.flops(c.pairs()) for c in calls)
    return Count(flops, effective, calls, _attention_flops(counter))


def _attention_flops(counter: FlopCounterMode) -> int:
    """The attention core's FLOPs, by op name as measure.count_flops_detail counts them."""
    from . import ATTENTION_OPS  # harness.measure imports nothing of this module

    per_op = counter.get_flop_counts().get("Global", {})
    return sum(n for op, n in per_op.items() if str(op).split(".")[-1].startswith(ATTENTION_OPS))


def count_real(step: Callable[[], object]) -> Count:
    """FLOPs of one real call of `step` under the math backend (decode: one query, no n^2).

    Decode is counted on the real workload because its ops can depend on values: on the CPU,
    kdgqa/dgqa read their allocation on the host and pick a cheaper path when it is uniform
    (attn_variants.keydecode.on_host), which a meta tensor cannot show. A single query is never
    causally masked, so flops_effective = flops."""
    counter = FlopCounterMode(display=False)
    with sdpa_kernel(SDPBackend.MATH), counter:
        step()
    total = counter.get_total_flops()
    return Count(total, total, (), _attention_flops(counter))


def peak_estimate(make: Callable[[torch.device], Callable[[], object]], device: torch.device) -> int:
    """Peak live storage of building and running the step on `device`, over fake tensors.

    Fake, not meta: a fake CUDA tensor keeps the device, so SDPA picks the kernel the timed call
    will (a fused one, O(n) memory), where meta would fall back to math and its n^2 scores."""
    live = LiveBytes()
    with FakeTensorMode(), live:
        make(device)()
    return live.peak


def bytes_moved(mode: str, b: int, n: int, spec: AttnSpec, dtype: torch.dtype) -> int:
    """The least memory traffic of the attention in one step (the roofline's x axis divides by it).

    Q = b*h*n*e and KV = b*g*n*e elements; fwd reads q, k, v and writes o: 2Q + 2KV; fwd_bwd adds
    the backward's reads of q, k, v, o, dO and writes of dq, dk, dv: 6Q + 6KV in all; decode
    reads one query, the whole cache (2 b g n e) and writes one output: 2 b h e + 2KV. Weights
    and projections are left out: this is the attention's own traffic, as FlashAttention counts it.
    """
    h, g, e = spec.n_heads, spec.n_kv_heads, spec.head_dim
    q, kv = b * h * n * e, b * g * n * e
    elements = {"fwd": 2 * q + 2 * kv, "fwd_bwd": 6 * q + 6 * kv, "decode": 2 * b * h * e + 2 * kv}
    if mode not in elements:
        raise ValueError(f"unknown mode {mode!r}; valid modes: {sorted(elements)}")
    return elements[mode] * torch.empty(0, dtype=dtype).element_size()
