"""`AttnSpec`: the shape every variant is built from, validated once."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AttnSpec:
    """Sizes shared by every attention variant.

    dim is d, n_heads is h, n_kv_heads is g (None means g = h, plain MHA, as in HF
    transformers' `num_key_value_heads`); head_dim e = d // h is derived.
    """

    dim: int
    n_heads: int
    n_kv_heads: int | None = None
    causal: bool = True
    dropout: float = 0.0  # attention-probability dropout, applied in training only
    bias: bool = False  # nanoGPT/LLaMA style projections carry no bias by default

    def __post_init__(self) -> None:
        if self.n_kv_heads is None:
            object.__setattr__(self, "n_kv_heads", self.n_heads)
        for field in ("dim", "n_heads", "n_kv_heads"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{field}={value!r} must be a positive integer")
        if self.dim % self.n_heads:
            raise ValueError(f"dim={self.dim} is not divisible by n_heads={self.n_heads}")
        if self.n_kv_heads > self.n_heads:
            raise ValueError(f"n_kv_heads={self.n_kv_heads} is larger than n_heads={self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads={self.n_heads} is not divisible by n_kv_heads={self.n_kv_heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout} must be in [0, 1)")

    @property
    def head_dim(self) -> int:
        """e, the width of one head."""
        return self.dim // self.n_heads

    @property
    def group_size(self) -> int:
        """h / g, the number of query heads that share one KV head in plain GQA."""
        return self.n_heads // self.n_kv_heads
