"""Sliding-window grouped-query attention, as in Mistral 7B (Jiang et al. 2023, arXiv 2310.06825).

Query i reads keys j with i - W < j <= i: a causal window of W tokens (Mistral's
`sliding_window`, 4096 in Mistral 7B v0.1), over GQA heads (8 KV heads for 32 query heads).
Projections are GQA's, named as in HF transformers' MistralAttention (q_proj, k_proj, v_proj,
o_proj), so its attention weights load by `state_dict`.

Departure: Mistral decodes with a rolling buffer that keeps only the last W keys. attnbench's
KVCache keeps every token (its `nbytes` grows by one token's K and V per token, which the
registry's default `cache_per_token` of 2*g*e states), and the mask hides the older keys. In a
ragged batch (requests of different lengths in one cache) each example's window ends at its own
length, read from the cache.
"""

from __future__ import annotations

import torch
from torch import Tensor

import attn_variants as av
from attn_variants import decode
from attn_variants.cache import KVCache, skips_attention

MISTRAL = "https://arxiv.org/abs/2310.06825"


def window_mask(lengths: Tensor, n: int, s: int, window: int) -> Tensor:
    """(b, 1, n, s) bool: example b's query t sits at position lengths[b] - n + t (its cache may
    be shorter than the frame of s keys: a ragged batch) and sees key j iff pos - W < j <= pos."""
    pos = lengths[:, None] - n + torch.arange(n, device=lengths.device)  # (b, n) query positions
    j = torch.arange(s, device=lengths.device)  # (s,) key positions
    return ((j <= pos[..., None]) & (j > pos[..., None] - window))[:, None]  # (b, 1, n, s)


@av.register(
    "swa",
    description="Sliding-window GQA (Mistral): each query reads the last `sliding_window` keys.",
    paper=MISTRAL,
    options={"sliding_window": 4096},  # Mistral 7B v0.1's window
)
class SlidingWindowGQA(av.GroupedQueryAttention):
    """forward(x (b, n, d), *, n_visual=0, modality=None, cache=None) -> (b, n, d)."""

    def __init__(self, spec: av.AttnSpec, *, backend: str = "sdpa", sliding_window: int = 4096) -> None:
        if not isinstance(sliding_window, int) or isinstance(sliding_window, bool) or sliding_window < 1:
            raise ValueError(f"sliding_window={sliding_window!r} must be a positive integer")
        super().__init__(spec, backend=backend)
        self.sliding_window = sliding_window

    def attend(self, q: Tensor, k: Tensor, v: Tensor, *, n_visual: int, cache: KVCache | None) -> Tensor:
        """q (b, h, n, e), k/v (b, g, s, e) -> (b, h, n, e), through the variant's backend."""
        if skips_attention(cache):  # KVCache.fill: keys and values are cached, the output unused
            return q.new_zeros(q.shape)  # (b, h, n, e)
        b, s = q.shape[0], k.shape[2]
        lengths = (
            cache.lengths_of("k", q.device) if cache is not None else torch.full((b,), s, device=q.device)
        )
        mask = window_mask(lengths, q.shape[2], s, self.sliding_window)  # (b, 1, n, s)
        # With a cache, the registry's one decode path (query heads as rows of their KV head),
        # so a decode step is timed on the same code as gqa's; else the backend itself.
        kernel = decode.kernel(self.backend_name) if cache is not None else self.backend
        return kernel(q, k, v, causal=False, dropout_p=self.dropout_p, mask=mask)
