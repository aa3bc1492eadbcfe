"""`KVCache`: keys and values of the tokens seen so far, for autoregressive decode."""

from __future__ import annotations

import torch
from torch import Tensor


class KVCache:
    """Holds g KV heads, not h: that is where MQA and GQA save memory at decode time.

    The buffers grow by doubling, so appending one token costs a slice write, not a copy of
    the whole cache (gpt-fast preallocates for the same reason). It is an inference cache:
    use it under `torch.no_grad()`.
    """

    def __init__(self) -> None:
        self._k: Tensor | None = None  # (b, g, capacity, e)
        self._v: Tensor | None = None  # (b, g, capacity, e)
        self.length = 0
        self.n_visual = 0  # leading visual tokens, remembered by multimodal variants

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append k, v (b, g, n_new, e); return every cached key and value (b, g, n, e)."""
        if self._k is not None and k.shape[:2] + k.shape[3:] != self._k.shape[:2] + self._k.shape[3:]:
            raise ValueError(
                f"new keys of shape {tuple(k.shape)} do not match the cache's "
                f"(b, g, *, e) = {tuple(self._k.shape[:2])} + (*, {self._k.shape[3]})"
            )
        end = self.length + k.shape[2]
        self._reserve(k, end)
        self._k[:, :, self.length : end] = k
        self._v[:, :, self.length : end] = v
        self.length = end
        return self.keys, self.values

    def _reserve(self, like: Tensor, end: int) -> None:
        if self._k is not None and end <= self._k.shape[2]:
            return
        capacity = max(end, 2 * (self._k.shape[2] if self._k is not None else 0))
        b, g, _, e = like.shape
        new_k = like.new_empty(b, g, capacity, e)  # (b, g, capacity, e)
        new_v = like.new_empty(b, g, capacity, e)
        if self._k is not None:
            new_k[:, :, : self.length] = self.keys
            new_v[:, :, : self.length] = self.values
        self._k, self._v = new_k, new_v

    @property
    def keys(self) -> Tensor:
        """Cached keys (b, g, n, e)."""
        return self._k[:, :, : self.length]

    @property
    def values(self) -> Tensor:
        """Cached values (b, g, n, e)."""
        return self._v[:, :, : self.length]

    def truncate(self, length: int) -> None:
        """Forget every token from `length` on (used to repeat a decode step from one state)."""
        if not 0 <= length <= self.length:
            raise ValueError(f"length={length} must be in [0, {self.length}]")
        self.length = length
        self.n_visual = min(self.n_visual, length)  # forgotten visual tokens are not visual keys

    @property
    def nbytes(self) -> int:
        """Bytes of the live keys and values: exactly 2*b*g*n*e*itemsize."""
        if self._k is None:
            return 0
        return 2 * self.keys.numel() * self._k.element_size()

    @staticmethod
    def bytes_for(batch: int, n_kv_heads: int, seq_len: int, head_dim: int, dtype: torch.dtype) -> int:
        """The analytic cache size 2*b*g*n*e*itemsize, for a cache not yet built."""
        itemsize = torch.empty((), dtype=dtype).element_size()
        return 2 * batch * n_kv_heads * seq_len * head_dim * itemsize
