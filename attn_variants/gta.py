"""Grouped-tied attention, GTA (Zadouri, Strauss, Dao 2025, "Hardware-Efficient Attention for
Fast Decoding", arXiv 2505.21487, section 3.1).

Official code: Dao-AILab/grouped-latent-attention `modeling_llama_GTA.py`, class `LlamaFlashGTA`.
The parameters keep its names and shapes, so its attention state dicts load with strict=True:
  `q_proj` (d -> h*e), `kv_proj` (d -> g*e, the tied state), `W_rope_k` (d -> r, with bias:
  one rope key shared by every head), `o_proj` (h*e -> d); q/kv/o carry a bias iff
  `spec.bias` (the official `config.attention_bias`).

K and V of KV head j are tied to one state t_j = kv_proj(x)_j of width e:
  K_j = [t_j[:e-r]; RoPE(k_rope)],  V_j = t_j (all e numbers),
and query head i reads KV head i // (h/g), its last r dims rotated: q_i = [q_i[:e-r]; RoPE(q_i[e-r:])].
Scale e^-1/2 (the official flash_attn_func default for a head of width e). The cache holds
the tied state and one post-RoPE rope key per token: g*e + r numbers, fields "kv" (b, g, s, e)
and "pe" (b, 1, s, r); positions count the cached tokens.

Departures from the official code, and why:
- The rope key is cached once per token, not broadcast to all h heads before caching (the
  official `repeat(key_rope, 'b l 1 d -> b l h d')` precedes `past_key_value.update`, which
  stores h*r numbers per token where the paper's cache is g*e + r).
- The official decode path does not run: its (b, l, heads, e) tensors go into HF's
  DynamicCache, which concatenates along dim -2 (there the heads, not the tokens), and g KV
  heads next to h rope heads cannot be concatenated; here the cache is the harness's KVCache.
- RoPE is HF Llama's half-split convention with frequencies over r (attn_variants/rope.py);
  its angles and rotation run in float32, float64 for float64 inputs (official: cos and sin in
  float32, cast to the input dtype before rotating).
- The attention kernel is the variant's backend (sdpa or eager), not flash_attn_func. The
  key is built per call from the tied state and the rope key (K/V stay at g heads, GQA's
  enable_gqa): SDPA reads K and V apart, so this path moves the tied state twice, where the
  paper's decode kernel reads it once for both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from . import decode, ragged
from .backends import get_backend
from .cache import KVCache, skips_attention
from .modality import check_unimodal
from .registry import register
from .rope import apply_rope, check_rope_dim, check_theta
from .spec import AttnSpec

PAPER = "https://arxiv.org/abs/2505.21487"


def resolve_rope_dim(spec: AttnSpec, rope_dim: int | None) -> int:
    """The rope width r: e/2 unless given (the paper's GTA: "half of the head dimension")."""
    r = spec.head_dim // 2 if rope_dim is None else rope_dim
    check_rope_dim(r, spec.head_dim)
    return r


class GroupedTiedAttention(nn.Module):
    """GTA behind the variant contract: x (b, n, d) -> (b, n, d), optional KVCache."""

    def __init__(
        self,
        spec: AttnSpec,
        *,
        backend: str = "sdpa",
        rope_dim: int | None = None,
        rope_theta: float = 10000.0,
    ) -> None:
        super().__init__()
        check_theta(rope_theta)
        self.spec, self.backend_name, self.rope_theta = spec, backend, rope_theta
        self.backend = get_backend(backend)
        self.rope_dim = r = resolve_rope_dim(spec, rope_dim)
        d, h, g, e = spec.dim, spec.n_heads, spec.n_kv_heads, spec.head_dim
        self.q_proj = nn.Linear(d, h * e, bias=spec.bias)
        self.kv_proj = nn.Linear(d, g * e, bias=spec.bias)
        self.W_rope_k = nn.Linear(d, r)  # with bias, as the official nn.Linear(hidden, rope_dim)
        self.o_proj = nn.Linear(h * e, d, bias=spec.bias)

    def forward(
        self, x: Tensor, *, n_visual: int = 0, modality: Tensor | None = None, cache: KVCache | None = None
    ) -> Tensor:
        """x (b, n, d) -> (b, n, d). Unimodal: `n_visual` and `modality` are only validated."""
        check_unimodal(x, self.spec.dim, n_visual, modality)
        positions = ragged.positions(cache, "kv", x.shape[1], x.device)  # (n,), or (b, n) per example
        q, tied, k_rope = self.project(x, positions)  # (b, h, n, e), (b, g, n, e), (b, 1, n, r)
        if cache is not None:
            tied, k_rope = cache.append(2, kv=tied, pe=k_rope)  # (b, g, s, e), (b, 1, s, r)
        if skips_attention(cache):  # KVCache.fill: the tied state and rope key are cached
            o = q.new_zeros(q.shape)  # (b, h, n, e)
        else:
            o = self.attend(q, tied, k_rope, cache)  # (b, h, n, e)
        b, h, n, e = o.shape
        return self.o_proj(o.transpose(1, 2).reshape(b, n, h * e))  # (b, n, h*e) -> (b, n, d)

    def project(self, x: Tensor, positions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (b, n, d), positions (n,) or (b, n) -> q (b, h, n, e) with its last r dims rotated,
        the tied state t (b, g, n, e) and the rotated rope key (b, 1, n, r)."""
        b, n, _ = x.shape
        h, g, e, r = self.spec.n_heads, self.spec.n_kv_heads, self.spec.head_dim, self.rope_dim
        positions = positions[:, None] if positions.dim() == 2 else positions  # (b, 1, n) or (n,)
        q = self.q_proj(x).view(b, n, h, e).transpose(1, 2)  # (b, h, n, e)
        q_nope, q_rope = q.split([e - r, r], dim=-1)  # (b, h, n, e-r), (b, h, n, r)
        q = torch.cat([q_nope, apply_rope(q_rope, positions, self.rope_theta)], dim=-1)  # (b, h, n, e)
        tied = self.kv_proj(x).view(b, n, g, e).transpose(1, 2)  # (b, g, n, e)
        k_rope = apply_rope(self.W_rope_k(x)[:, None], positions, self.rope_theta)  # (b, 1, n, r)
        return q, tied, k_rope

    def attend(self, q: Tensor, tied: Tensor, k_rope: Tensor, cache: KVCache | None = None) -> Tensor:
        """q (b, h, n, e), tied (b, g, s, e), k_rope (b, 1, s, r) -> (b, h, n, e): K is the tied
        state's first e - r numbers then the shared rope key, V the whole tied state. With a
        cache, the registry's decode path (attn_variants/decode.py), each example over its own
        tokens when the cache is ragged (attn_variants/ragged.py)."""
        b, g, s, e = tied.shape
        r = self.rope_dim
        k = torch.cat([tied[..., : e - r], k_rope.expand(b, g, s, r)], dim=-1)  # (b, g, s, e)
        kernel = decode.kernel(self.backend_name) if cache is not None else self.backend
        if ragged.active(cache):
            return ragged.attend(
                kernel, q, k, tied, cache, field="kv", causal=self.spec.causal, dropout_p=self.dropout_p
            )
        return kernel(q, k, tied, causal=self.spec.causal, dropout_p=self.dropout_p)

    @property
    def dropout_p(self) -> float:
        return self.spec.dropout if self.training else 0.0

    def extra_repr(self) -> str:
        s, r = self.spec, self.rope_dim
        return f"h={s.n_heads}, g={s.n_kv_heads}, e={s.head_dim}, rope={r}, backend={self.backend_name}"


def cache_per_token(spec: AttnSpec, options: Mapping[str, Any]) -> int:
    """The registry's cache hook: g*e tied numbers and one rope key of r."""
    return spec.n_kv_heads * spec.head_dim + resolve_rope_dim(spec, options.get("rope_dim"))


def cache_per_device(spec: AttnSpec, options: Mapping[str, Any], tp: int) -> int:
    """Under tensor parallelism the tied heads split (ceil(g/tp) a device, one at least) and the
    rope key, read by every head, is replicated (arXiv 2505.21487, Table 5)."""
    return -(-spec.n_kv_heads // tp) * spec.head_dim + resolve_rope_dim(spec, options.get("rope_dim"))


register(
    "gta",
    description=(
        "Grouped-tied attention (Zadouri, Strauss, Dao 2025): one tied K/V state per KV head plus one "
        "rope key shared by all heads; caches g*e + r numbers per token (rope_dim r, default e/2)."
    ),
    paper=PAPER,
    options=dict(rope_dim=None, rope_theta=10000.0),
    cache_per_token=cache_per_token,
    cache_per_device=cache_per_device,
)(GroupedTiedAttention)
