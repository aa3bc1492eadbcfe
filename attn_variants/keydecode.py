"""KDGQA/DGQA decode helpers (arXiv 2408.08454; the variants are in keydriven.py): the key
norms, their running statistics in the KV cache, and the layout of a decode step.

- Key norms: ||k_j||_F = sqrt(sum over tokens of ||k_jt||^2), the squares summed in float64.
- Running statistics: a cache field `KEY_STATS` (b, g, s), float64, of prefix sums of squared
  key norms. ||k_j||_F^2 is its last entry, so a step reads only its new keys to allocate, and
  `truncate` keeps it exact (the prefix sum at t depends on tokens up to t only).
- Decode layout: KV head j gets its a_j query heads as query rows, so one backend call over
  (b, g, rows, e) reads the cache once, and each query head takes back its own row.

`on_host` is the one switch between CPU-eager shortcuts (reading small values is free there)
and the accelerator path (never read a device value: no host sync, no graph break).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from .cache import KVCache


def on_host(t: Tensor) -> bool:
    """Whether reading t's values is free: CPU memory, eager. Elsewhere a read would be a host
    sync (an accelerator's queue stalls) or a graph break (torch.compile), so never read."""
    return t.device.type == "cpu" and not torch.compiler.is_compiling()


# --- key norms and their running statistics in the KV cache --------------------------------


def key_norms(k: Tensor) -> Tensor:
    """k (b, g, s, e) -> (b, g): each example's Frobenius norm per KV head, in >= float32.

    ||k_j||_F = sqrt(sum over tokens of ||k_jt||^2), summed in float64 as the cache's running
    statistics are (`cached_key_norms`), so decode and a full recomputation agree to float64
    rounding before the cast. Detached: the allocation is an integer choice, no gradient flows
    through it (as in the paper, whose `.round().int()` cuts the graph)."""
    return token_sq_norms(k).sum(-1).sqrt().to(norm_dtype(k))  # (b, g)


def norm_dtype(k: Tensor) -> torch.dtype:
    """The dtype the allocation reads norms in: k's, at least float32 (DGQA's `norm_cache`)."""
    return torch.promote_types(k.dtype, torch.float32)


def token_sq_norms(k: Tensor) -> Tensor:
    """k (b, g, s, e) -> (b, g, s) float64: each key's squared norm (a float32 square is exact
    in float64, so only the sum over e rounds)."""
    k = k.detach().to(torch.float64)
    return (k * k).sum(-1)  # (b, g, s)


KEY_STATS = "key_sq_prefix"  # cache field (b, g, s) float64: entry t = sum_{t' <= t} ||k_t'||^2


def cached_key_norms(k: Tensor, cache: KVCache | None) -> Tensor:
    """k (b, g, s, e), every key the step attends to -> (b, g) Frobenius norms, as `key_norms`.

    With a cache, ||k_j||_F^2 is the entry of the prefix sums it keeps at each example's last
    key: O(1) to read, and the keys not yet counted (this step's, or those a variant without
    statistics appended, e.g. a gqa prefill) are added first. A prefix sum at position t
    depends only on tokens up to t, so `truncate` keeps it exact; in a ragged batch the
    padding past an example's length is never read (KDGQA/DGQA norms over its own tokens)."""
    if cache is None:
        return key_norms(k)
    prefix = key_sq_prefix(cache, k)  # (b, g, s)
    if not cache.ragged:
        return prefix[..., -1].sqrt().to(norm_dtype(k))  # (b, g)
    last = (cache.lengths_of("k", k.device) - 1).clamp(min=0)  # (b,): each example's last key
    squares = prefix.gather(2, last[:, None, None].expand(-1, prefix.shape[1], 1))[..., 0]  # (b, g)
    return squares.sqrt().to(norm_dtype(k))  # (b, g)


def key_sq_prefix(cache: KVCache, k: Tensor) -> Tensor:
    """The cache's prefix sums (b, g, s), brought up to the s cached keys k (b, g, s, e) by
    counting only k[:, :, counted:]."""
    if cache.ragged:
        return _ragged_key_sq_prefix(cache, k)
    prefix = cache.get(KEY_STATS)
    counted = 0 if prefix is None else prefix.shape[-1]
    if counted > k.shape[2]:
        raise ValueError(f"cache field {KEY_STATS!r} counts {counted} keys but the cache holds {k.shape[2]}")
    if counted == k.shape[2]:
        return prefix
    new = token_sq_norms(k[:, :, counted:])  # (b, g, s - counted)
    if new.shape[-1] > 1:  # one new token (decode) is its own prefix sum
        new = new.cumsum(-1)
    if prefix is not None and counted:
        new = new + prefix[..., -1:]
    return cache.append(2, **{KEY_STATS: new})[0]


def _ragged_key_sq_prefix(cache: KVCache, k: Tensor) -> Tensor:
    """`key_sq_prefix` for examples of different lengths: the n keys each example appended
    since the statistics were counted (the same n for all: appends add to every example) sit at
    its own positions counted[i] .. counted[i] + n - 1, gathered; statistics lagging by
    different counts (never in a decode step) are recomputed over the whole frame."""
    have, want = cache.field_lengths(KEY_STATS), cache.field_lengths("k")
    lag = {w - h for h, w in zip(have, want, strict=True)} if have else None
    if lag == {0}:
        return cache.get(KEY_STATS)
    if lag is None or len(lag) > 1:  # positions past an example's length are padding, never read
        return cache.replace(KEY_STATS, token_sq_norms(k).cumsum(-1), 2, like="k")
    n = lag.pop()
    counted = cache.lengths_of(KEY_STATS, k.device)  # (b,)
    at = counted[:, None] + torch.arange(n, device=k.device)  # (b, n)
    new = token_sq_norms(
        k.gather(2, at[:, None, :, None].expand(-1, k.shape[1], -1, k.shape[3]))
    )  # (b, g, n)
    before = cache.get(KEY_STATS).gather(
        2, (counted - 1).clamp(min=0)[:, None, None].expand(-1, k.shape[1], 1)
    )
    new = new.cumsum(-1) + torch.where(counted[:, None, None] > 0, before, 0.0)  # (b, g, n)
    return cache.append(2, **{KEY_STATS: new})[0]


# --- decode layout: each KV head's query heads as its query rows ---------------------------


def decode_layout(a: Tensor, h: int) -> tuple[Tensor, Tensor, int]:
    """Allocation a (b, g) summing to h -> (take, back, rows) for a decode step:
    q_rows = q (b*h, e)[take] is (b, g, rows, e), KV head j's a_j query heads first (the rest
    padding, any head); o (b*g*rows, e)[back] is (b*h, e), each query head's own row.

    rows: on the host (CPU, eager) the largest group, read from `a` for free, and the indices
    built in Python once per allocation (memoised; the allocation rarely changes between
    steps); padding to h would do up to g times GQA's arithmetic there. Elsewhere rows = h, a
    static shape with no host sync: the padding rows cost arithmetic, not memory traffic,
    which bounds decode on an accelerator."""
    if on_host(a):
        return _host_layout(tuple(map(tuple, a.tolist())), h)
    return _device_layout(a, h)


@functools.lru_cache(maxsize=256)
def _host_layout(a: tuple[tuple[int, ...], ...], h: int) -> tuple[Tensor, Tensor, int]:
    g, rows = len(a[0]), max(map(max, a))
    take, back = [], []
    for i, groups in enumerate(a):
        start = 0
        for j, a_j in enumerate(groups):
            take += [i * h + min(start + r, h - 1) for r in range(rows)]  # (b, g, rows) flat
            back += [(i * g + j) * rows + r for r in range(a_j)]  # query heads in order: (b, h) flat
            start += a_j
    return torch.tensor(take), torch.tensor(back), rows


def _device_layout(a: Tensor, h: int) -> tuple[Tensor, Tensor, int]:
    """`decode_layout` with rows = h, computed on a's device."""
    b, g = a.shape
    ends = a.cumsum(-1)  # (b, g)
    starts = ends - a  # (b, g): group j's first query head
    batch = torch.arange(b, device=a.device)[:, None]  # (b, 1)
    heads = starts[..., None] + torch.arange(h, device=a.device)  # (b, g, h), padding past a_j ...
    take = heads.clamp(max=h - 1) + batch[..., None] * h  # ... takes any head: its output is dropped
    index = kv_index_from_ends(ends, h)  # (b, h): query head i's KV head ...
    row = torch.arange(h, device=a.device) - starts.gather(1, index)  # ... and its row there
    back = (batch * g + index) * h + row  # (b, h)
    return take.flatten(), back.flatten(), h


def kv_index_from_ends(ends: Tensor, h: int) -> Tensor:
    """ends (b, g), the cumulative allocation -> (b, h): query head i reads the first KV head
    whose end is > i."""
    queries = torch.arange(h, device=ends.device)[:, None]  # (h, 1)
    return (queries >= ends[:, None, :]).sum(-1)  # (b, h, g) -> (b, h): ends at or before i
