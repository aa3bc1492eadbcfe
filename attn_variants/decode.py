"""One decode path for every variant that attends grouped K/V: the layout of a step's queries.

A decode step (n new queries, n small, against a cache of s keys) reads the whole cache for a
handful of FLOPs, so it should cost the time to read the cache once. Two layouts give the same
numbers (query head i reads KV head i // (h/g), GQA arXiv 2305.13245):

- "heads": q (b, h, n, e) against k/v (b, g, s, e), the backend's own GQA (`enable_gqa`);
- "rows": each KV head's h/g query heads laid out as its query rows, q (b, g, (h/g)*n, e)
  against (b, g, s, e): a plain g-head call, one pass over the cache with h/g rows per key
  block. FlashAttention makes the same swap for GQA decode on the GPU (flash_api.cpp,
  `seqlenq_ngroups_swapped`); PyTorch's CPU kernel does not, and loops over the h query heads,
  one row each, reading each KV head's block h/g times.

Which wins, measured (benchmarks/ratios_decode_layout.py; CPU, AMD EPYC, 1 thread, float32,
b=1, h=16, e=64, s=16,384, one query; medians of interleaved rounds):
    g=4: "heads" 11.6 ms, "rows" 6.0 ms;  g=1: "heads" 5.8 ms, "rows" 1.5 ms.
So "rows" wherever h > g and the backend can take it (`choose_layout`). With n > 1 (several
query tokens per step, speculative decode) the causal mask is no longer "see everything":
row r*n + i of the rows layout is query i of its head, at position s - n + i, so it gets an
explicit (rows, s) mask, which SDPA's CPU kernel takes; flex keeps "heads" there (a dense mask
would be rebuilt per call). On CUDA (not measured here) "rows" is FlashAttention's own layout
for one query, and in float32 it spares the h/g expansion of K/V that `backends.sdpa` makes
for the memory-efficient kernel (`no_fused_gqa`).

Shapes: b batch, h query heads, g KV heads, n queries of this step, s keys, e head dim.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from .backends import Backend, causal_mask, get_backend

Layout = Literal["heads", "rows"]
LAYOUTS: tuple[str, ...] = ("auto", "heads", "rows")
# Above this many queries per step a call is a prefill chunk, not a decode step: the rows
# layout's explicit mask would keep the kernel from skipping the masked blocks.
MAX_ROWS_QUERIES = 16


def choose_layout(backend: str, h: int, g: int, n: int) -> Layout:
    """The faster correct layout for `backend` with h query heads, g KV heads and n queries
    (see the module doc for the figures): "rows" when h > g and the step is a decode step."""
    if h == g or n > MAX_ROWS_QUERIES:
        return "heads"  # one query head per KV head: the layouts are the same call
    if backend == "flex" and n > 1:
        return "heads"  # flex would rebuild a dense block mask per call for the rows' mask
    return "rows"


def attend(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    backend: str,
    causal: bool,
    dropout_p: float = 0.0,
    mask: Tensor | None = None,
    layout: str = "auto",
) -> Tensor:
    """q (b, h, n, e), k/v (b, g, s, e) -> (b, h, n, e): the backend's attention, the queries
    at the last n of the s positions (causal: bottom-right aligned), in the layout `layout`
    ("auto": `choose_layout`). `mask` (b or 1, 1, n, s) bool, with causal=False, as for any
    backend (backends.py)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r} is not one of {list(LAYOUTS)}")
    h, g, n = q.shape[1], k.shape[1], q.shape[2]
    if h % g:
        raise ValueError(f"query heads h={h} are not divisible by key/value heads g={g}")
    chosen = choose_layout(backend, h, g, n) if layout == "auto" else layout
    if chosen == "heads":
        return get_backend(backend)(q, k, v, causal=causal, dropout_p=dropout_p, mask=mask)
    q_rows = as_rows(q, g)  # (b, g, (h/g)*n, e)
    row_mask = rows_mask(mask, causal, h // g, n, k.shape[2], q.device)
    o = attend_rows(q_rows, k, v, backend=backend, dropout_p=dropout_p, mask=row_mask)
    return from_rows(o, h, n)  # (b, h, n, e)


def kernel(backend: str) -> Backend:
    """`attend` with the backend signature (q, k, v, *, causal, dropout_p, mask): what a variant
    calls in place of its backend when a cache is given (and hands to ragged.attend)."""

    def run(
        q: Tensor, k: Tensor, v: Tensor, *, causal: bool, dropout_p: float = 0.0, mask: Tensor | None = None
    ) -> Tensor:
        return attend(q, k, v, backend=backend, causal=causal, dropout_p=dropout_p, mask=mask)

    run.__name__ = run.__qualname__ = f"decode_{backend}"
    return run


def attend_rows(
    q_rows: Tensor, k: Tensor, v: Tensor, *, backend: str, dropout_p: float = 0.0, mask: Tensor | None = None
) -> Tensor:
    """The kernel call of the rows layout: q_rows (b, g, rows, e), k/v (b, g, s, e) ->
    (b, g, rows, e), every row seeing every key unless `mask` (b or 1, 1, rows, s) says
    otherwise."""
    return get_backend(backend)(q_rows, k, v, causal=False, dropout_p=dropout_p, mask=mask)


def as_rows(q: Tensor, g: int) -> Tensor:
    """q (b, h, n, e) -> (b, g, (h/g)*n, e): row r*n + i of KV head j is query i of head
    j*(h/g) + r. A view when n = 1 (the projection's (b, 1, h, e) buffer)."""
    b, h, n, e = q.shape
    return q.reshape(b, g, (h // g) * n, e)  # (b, g, h/g, n, e) -> (b, g, (h/g)*n, e)


def from_rows(o: Tensor, h: int, n: int) -> Tensor:
    """o (b, g, (h/g)*n, e) -> (b, h, n, e), the inverse of `as_rows`."""
    b, _, _, e = o.shape
    return o.reshape(b, h, n, e)  # (b, g, h/g, n, e) -> (b, h, n, e)


def rows_mask(
    mask: Tensor | None, causal: bool, rep: int, n: int, s: int, device: torch.device
) -> Tensor | None:
    """The rows layout's mask (b or 1, 1, rep*n, s) from a heads-layout `mask` (b or 1, 1, n, s)
    or the causal rule; None when every row sees every key (one query, no mask)."""
    if mask is not None:
        if causal:
            raise ValueError("mask with causal=True: the mask must say everything (causal=False)")
        return mask if n == 1 else mask.repeat(1, 1, rep, 1)  # (b, 1, rep*n, s): rows r*n + i
    if not causal or n == 1:  # a single query at the end sees every key
        return None
    return causal_mask(n, s, device).repeat(rep, 1)[None, None]  # (1, 1, rep*n, s)
