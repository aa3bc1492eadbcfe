"""Sliding-window grouped-query attention, as in Mistral 7B (Jiang et al. 2023, arXiv 2310.06825).

Query i reads keys j with i - W < j <= i: a causal window of W tokens (Mistral's
`sliding_window`, 4096 in Mistral 7B v0.1), over GQA heads (8 KV heads for 32 query heads).
Projections are GQA's, named as in HF transformers' MistralAttention (q_proj, k_proj, v_proj,
o_proj), so its attention weights load by `state_dict`.

Departure: Mistral decodes with a rolling buffer that keeps only the last W keys. attnbench's
KVCache keeps every token (its `nbytes` grows by one token's K and V per token, which the
registry's default `cache_per_token` of 2*g*e states), and the mask hides the older keys.
"""

from __future__ import annotations

import torch
from torch import Tensor

import attn_variants as av
from attn_variants.cache import KVCache, skips_attention

MISTRAL = "https://arxiv.org/abs/2310.06825"


def window_mask(n: int, s: int, window: int, device: torch.device) -> Tensor:
    """(1, 1, n, s) bool: query i, at position s - n + i, may see key j iff i - W < j <= i."""
    i = torch.arange(s - n, s, device=device)[:, None]  # (n, 1) absolute query positions
    j = torch.arange(s, device=device)[None, :]  # (1, s)
    return ((j <= i) & (j > i - window))[None, None]  # (1, 1, n, s)


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
        mask = window_mask(q.shape[2], k.shape[2], self.sliding_window, q.device)  # (1, 1, n, s)
        return self.backend(q, k, v, causal=False, dropout_p=self.dropout_p, mask=mask)
