"""FLOPs and a peak-memory estimate from tensors without data: nothing of size n^2 exists.

The step is built and run on the `meta` device (FLOPs) or under
`torch._subclasses.fake_tensor.FakeTensorMode` (memory): every tensor has its shape and dtype
but no data, so the FLOP count of a b*h*n^2 score matrix costs nothing (the real-tensor count
ran the math SDPA kernel and materialised it; issue 13).

- `flops`: `torch.utils.flop_counter.FlopCounterMode` under the math SDPA backend, the count
  the real-tensor pass gave (tests/harness/test_flops.py checks they are equal). Its
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
import dataclasses
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
    g: int = 0  # K/V heads (0: h)
    ev: int = 0  # value width (0: e); mla pads its values to q's width for one SDPA call
    masked: bool = False  # called with a bool mask (MMCA's layouts, ragged decode)
    mask_pairs: float | None = None  # allowed pairs per (batch, head); None: the mask had no data (meta)

    def pairs(self) -> float:
        """(query, key) pairs a kernel must compute. A mask's True entries, where it had data;
        causal: query i sits at s - n + i (bottom-right, as backends.causal_mask), so it sees
        min(s, s - n + i + 1) keys: n(n+1)/2 when n = s; otherwise all n * s."""
        if self.masked and self.mask_pairs is not None:
            return self.mask_pairs
        if not self.causal:
            return self.n * self.s
        return sum(min(self.s, self.s - self.n + i + 1) for i in range(self.n))

    def flops(self, pairs: float) -> float:
        """q k^T and p v: 2 matmuls of 2*e FLOPs per pair per head (FlopCounterMode's count, which
        takes the value width as e too: mla's padded values are counted); backward: 4 more."""
        forward = 4 * self.b * self.h * pairs * self.e
        return forward * 3 if self.backward else forward

    def elements(self) -> int:
        """Elements the call's forward must move: q, k and v read, the output written."""
        g, ev = self.g or self.h, self.ev or self.e
        return self.b * (self.h * self.n * (self.e + ev) + g * self.s * (self.e + ev))


@dataclass
class _Recorder:
    calls: list[AttentionCall] = field(default_factory=list)

    def wrap(self, fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        def recorded(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool, **kw: Any) -> Any:
            b, h, n, e = q.shape
            grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
            mask = kw.get("mask")
            pairs = _mask_pairs(mask) if isinstance(mask, torch.Tensor) else None
            call = AttentionCall(
                b, h, n, k.shape[2], e, causal, grad, k.shape[1], v.shape[-1], mask is not None, pairs
            )
            self.calls.append(call)
            return fn(q, k, v, causal=causal, **kw)

        return recorded


def _mask_pairs(mask: torch.Tensor) -> float | None:
    """Allowed (query, key) pairs per batch element of a bool mask (b or 1, 1, n, s); None on meta."""
    if mask.device.type == "meta":
        return None
    return float(mask.sum()) / mask.shape[0]


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

    @property
    def attention_effective(self) -> int:
        """The attention core's share of flops_effective (every spared FLOP is an attention one)."""
        return self.attention_flops - (self.flops - self.flops_effective)


META = torch.device("meta")


def count(make: Callable[[torch.device], Callable[[], object]]) -> Count:
    """FLOPs of the step `make(device)` builds, counted on the meta device under the math backend.

    Meta tensors have shapes and no data, like fake ones, and dispatch straight to C++ meta
    kernels: about 4x faster than FakeTensorMode, which matters at small n where the count's
    cost is all overhead. The count equals the real-tensor count (tests/harness/test_flops.py)."""
    with recording_backends() as recorder:
        step = make(META)
        first = len(recorder.calls)  # calls before this were the build's (decode's prefill)
        counter = FlopCounterMode(display=False)
        with sdpa_kernel(SDPBackend.MATH), counter:
            step()
    flops, calls = counter.get_total_flops(), tuple(recorder.calls[first:])
    return Count(flops, flops - _spared(calls), calls, _attention_flops(counter))


def _spared(calls: tuple[AttentionCall, ...]) -> int:
    """FLOPs the calls' causality and masks spare against counting every pair."""
    return round(sum(c.flops(c.n * c.s) - c.flops(c.pairs()) for c in calls))


def with_mask_density(
    counted: Count, make: Callable[[torch.device], Callable[[], object]], device: torch.device
) -> Count:
    """`counted` with masked calls counted by their masks' density: a masked call on meta has no
    mask values (interleaved MMCA builds its masks from the modality ids), so the step is built
    and run once more on `device`, recording the calls with real masks (one untimed call under
    the default kernel, which builds the masks the timed calls build)."""
    if not any(c.masked and c.mask_pairs is None for c in counted.attention):
        return counted
    with recording_backends() as recorder:
        step = make(device)
        first = len(recorder.calls)
        step()
    calls = tuple(recorder.calls[first:])
    if len(calls) != len(counted.attention):
        raise RuntimeError(
            f"the step made {len(calls)} attention calls on {device} but {len(counted.attention)} on meta"
        )
    return dataclasses.replace(counted, flops_effective=counted.flops - _spared(calls), attention=calls)


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


def bytes_moved(
    mode: str,
    b: int,
    n: int,
    spec: AttnSpec,
    dtype: torch.dtype,
    *,
    weight_bytes: int = 0,
    calls: tuple[AttentionCall, ...] = (),
) -> int:
    """The least memory traffic of one fwd or fwd_bwd step: the scope of flops_effective and of
    the timed step, so that the roofline's two axes count the same work.

    Forward: every weight read once (`weight_bytes`), x (b, n, d) read and the output written,
    and each attention call's q, k, v read and its output written, at the widths the call ran
    (mla's q and k are nope + rope wide; `calls` as `count` recorded them). Where no call was
    recorded, the spec's widths: 2Q + 2KV with Q = b*h*n*e, KV = b*g*n*e. fwd_bwd: three times
    the forward (the backward reads what the forward read, plus the output gradients, and
    writes the gradients), the convention of its FLOPs. Decode is roof.decode_bytes: the cache
    the variant holds, its weights, the token in and out.
    """
    if mode not in ("fwd", "fwd_bwd"):
        raise ValueError(f"bytes_moved counts fwd and fwd_bwd, not mode {mode!r} (decode: roof.decode_bytes)")
    h, g, e, d = spec.n_heads, spec.n_kv_heads, spec.head_dim, spec.dim
    attention = sum(c.elements() for c in calls) if calls else 2 * b * h * n * e + 2 * b * g * n * e
    forward = weight_bytes + (2 * b * n * d + attention) * torch.empty(0, dtype=dtype).element_size()
    return forward * 3 if mode == "fwd_bwd" else forward
