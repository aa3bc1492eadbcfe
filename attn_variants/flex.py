"""The `flex` backend: `torch.nn.attention.flex_attention` with block masks.

FlexAttention (PyTorch 2.5+, "FlexAttention: The Flexibility of PyTorch with the Performance
of FlashAttention", pytorch.org/blog/flexattention) takes a `BlockMask` built by
`create_block_mask(mask_mod, B, H, Q_LEN, KV_LEN, device)`: per (128 x 128) block, whether it
is empty, full or partial, so empty blocks are skipped. Building one costs a pass over the
(n, s) mask, so masks are built once per shape and device and kept in `MASKS`, outside any
timed call; `MASKS.seconds` is their build time (the `setup_s` column).

- plain attention: causal (aligned bottom-right when a KV cache holds s > n keys) or no mask;
- MMCA (arXiv 2309.14327 section 3.1) over the whole [visual (m); text] sequence, two calls:
  the same-modality blocks (text-text causal, plus visual-visual: "self" or "full") and the
  text-visual blocks, each with its own softmax, summed. A row a mask leaves empty (visual
  queries in the text-visual call) comes out 0, which is what the sum needs.

K/V keep g heads: `enable_gqa=True` when h > g, the groups being uniform (query head i reads
KV head i // (h/g)). FlexAttention has no dropout. Without `torch.compile` it runs torch's
unfused reference path (torch warns once); compiled, its fused kernel. On CPU it is inference
only (no backward in torch 2.13).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable

import torch
from torch import Tensor
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention

MaskMod = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]


class MaskCache:
    """Block masks by (kind, sizes, device); `seconds` adds up the time spent building them."""

    def __init__(self) -> None:
        self._masks: dict[Hashable, BlockMask] = {}
        self.seconds = 0.0
        self._primed = False

    def get(self, key: Hashable, mask_mod: MaskMod, n: int, s: int, device: torch.device) -> BlockMask:
        """The mask for `key`, built on first use. Under torch.compile a miss is traced into the
        graph (the harness builds masks with an eager call first, so the timed graph has none)."""
        if key in self._masks:
            return self._masks[key]
        if torch.compiler.is_compiling():
            return create_block_mask(mask_mod, None, None, n, s, device=device)
        self._prime(device)
        start = time.perf_counter()
        mask = self._masks[key] = create_block_mask(mask_mod, None, None, n, s, device=device)
        self.seconds += time.perf_counter() - start
        return mask

    def _prime(self, device: torch.device) -> None:
        """torch's first `create_block_mask` in a process pays a one-time set-up (~1 s on CPU,
        vmap and friends); pay it untimed so `seconds` is the per-shape build cost."""
        if not self._primed:
            create_block_mask(lambda b, h, q, k: q >= k, None, None, 1, 1, device=device)
            self._primed = True

    def clear(self) -> None:
        """Forget every mask and the build time (the sweep does this per cell)."""
        self._masks.clear()
        self.seconds = 0.0

    def __len__(self) -> int:
        return len(self._masks)


MASKS = MaskCache()


def _check(q: Tensor, k: Tensor, dropout_p: float) -> None:
    h, g = q.shape[1], k.shape[1]
    if h % g:
        raise ValueError(f"query heads h={h} are not divisible by key/value heads g={g}")
    if dropout_p:
        raise ValueError(f"dropout_p={dropout_p}: the flex backend has no attention dropout; use 0.0")


def _run(q: Tensor, k: Tensor, v: Tensor, mask: BlockMask | None) -> Tensor:
    if q.device.type == "cpu" and torch.compiler.is_compiling():
        q, k, v = _real_buffers(q, k, v)
    return flex_attention(q, k, v, block_mask=mask, enable_gqa=q.shape[1] != k.shape[1])


def _real_buffers(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """torch 2.13's CPU flex template reads q's and k's sizes from their underlying buffers
    (`choose_flex_template`, cpp_flex_attention_template.py): a q/k that is a view of the
    projection's 2-d matmul output fails to lower ("ValueError: not enough values to unpack
    (expected 4, got 2)"). Copies make them real 4-d buffers. K/V are copied in decode too,
    where they are views of the KV cache's larger buffer, so that the size the template reads
    is the live length, not the cache's capacity (we have not shown that the view would give
    a wrong result; the copy is the safe side). That costs one cache copy per compiled CPU
    decode step, which the timings include. Compiled gqa decode through flex matches eager
    (max error 2.6e-8 in float32, b=1, n=128)."""
    q = q.clone(memory_format=torch.contiguous_format)  # (b, h, n, e)
    k = k.clone(memory_format=torch.contiguous_format)  # (b, g, s, e)
    v = v.clone(memory_format=torch.contiguous_format)  # (b, g, s, e)
    return q, k, v


def attend(
    q: Tensor, k: Tensor, v: Tensor, *, causal: bool, dropout_p: float = 0.0, mask: Tensor | None = None
) -> Tensor:
    """q (b, h, n, e), k/v (b, g, s, e) -> (b, h, n, e). Query i sits at position s - n + i.

    `mask` (b or 1, 1, n, s) bool, with causal=False: a layout the data decides (interleaved
    MMCA's modality ids), so its block mask is built in this call, not cached, and its build
    time is part of the latency. A row it leaves empty comes out 0."""
    _check(q, k, dropout_p)
    n, s = q.shape[2], k.shape[2]
    if mask is not None:
        if causal:
            raise ValueError("mask with causal=True: the mask must say everything (causal=False)")
        return _run(q, k, v, dense_block_mask(mask.expand(q.shape[0], 1, n, s)))
    if not causal or n == 1:  # one query at the end sees every key: no mask
        return _run(q, k, v, None)
    offset = s - n

    def bottom_right(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        return kv_idx <= q_idx + offset

    return _run(q, k, v, MASKS.get(("causal", n, s, q.device), bottom_right, n, s, q.device))


def dense_block_mask(mask: Tensor) -> BlockMask:
    """A BlockMask from a dense bool mask (b, 1, n, s), by indexing it in the mask_mod."""
    b, _, n, s = mask.shape

    def lookup(b_idx: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        return mask[b_idx, 0, q_idx, kv_idx]

    return create_block_mask(lookup, b, None, n, s, device=mask.device)


def mmca(q: Tensor, k: Tensor, v: Tensor, *, n_visual: int, visual_attention: str, causal: bool) -> Tensor:
    """MMCA over x = [visual (m); text] with no earlier tokens: q (b, h, n, e), k/v (b, g, n, e)
    -> (b, h, n, e), as two block-masked calls over the whole sequence, summed."""
    _check(q, k, 0.0)
    n, m, device = q.shape[2], n_visual, q.device
    same = MASKS.get(
        ("mmca_same", n, m, visual_attention, causal, device),
        same_modality(m, visual_attention, causal),
        n,
        n,
        device,
    )
    out = _run(q, k, v, same)  # text-text and visual-visual blocks (b, h, n, e)
    if m == 0 or m == n:
        return out
    cross = MASKS.get(("mmca_cross", n, m, device), text_visual(m), n, n, device)
    return out + _run(q, k, v, cross)  # + text-visual blocks; visual rows there are 0


def same_modality(m: int, visual_attention: str, causal: bool) -> MaskMod:
    """Text query -> earlier text keys (all text keys if not causal); visual query -> itself
    ("self") or every visual key ("full"). Never across modalities."""

    def mask(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        text_q, text_k = q_idx >= m, kv_idx >= m
        text = text_q & text_k & (kv_idx <= q_idx) if causal else text_q & text_k
        visual = ~text_q & ~text_k
        if visual_attention == "self":
            visual = visual & (q_idx == kv_idx)
        return text | visual

    return mask


def text_visual(m: int) -> MaskMod:
    """Text query -> every visual key (they all come first, so this is causal too)."""

    def mask(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        return (q_idx >= m) & (kv_idx < m)

    return mask
