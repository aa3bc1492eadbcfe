"""Key-driven grouping: KDGQA and DGQA (Khan et al. 2024, arXiv 2408.08454).

Both keep GQA's g KV heads but let the key-head norms decide how many of the h query heads
read each KV head; query heads are assigned contiguously (the first a_0 read KV head 0, the
next a_1 read KV head 1, ...), and a KV head may get none.

- KDGQA: on every forward, s_j = sum over the batch of ||k[:, j]||_F, min-max normalised,
  a = round(h * s' / sum s'), repaired to sum to h (argmax -1 / argmin +1).
- DGQA: the same allocation from norms tracked over training in a buffer `norm_cache`.

Fast path: the allocation, the head -> KV index and the K/V gather all stay on the device (no
host sync, no Python loop over groups), then ONE call of the backend with h KV heads; only on
the CPU, eager, where reading a small tensor is free, do the integer steps run in Python
(`keydecode.on_host`). With a KV cache the norms come from running statistics kept in the
cache (prefix sums of squared key norms, `KEY_STATS`), so a step reads only its new keys to
allocate; a single new token (decode) packs each KV head's query heads as its rows and meets
every KV head in one call, so the cache is neither read twice nor copied h/g times
(`attn_variants/keydecode.py`): the registry's decode path with uneven groups; the rows then
go through `decode.kernel` like every other variant's decode call. The reference path
(`reference_forward`) is the paper's loop over groups with a Python-side allocation; the
tests check one against the other.

Neither is causal-safe: the allocation reads keys at every position (and, summed over the
batch, every example), so a token's output depends on later tokens and on the other examples.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from . import keydecode
from .backends import causal_mask
from .cache import KVCache, skips_attention
from .grouped import GroupedQueryAttention
from .keydecode import KEY_STATS, key_norms, kv_index_from_ends
from .registry import register
from .spec import AttnSpec

PAPER = "https://arxiv.org/abs/2408.08454"
SCOPES = ("batch", "sample")
KINDS = ("ema", "diff")
EMA_BETA = 0.9  # the paper code's `get_ratios_ema(..., beta=0.9)`


def check_choice(name: str, value: object, choices: Sequence[object]) -> None:
    """Raise ValueError naming `value` unless it is one of `choices`."""
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {list(choices)}")


# --- fast path: allocation and head index on the device ------------------------------------


def allocate_heads(scores: Tensor, h: int, *, min_max: bool) -> Tensor:
    """scores (..., g) -> query heads per KV head (..., g), int64, >= 0, summing to h.

    KDGQA min-max normalises first (`min_max=True`); DGQA does not. No preference (equal
    scores, all-zero or non-finite sums) gives the uniform GQA split h/g each, never NaN."""
    g = scores.shape[-1]
    if min_max:
        lo, hi = torch.aminmax(scores, dim=-1, keepdim=True)  # (..., 1)
        scores = (scores - lo) / (hi - lo)  # equal scores: 0 / 0 = NaN, so no preference below
    total = scores.sum(-1, keepdim=True)  # (..., 1)
    share = (scores / total * h).round()  # the paper's order, (s / sum s) * h; half to even
    if keydecode.on_host(share):  # integer decisions in Python: fewer small ops, the same numbers
        rows = [repair_list(a, h) for a in host_split(share.view(-1, g).tolist(), total.view(-1).tolist(), h)]
        return torch.tensor(rows).view(share.shape)
    ok = (total > 0) & (total < float("inf"))  # False for 0, NaN and inf: fall back to uniform
    return repair(torch.where(ok, share, h // g).long(), h)


def host_split(shares: list[list[float]], totals: list[float], h: int) -> list[list[int]]:
    """Rounded shares as ints, or the uniform split where the total is 0, NaN or inf."""
    g = len(shares[0])
    return [
        [int(x) for x in a] if 0 < t < float("inf") else [h // g] * g
        for a, t in zip(shares, totals, strict=True)
    ]


def repair_list(a: list[int], h: int) -> list[int]:
    """`repair` on the host: the paper's while-loops (first index on ties, as list.index)."""
    while sum(a) > h:
        a[a.index(max(a))] -= 1
    while sum(a) < h:
        a[a.index(min(a))] += 1
    return a


