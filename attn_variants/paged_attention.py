"""Attention that reads a paged KV cache through its block table, with no gather.

The portable path gathers each example's pages into a padded frame (`KVCache.get`, then
attn_variants/ragged.py): a copy of the live cache per step. Two kernels read the pages where
they lie instead, for the GQA family's K/V (the variant's attention must be plain grouped
attention over "k" and "v": GroupedQueryAttention, concat, pgqa before its noise):

- "flex-paged": `torch.nn.attention.flex_attention` over the whole pool, K/V
  (1, g, pool * page_size, e), with a block mask whose mask_mod maps a physical key to its page's
  owner and logical position (the idea of FlexAttention's `PagedAttention`, attention-gym):
  key j of the pool is seen by query t of example i iff its page belongs to i and its logical
  position is <= the query's (causal) or < lengths[i]. Used when the variant's backend is flex.
  The mask is built once per (pages, lengths, n) and kept: a repeated step pays nothing; its
  build time is the cell's `setup_s` (flex.MASKS.seconds).
- "varlen-paged": `torch.nn.attention.varlen.varlen_attn(..., seqused_k=, block_table=)` on
  CUDA in fp16/bf16, where the installed torch has it (FlashAttention's paged KV); the pool is
  viewed as (pool, page_size, g, e). Untested on a machine without CUDA.

`kernel_for` says which applies ("" for none: the caller gathers).
"""

from __future__ import annotations

import inspect
import time

import torch
from torch import Tensor

from . import flex
from .cache import KVCache

CUDA_HALF = (torch.float16, torch.bfloat16)


def varlen_available() -> bool:
    """Whether the installed torch has `varlen_attn` with a `block_table` argument."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return False
    return "block_table" in inspect.signature(varlen_attn).parameters


def kernel_for(cache: KVCache | None, q: Tensor, backend: str) -> str:
    """ "flex-paged", "varlen-paged", or "" (gather) for this paged cache, query and backend."""
    if cache is None or cache.pages is None or cache.filling or "k" not in cache:
        return ""
    if backend == "flex":
        return "flex-paged"
    if q.is_cuda and q.dtype in CUDA_HALF and backend == "sdpa" and varlen_available():
        return "varlen-paged"
    return ""


def attend(q: Tensor, cache: KVCache, kernel: str, *, causal: bool) -> Tensor:
    """q (b, h, n, e), the newest n tokens of each example -> (b, h, n, e), reading the cache's
    "k" and "v" pages in place."""
    cache.kernel = kernel
    k, v = cache.pool("k"), cache.pool("v")  # (g, pool * page_size, e)
    if kernel == "flex-paged":
        return _flex(q, k, v, cache, causal)
    if kernel == "varlen-paged":
        return _varlen(q, k, v, cache, causal)
    raise ValueError(f"kernel={kernel!r} is not one of ['flex-paged', 'varlen-paged']")


def _flex(q: Tensor, k: Tensor, v: Tensor, cache: KVCache, causal: bool) -> Tensor:
    b, _, n, _ = q.shape
    mask = _block_mask(cache, n, k.shape[1], causal, q.device)
    out = flex.flex_attention(q, k[None], v[None], block_mask=mask, enable_gqa=q.shape[1] != k.shape[0])
    return out  # (b, h, n, e)


def _block_mask(cache: KVCache, n: int, s: int, causal: bool, device: torch.device):
    """The pool's block mask for this step, kept on the page table until pages or lengths change."""
    table = cache.pages
    lengths = cache.field_lengths("k")
    key = ("flex-paged", tuple(lengths), tuple(map(tuple, table.pages)), n, causal, device)
    if key in table.masks:
        return table.masks[key]
    owner, logical = table.maps(device)  # (pool,), (pool,)
    ends = torch.tensor(lengths, device=device)  # (b,)
    ps = table.page_size

    def mask_mod(b_idx: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        page = kv_idx // ps
        position = logical[page] * ps + kv_idx % ps  # the key's place in its example
        last = ends[b_idx] - n + q_idx if causal else ends[b_idx] - 1  # the query's last key
        return (owner[page] == b_idx) & (position <= last)

    start = time.perf_counter()
    block = ps if ps % 16 == 0 and ps <= 128 else 128  # a kv block per page where the kernel allows
    mask = flex.create_block_mask(mask_mod, len(lengths), None, n, s, device=device, BLOCK_SIZE=(128, block))
    flex.MASKS.seconds += time.perf_counter() - start
    table.masks.clear()  # one step's mask at a time
    table.masks[key] = mask
    return mask


def _varlen(q: Tensor, k: Tensor, v: Tensor, cache: KVCache, causal: bool) -> Tensor:
    from torch.nn.attention.varlen import varlen_attn

    b, h, n, e = q.shape
    g, ps = k.shape[0], cache.pages.page_size
    lengths = cache.field_lengths("k")
    used = cache.lengths_of("k", q.device).to(torch.int32)  # (b,)
    cu_k = torch.nn.functional.pad(used.cumsum(0, dtype=torch.int32), (1, 0))  # (b + 1,)
    cu_q = torch.arange(0, (b + 1) * n, n, dtype=torch.int32, device=q.device)  # (b + 1,)
    pages_k = k.view(g, -1, ps, e).permute(1, 2, 0, 3)  # (pool, page_size, g, e)
    pages_v = v.view(g, -1, ps, e).permute(1, 2, 0, 3)
    out = varlen_attn(
        q.transpose(1, 2).reshape(b * n, h, e),  # (b*n, h, e)
        pages_k,
        pages_v,
        cu_q,
        cu_k,
        n,
        max(lengths),
        window_size=(-1, 0) if causal else (-1, -1),
        enable_gqa=h != g,
        seqused_k=used,
        block_table=cache.pages.table(q.device).to(torch.int32),
    )  # (b*n, h, e)
    return out.view(b, n, h, e).transpose(1, 2)  # (b, h, n, e)
