"""Rotary position embedding in the HF Llama "half-split" convention (GTA and GLA).

RoFormer (Su et al., arXiv 2104.09864) rotates pairs of dimensions by p * theta_i. HF Llama's
`rotate_half` pairs dimension i with i + r/2 (not 2i with 2i + 1, DeepSeek's convention in
mla.py): x' = x * cos(p f) + rotate_half(x) * sin(p f), f = cat(inv_freq, inv_freq),
inv_freq_i = theta^(-2i/r), r the rotated width. Dao-AILab/grouped-latent-attention uses
this convention with the frequencies taken over the rope part's width r.

The angles are computed in float32 (HF forces float32 too), or float64 for float64 inputs, and
the rotation runs in that precision before casting back (HF casts cos/sin to the input dtype
first: the same numbers in float32 and float64, a rounding apart in bfloat16).
"""

from __future__ import annotations

import torch
from torch import Tensor


def check_rope_dim(rope_dim: object, head_dim: int) -> None:
    """rope_dim must be even (pairs rotate) and fit in a head."""
    if not isinstance(rope_dim, int) or isinstance(rope_dim, bool) or rope_dim <= 0 or rope_dim % 2:
        raise ValueError(f"rope_dim={rope_dim!r} must be a positive even integer (RoPE rotates pairs)")
    if rope_dim > head_dim:
        raise ValueError(f"rope_dim={rope_dim} is larger than the head dim e={head_dim}")


def check_theta(theta: object) -> None:
    if not isinstance(theta, int | float) or not theta > 0:
        raise ValueError(f"rope_theta={theta!r} must be positive")


def rotate_half(x: Tensor) -> Tensor:
    """(..., r) -> (..., r): [x1; x2] -> [-x2; x1], halves of width r/2."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: Tensor, positions: Tensor, theta: float) -> Tensor:
    """x (..., n, r), positions (n,) or broadcastable to x's (..., n) (a ragged batch's (b, 1, n))
    -> x rotated at those positions (HF Llama convention)."""
    r = x.shape[-1]
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    inv_freq = theta ** (-torch.arange(0, r, 2, dtype=dtype, device=x.device) / r)  # (r/2,)
    freqs = positions.to(dtype)[..., None] * inv_freq  # (..., n, r/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (..., n, r)
    xf = x.to(dtype)
    return (xf * emb.cos() + rotate_half(xf) * emb.sin()).to(x.dtype)  # (..., n, r)