def repair(a: Tensor, h: int) -> Tensor:
    """Make a (..., g) sum to h: while above, -1 at argmax; while below, +1 at argmin.

    Each a_j = round(x_j) with sum x = h is off by at most 1/2, so |sum a - h| <= g // 2 and
    g // 2 masked steps do the paper's while-loops without reading the sum on the host.
    argmax/argmin take the first index on ties, as the paper's `torch.argmax` does: with
    u = sign(h - sum a), argmin(a * u) is the first argmax of a when above (u = -1), the first
    argmin when below (u = +1), and a no-op step (adding u = 0) when the sum is right."""
    deficit = h - a.sum(-1, keepdim=True)  # (..., 1)
    for _ in range(a.shape[-1] // 2):
        u = deficit.sign()  # (..., 1)
        a = a.scatter_add(-1, (a * u).argmin(-1, keepdim=True), u)
        deficit = deficit - u
    return a


def kv_index(a: Tensor, h: int) -> Tensor:
    """a (g,) -> (h,) or a (b, g) -> (b, h): the KV head each query head reads, contiguously."""
    if a.dim() == 1:
        heads = torch.arange(a.shape[0], device=a.device)  # (g,)
        return torch.repeat_interleave(heads, a, output_size=h)  # (h,), no host sync
    return kv_index_from_ends(a.cumsum(-1), h)


def gather_heads(t: Tensor, index: Tensor) -> Tensor:
    """t (b, g, s, e), index (h,) or (b, h) -> (b, h, s, e) with head i = t[:, index[i]]."""
    if index.dim() == 1:
        return t.index_select(1, index)  # (b, h, s, e)
    rows = torch.arange(t.shape[0], device=t.device)[:, None]  # (b, 1)
    return t[rows, index]  # (b, h, s, e)


class _KeyAllocatedGQA(GroupedQueryAttention):
    """GQA whose query -> KV assignment comes from `allocate(norms)`; shared by KDGQA and DGQA."""

    def allocate(self, norms: Tensor) -> Tensor:
        """Key norms (b, g) -> allocation (g,) or (b, g). Subclasses define it."""
        raise NotImplementedError

    def attend(self, q: Tensor, k: Tensor, v: Tensor, *, n_visual: int, cache: KVCache | None) -> Tensor:
        """q (b, h, n, e), k/v (b, g, s, e) -> (b, h, n, e): gather K/V to h heads, one call.

        With a KV cache, k holds every cached key, so decode allocates from all of them (their
        norms read from the cache's running statistics)."""
        a = self.allocate(keydecode.cached_key_norms(k, cache))  # (g,) or (b, g)
        if skips_attention(cache):  # KVCache.fill: statistics and DGQA's state are updated
            return q.new_zeros(*q.shape[:-1], v.shape[-1])  # (b, h, n, e)
        if q.shape[2] == 1:
            return self._attend_one_query(q, k, v, a, cache)
        index = kv_index(a, self.spec.n_heads)  # (h,) or (b, h)
        k_h, v_h = gather_heads(k, index), gather_heads(v, index)  # (b, h, s, e)
        return self.call_backend(q, k_h, v_h, cache, causal=self.spec.causal)

    def _attend_one_query(self, q: Tensor, k: Tensor, v: Tensor, a: Tensor, cache: KVCache | None) -> Tensor:
        """Decode (n = 1) without copying the cache h/g times: KV head j gets its a_j query
        heads as `rows` query "tokens" (padded), one backend call over (b, g, rows, e) reads
        K/V once, and each query head takes back its own row.

        The gather path copied 2*b*h*s*e floats per step (b=2, h=16, g=4, s=4096, e=32, one
        CPU thread: 34 ms against 1.2 ms for plain GQA). The single query sees every key, so
        no causal mask. q (b, h, 1, e), a (g,) or (b, g) -> (b, h, 1, e)."""
        b, h, _, e = q.shape
        g = k.shape[1]
        take, back, rows = keydecode.decode_layout(a.expand(b, g), h)
        q_rows = q.reshape(b * h, e).index_select(0, take).view(b, g, rows, e)  # (b, g, rows, e)
        o = self.call_backend(q_rows, k, v, cache, causal=False)  # (b, g, rows, e): rows are heads
        return o.reshape(b * g * rows, e).index_select(0, back).view(b, h, 1, e)  # (b*h, e) -> (b, h, 1, e)


@register(
    "kdgqa",
    description="Key-driven GQA: query heads per KV head in proportion to key-head norms, "
    "every forward. NOT causal-safe (reads keys at all positions, and all examples with "
    "scope='batch').",
    paper=PAPER,
    causal_safe=False,
    options={"scope": "batch"},  # the paper's: norms summed over the batch
)
class KeyDrivenGQA(_KeyAllocatedGQA):
    """KDGQA. `scope="batch"` (the paper's) sums the norms over the batch, so every example
    shares one allocation; `scope="sample"` allocates per example, so one example's output
    does not depend on the others'."""

    def __init__(self, spec: AttnSpec, *, backend: str = "sdpa", scope: str = "batch") -> None:
        check_choice("scope", scope, SCOPES)
        super().__init__(spec, backend=backend)
        self.scope = scope

    def allocate(self, norms: Tensor) -> Tensor:
        """Key norms (b, g) -> (g,) for scope="batch", (b, g) for scope="sample"."""
        scores = norms.sum(0) if self.scope == "batch" else norms  # (g,) or (b, g)
        return allocate_heads(scores, self.spec.n_heads, min_max=True)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scope={self.scope}"


@register(
    "dgqa",
    description="Dynamic key-driven GQA: query allocation from key norms tracked over training "
    "(ema or diff, updated every `window` steps). NOT causal-safe (reads keys at all positions).",
    paper=PAPER,
    causal_safe=False,
    options={"kind": "diff", "window": 1},  # the paper code's defaults (kind='diff', window_size=1)
)
class DynamicKeyDrivenGQA(_KeyAllocatedGQA):
    """DGQA with its state in three buffers (so `state_dict` carries it): `norm_cache` (g,),
    initially 0; `allocation` (g,), initially uniform h/g; `steps`, the training forwards seen.

    Training: on every `window`-th training forward (steps 0, window, 2*window, ...; the
    module counts its own, the paper read a global step) the allocation is recomputed from
    avg(s, cache) and the cache becomes (cache + s) / window; other steps reuse the stored
    allocation. Eval: recomputed every forward, and the cache is set to s. s = key norms
    summed over the batch, as in the paper.
    """

    BUFFERS = ("norm_cache", "allocation", "steps")

    def __init__(self, spec: AttnSpec, *, backend: str = "sdpa", kind: str = "diff", window: int = 1) -> None:
        check_choice("kind", kind, KINDS)
        if not isinstance(window, int) or isinstance(window, bool) or window < 1:
            raise ValueError(f"window={window!r} must be a positive integer (training steps)")
        super().__init__(spec, backend=backend)
        self.kind, self.window = kind, window
        g, h = spec.n_kv_heads, spec.n_heads
        self.register_buffer("norm_cache", torch.zeros(g))  # (g,)
        self.register_buffer("allocation", torch.full((g,), h // g, dtype=torch.long))  # (g,)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def allocate(self, norms: Tensor) -> Tensor:
        """Key norms (b, g) -> (g,). Updates the buffers; decisions stay on the device."""
        s = norms.sum(0)  # (g,)
        cache = self.norm_cache.to(s.dtype)
        if self.kind == "ema":
            avg = EMA_BETA * s + (1 - EMA_BETA) * cache
        else:
            avg = (cache - s).abs()
        fresh = allocate_heads(avg, self.spec.n_heads, min_max=False)  # (g,)
        if not self.training:
            self.allocation.copy_(fresh)
            self.norm_cache.copy_(s)
            return fresh
        update = self.steps % self.window == 0  # 0-dim bool tensor: no host sync
        self.allocation.copy_(torch.where(update, fresh, self.allocation))
        self.norm_cache.copy_(torch.where(update, (cache + s) / self.window, cache))
        self.steps.add_(1)
        return self.allocation.clone()

    def _apply(self, fn, recurse=True):
        """`.to()`, `.half()`, `.bfloat16()`, `.cuda()` move `norm_cache` but never cast it below
        float32. The "diff" rule |cache - s| compares the cache with norms computed in float32
        (`key_norms`): a bf16 cache would hold s rounded, so the same keys twice would give
        rounding noise (e.g. [4,3,7,7,2,5,1,3]) instead of "no preference" (uniform)."""
        cache = self._buffers["norm_cache"]
        super()._apply(fn, recurse)
        moved = self._buffers["norm_cache"]  # where (and in what dtype) the cast put it
        self._buffers["norm_cache"] = cache.to(moved.device, _state_dtype(moved.dtype))
        return self

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        """A plain GQA/MHA state dict (`from_mha`, a gqa checkpoint) has no DGQA state: the
        module then keeps its fresh state (cache 0, uniform allocation, step 0), as BatchNorm
        does for a missing `num_batches_tracked`. Only these three keys are filled in; every
        other missing or unexpected key still fails a strict load. A bf16 checkpoint's cache
        is widened to float32 first, so `load_state_dict(..., assign=True)` keeps it float32."""
        for name in self.BUFFERS:
            state_dict.setdefault(prefix + name, getattr(self, name).detach().clone())
        cache = state_dict[prefix + "norm_cache"]
        if isinstance(cache, Tensor):
            state_dict[prefix + "norm_cache"] = cache.to(_state_dtype(cache.dtype))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, kind={self.kind}, window={self.window}"


def _state_dtype(dtype: torch.dtype) -> torch.dtype:
    """DGQA's norm cache dtype for a module cast to `dtype`: float32, or float64 in a float64
    module (the reference checks run there), never lower."""
    return torch.promote_types(dtype, torch.float32)


# --- reference path: the paper's loop over groups, allocation in plain Python --------------


def reference_allocation(scores: Sequence[float], h: int, *, min_max: bool) -> list[int]:
    """The paper's allocation written with floats, `round` and while-loops."""
    s = [float(x) for x in scores]
    g = len(s)
    if min_max:
        lo, hi = min(s), max(s)
        if hi == lo:
            return [h // g] * g
        s = [(x - lo) / (hi - lo) for x in s]
    total = sum(s)
    if not total > 0:
        return [h // g] * g
    a = [round(x / total * h) for x in s]
    while sum(a) > h:
        a[a.index(max(a))] -= 1
    while sum(a) < h:
        a[a.index(min(a))] += 1
    return a


def reference_dgqa_scores(norms: Sequence[float], cache: Sequence[float], kind: str) -> list[float]:
    """avg = beta * s + (1 - beta) * cache ("ema") or |cache - s| ("diff")."""
    if kind == "ema":
        return [EMA_BETA * s + (1 - EMA_BETA) * c for s, c in zip(norms, cache, strict=True)]
    return [abs(c - s) for s, c in zip(norms, cache, strict=True)]


def reference_groups(q: Tensor, k: Tensor, v: Tensor, allocation: Sequence[int], causal: bool) -> Tensor:
    """The paper's loop: split q's heads by `allocation`, attend one KV head at a time.

    q (b, h, n, e), k/v (b, g, s, e) -> (b, h, n, e); eager softmax, no fused kernel."""
    outputs, start = [], 0
    for j, a_j in enumerate(allocation):
        q_j = q[:, start : start + a_j]  # (b, a_j, n, e), possibly a_j = 0
        scores = q_j @ k[:, j : j + 1].transpose(-2, -1) * q.shape[-1] ** -0.5  # (b, a_j, n, s)
        if causal:
            scores = scores.masked_fill(~causal_mask(q.shape[2], k.shape[2], q.device), float("-inf"))
        outputs.append(scores.softmax(-1) @ v[:, j : j + 1])  # (b, a_j, n, e)
        start += a_j
    return torch.cat(outputs, dim=1)  # (b, h, n, e)


def reference_allocations(module: _KeyAllocatedGQA, k: Tensor) -> list[list[int]]:
    """One allocation per example, computed in Python from per-head norms (no buffer change)."""
    b, g = k.shape[:2]
    h = module.spec.n_heads
    per_example = [[float(k[i, j].detach().double().norm()) for j in range(g)] for i in range(b)]
    if isinstance(module, KeyDrivenGQA) and module.scope == "sample":
        return [reference_allocation(norms, h, min_max=True) for norms in per_example]
    summed = [sum(per_example[i][j] for i in range(b)) for j in range(g)]
    if isinstance(module, KeyDrivenGQA):
        return [reference_allocation(summed, h, min_max=True)] * b
    if module.training and int(module.steps) % module.window:
        return [module.allocation.tolist()] * b  # between updates: the stored allocation
    scores = reference_dgqa_scores(summed, module.norm_cache.tolist(), module.kind)
    return [reference_allocation(scores, h, min_max=False)] * b


def reference_forward(module: _KeyAllocatedGQA, x: Tensor) -> Tensor:
    """x (b, n, d) -> (b, n, d) by the paper's loop over groups; leaves the module unchanged.

    For DGQA it uses the buffers as they are before the module's own forward would run."""
    q, k, v = module.project(x)  # (b, h, n, e), (b, g, n, e), (b, g, n, e)
    allocations = reference_allocations(module, k)
    causal = module.spec.causal
    if all(a == allocations[0] for a in allocations):  # one allocation: loop over groups only
        return module.merge(reference_groups(q, k, v, allocations[0], causal))
    outputs = []
    for i, a in enumerate(allocations):  # one example at a time, each with its own split
        r = slice(i, i + 1)
        outputs.append(reference_groups(q[r], k[r], v[r], a, causal))  # (1, h, n, e)
    return module.merge(torch.cat(outputs))  # (b, h, n, e) -> (b, n, d)


__all__ = [
    "KEY_STATS",
    "DynamicKeyDrivenGQA",
    "KeyDrivenGQA",
    "allocate_heads",
    "key_norms",
    "kv_index",
    "reference_allocation",
    "reference_forward",
]
