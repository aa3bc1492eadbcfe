"""Multi-head latent attention, MLA (DeepSeek-V2, arXiv 2405.04434, section 2.1).

Official code: deepseek-ai/DeepSeek-V3 `inference/model.py`, class `MLA`. The parameters keep its
names and shapes, with no biases, so its state dicts load with no conversion:
  q_lora_rank = 0: `wq` (d -> h*(nope+rope)); else `wq_a` (d -> q_lora), `q_norm`, `wq_b`;
  `wkv_a` (d -> kv_lora + rope), `kv_norm` (RMSNorm over kv_lora, eps 1e-6),
  `wkv_b` (kv_lora -> h*(nope + v)), `wo` (h*v -> d).

Every token is compressed to a latent c = kv_norm(wkv_a(x)[:kv_lora]) plus ONE rope key part
k_pe shared by all heads. The cache holds only c and k_pe (the official `kv_cache`/`pe_cache`):
b*n*(kv_lora + rope)*itemsize bytes, the KV cache of a GQA with (kv_lora + rope)/(2e) KV heads.

Two forms compute the same function (paper eq. 9-11 and its "absorb" remark):
- naive: k_nope, v = wkv_b(c) per head; k = [k_nope; k_pe]; softmax(q k^T (nope+rope)^-1/2) v;
- absorbed: W_UK folds into the query (q~ = q_nope W_UK, per head nope -> kv_lora) and W_UV
  into the output, so attention runs on the latent itself: an MQA (g = 1) whose key is
  [c; k_pe] and whose value is c. Decode then reads kv_lora + rope numbers per cached token.
Option `absorb`: "decode" (default: naive for prefill, absorbed when the call continues a
cache), "always" or "never". The naive form runs through the variant's backend (sdpa or
eager: `backend="eager", absorb="never"` is the plain reference path); the absorbed form is
the official code's arithmetic (scores = q~ c + q_pe k_pe, then p c W_UV^T), with the h*n
queries as the rows of the one latent head (the decode path's rows layout, decode.py), which
reads the cached latent in place: an SDPA call would need [c; k_pe] concatenated, a copy of the
whole cache at every decode step, and (value width kv_lora != key width) the math kernel on CPU.

Departures from the official code, and why:
- RoPE is the official convention (consecutive pairs (2i, 2i+1) rotated by p*theta_i,
  theta_i = rope_theta^(-2i/rope), p the absolute position counting cached tokens) but written
  in real arithmetic, not `view_as_complex`: the same numbers, and it runs on the meta device,
  under FakeTensorMode and torch.compile without complex tensors. Angles are computed in
  float32, or float64 for float64 inputs (official: always float32), so float64 checks are exact.
- No YaRN (rope_factor, mscale): the context here never exceeds the original length.
- The naive form pads v with zero columns to the query width for the fused SDPA kernels and
  slices the output back (as HF's DeepSeek-V2 port does for flash-attn).
- The naive form's softmax runs in the backend (official: float32 then cast back; the
  absorbed form keeps the official float32 softmax, float64 for float64 inputs).
- No fp8 weights (`scale`, `weight_dequant`), no tensor parallelism, no fixed-size buffers:
  the cache is the harness's `KVCache` with fields "kv" (b, s, kv_lora) and "pe" (b, s, rope).
- The naive form caches the latent too (official naive mode caches full k and v): one cache
  layout, so prefill and decode may use different forms.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import decode, ragged
from .backends import get_backend
from .cache import KVCache, skips_attention
from .modality import check_unimodal
from .registry import register, with_kv_heads
from .spec import AttnSpec

PAPER = "https://arxiv.org/abs/2405.04434"
Absorb = Literal["decode", "always", "never"]
ABSORB: tuple[Absorb, ...] = ("decode", "always", "never")
NORM_EPS = 1e-6  # the official RMSNorm's eps


@dataclass(frozen=True)
class MLADims:
    """The resolved sizes. None options take DeepSeek-V2's proportions to e = d/h:
    kv_lora = 4e (512 for e = 128), nope = v = e (128), rope = e/2 (64)."""

    kv_lora_rank: int
    q_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int
    rope_theta: float

    @classmethod
    def resolve(cls, spec: AttnSpec, options: Mapping[str, Any]) -> MLADims:
        e = spec.head_dim
        derived = dict(kv_lora_rank=4 * e, qk_nope_head_dim=e, qk_rope_head_dim=e // 2, v_head_dim=e)
        sizes = {k: options.get(k) if options.get(k) is not None else v for k, v in derived.items()}
        dims = cls(
            q_lora_rank=options.get("q_lora_rank", 0), rope_theta=options.get("rope_theta", 1e4), **sizes
        )
        dims.check()
        return dims

    def check(self) -> None:
        for name in ("kv_lora_rank", "qk_rope_head_dim", "v_head_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        for name in ("q_lora_rank", "qk_nope_head_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}={value!r} must be an integer >= 0")
        if self.qk_rope_head_dim % 2:
            raise ValueError(f"qk_rope_head_dim={self.qk_rope_head_dim} must be even (RoPE rotates pairs)")
        if not self.rope_theta > 0:
            raise ValueError(f"rope_theta={self.rope_theta!r} must be positive")

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def cache_per_token(self) -> int:
        """Cached numbers per token: the latent and the shared rope key."""
        return self.kv_lora_rank + self.qk_rope_head_dim


def apply_rotary_emb(x: Tensor, positions: Tensor, theta: float) -> Tensor:
    """x (..., n, r), positions (n,) or broadcastable to x's (..., n) (a ragged batch's (b, n))
    -> x with pairs (2i, 2i+1) rotated by p*theta^(-2i/r), DeepSeek's convention
    (`precompute_freqs_cis` / `apply_rotary_emb`) in real arithmetic."""
    r = x.shape[-1]
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    inv_freq = theta ** (-torch.arange(0, r, 2, dtype=dtype, device=x.device) / r)  # (r/2,)
    angles = positions.to(dtype)[..., None] * inv_freq  # (..., n, r/2)
    cos, sin = angles.cos(), angles.sin()
    pairs = x.to(dtype).unflatten(-1, (r // 2, 2))  # (..., n, r/2, 2)
    x0, x1 = pairs.unbind(-1)  # (..., n, r/2) each
    rotated = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1)  # (..., n, r/2, 2)
    return rotated.flatten(-2).to(x.dtype)  # (..., n, r)


class MultiHeadLatentAttention(nn.Module):
    """MLA behind the variant contract: x (b, n, d) -> (b, n, d), optional KVCache."""

    def __init__(
        self,
        spec: AttnSpec,
        *,
        backend: str = "sdpa",
        kv_lora_rank: int | None = None,
        q_lora_rank: int = 0,
        qk_nope_head_dim: int | None = None,
        qk_rope_head_dim: int | None = None,
        v_head_dim: int | None = None,
        rope_theta: float = 10000.0,
        absorb: Absorb = "decode",
    ) -> None:
        super().__init__()
        if spec.bias:
            raise ValueError("mla has no biases (as DeepSeek's MLA); got bias=True")
        if absorb not in ABSORB:
            raise ValueError(f"absorb={absorb!r} is not one of {list(ABSORB)}")
        options = dict(
            kv_lora_rank=kv_lora_rank, q_lora_rank=q_lora_rank, qk_nope_head_dim=qk_nope_head_dim,
            qk_rope_head_dim=qk_rope_head_dim, v_head_dim=v_head_dim, rope_theta=rope_theta,
        )  # fmt: skip
        self.spec, self.absorb, self.backend_name = spec, absorb, backend
        self.backend = get_backend(backend)
        self.dims = t = MLADims.resolve(spec, options)
        d, h = spec.dim, spec.n_heads
        if t.q_lora_rank == 0:
            self.wq = nn.Linear(d, h * t.qk_head_dim, bias=False)
        else:
            self.wq_a = nn.Linear(d, t.q_lora_rank, bias=False)
            self.q_norm = nn.RMSNorm(t.q_lora_rank, eps=NORM_EPS)
            self.wq_b = nn.Linear(t.q_lora_rank, h * t.qk_head_dim, bias=False)
        self.wkv_a = nn.Linear(d, t.kv_lora_rank + t.qk_rope_head_dim, bias=False)
        self.kv_norm = nn.RMSNorm(t.kv_lora_rank, eps=NORM_EPS)
        self.wkv_b = nn.Linear(t.kv_lora_rank, h * (t.qk_nope_head_dim + t.v_head_dim), bias=False)
        self.wo = nn.Linear(h * t.v_head_dim, d, bias=False)

    def forward(
        self, x: Tensor, *, n_visual: int = 0, modality: Tensor | None = None, cache: KVCache | None = None
    ) -> Tensor:
        """x (b, n, d) -> (b, n, d). Unimodal: `n_visual` and `modality` (b, n) are only
        validated (the concat baseline reads any layout as one causal stream)."""
        check_unimodal(x, self.spec.dim, n_visual, modality)
        start = cache.field_length("kv") if cache is not None else 0  # tokens cached: a shape, no sync
        positions = ragged.positions(cache, "kv", x.shape[1], x.device)  # (n,), or (b, n) per example
        q_nope, q_pe = self.queries(x, positions)  # (b, h, n, nope), (b, h, n, rope)
        c, k_pe = self.latent(x, positions)  # (b, n, kv_lora), (b, n, rope)
        if cache is not None:
            c, k_pe = cache.append(1, kv=c, pe=k_pe)  # (b, s, kv_lora), (b, s, rope)
        absorbed = self.absorb == "always" or (self.absorb == "decode" and start > 0)
        form = self.attend_absorbed if absorbed else self.attend_naive
        if skips_attention(cache):  # KVCache.fill: the latent and rope key are cached
            form = self.attend_none
        o = form(q_nope, q_pe, c, k_pe, cache if ragged.active(cache) else None)  # (b, h, n, v)
        b, h, n, v = o.shape
        return self.wo(o.transpose(1, 2).reshape(b, n, h * v))  # (b, n, h*v) -> (b, n, d)

    def queries(self, x: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
        """x (b, n, d), positions (n,) or (b, n) -> q_nope (b, h, n, nope) and q_pe (b, h, n, rope)
        after RoPE."""
        t, (b, n, _) = self.dims, x.shape
        q = (
            self.wq(x) if t.q_lora_rank == 0 else self.wq_b(self.q_norm(self.wq_a(x)))
        )  # (b, n, h*(nope+rope))
        q = q.view(b, n, self.spec.n_heads, t.qk_head_dim).transpose(1, 2)  # (b, h, n, nope+rope)
        q_nope, q_pe = q.split([t.qk_nope_head_dim, t.qk_rope_head_dim], dim=-1)
        per_head = positions[:, None] if positions.dim() == 2 else positions  # (b, 1, n) or (n,)
        return q_nope, apply_rotary_emb(q_pe, per_head, t.rope_theta)

    def latent(self, x: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
        """x (b, n, d) -> c = kv_norm(latent) (b, n, kv_lora) and k_pe (b, n, rope) after RoPE."""
        t = self.dims
        c, k_pe = self.wkv_a(x).split([t.kv_lora_rank, t.qk_rope_head_dim], dim=-1)
        return self.kv_norm(c), apply_rotary_emb(k_pe, positions, t.rope_theta)

    def attend_naive(
        self, q_nope: Tensor, q_pe: Tensor, c: Tensor, k_pe: Tensor, cache: KVCache | None = None
    ) -> Tensor:
        """Decompress every key and value per head, then the backend, scale (nope+rope)^-1/2.
        `cache`: a ragged one, each example over its own tokens (attn_variants/ragged.py)."""
        t, h = self.dims, self.spec.n_heads
        b, s, _ = c.shape
        kv = self.wkv_b(c).view(b, s, h, -1).transpose(1, 2)  # (b, h, s, nope+v)
        k_nope, v = kv.split([t.qk_nope_head_dim, t.v_head_dim], dim=-1)  # (b, h, s, nope), (b, h, s, v)
        k_pe = k_pe[:, None].expand(b, h, s, t.qk_rope_head_dim)  # (b, h, s, rope): one for all heads
        k = torch.cat([k_nope, k_pe], dim=-1)  # (b, h, s, nope+rope)
        q = torch.cat([q_nope, q_pe], dim=-1)  # (b, h, n, nope+rope)
        # Fused kernels (CPU flash, CUDA flash) need v as wide as q and k; without this SDPA falls
        # back to its math kernel. Zero columns change nothing (HF's DeepSeek-V2 pads the same way).
        pad = max(0, t.qk_head_dim - t.v_head_dim)
        v = F.pad(v, (0, pad)) if pad else v  # (b, h, s, max(v, nope+rope))
        if cache is not None:
            o = ragged.attend(
                self.backend, q, k, v, cache, field="kv", causal=self.spec.causal, dropout_p=self.dropout_p
            )
        else:
            o = self.backend(q, k, v, causal=self.spec.causal, dropout_p=self.dropout_p)
        return o[..., : t.v_head_dim]  # (b, h, n, v)

    def attend_none(
        self, q_nope: Tensor, q_pe: Tensor, c: Tensor, k_pe: Tensor, cache: object = None
    ) -> Tensor:
        """Zeros (b, h, n, v) in place of the attention, inside `KVCache.fill`."""
        return q_nope.new_zeros(*q_nope.shape[:-1], self.dims.v_head_dim)

    def attend_absorbed(
        self, q_nope: Tensor, q_pe: Tensor, c: Tensor, k_pe: Tensor, cache: KVCache | None = None
    ) -> Tensor:
        """Attention on the latent, W_UK folded into the query and W_UV into the output (the
        official einsums' arithmetic): no per-head key or value, no copy of the cache. `cache`:
        a ragged one, whose padding is masked out of the scores.

        This is the decode path's rows layout (attn_variants/decode.py) for one KV head: the
        latent is an MQA's single head, so the h*n queries are its rows, (b, h*n, kv_lora)
        against (b, s, kv_lora), one matmul over the cache per part. It does not call
        `decode.attend`: a backend call would need the key [c; k_pe] as one tensor (a copy of
        the cache per step) and a value as wide as the key (CPU flash requires it; math copies
        the scaled key). The scale is folded into the (small) queries and the rope part of the
        scores is added in place (baddbmm), so no (b, h, n, s) pass is spent on either."""
        t, h = self.dims, self.spec.n_heads
        b, _, n, _ = q_nope.shape
        s = c.shape[1]
        w = self.wkv_b.weight.view(h, -1, t.kv_lora_rank)  # (h, nope+v, kv_lora)
        w_uk, w_uv = w.split([t.qk_nope_head_dim, t.v_head_dim], dim=1)  # (h, nope, c), (h, v, c)
        scale = t.qk_head_dim**-0.5
        q_lat = torch.einsum("bhnd,hdc->bhnc", q_nope, w_uk) * scale  # (b, h, n, kv_lora)
        q_rope = (q_pe * scale).reshape(b, h * n, t.qk_rope_head_dim)  # (b, h*n, rope)
        pe_scores = torch.bmm(q_rope, k_pe.transpose(1, 2))  # (b, h*n, s)
        scores = torch.baddbmm(pe_scores, q_lat.reshape(b, h * n, -1), c.transpose(1, 2))  # (b, h*n, s)
        lengths = None if cache is None else cache.lengths_of("kv", c.device)  # (b,): a ragged batch
        mask = self._rows_mask(lengths, n, s, scores.device)  # (b or 1, 1, h*n, s) or None
        if mask is not None:  # example i's query t sits at lengths[i] - n + t (else s - n + t)
            scores = scores.masked_fill(~mask[:, 0], float("-inf"))
        probs = scores.softmax(dim=-1, dtype=torch.promote_types(scores.dtype, torch.float32))
        probs = F.dropout(probs.to(scores.dtype), p=self.dropout_p)  # (b, h*n, s)
        o_lat = torch.bmm(probs, c).view(b, h, n, t.kv_lora_rank)  # (b, h*n, kv_lora) -> (b, h, n, kv_lora)
        return torch.einsum("bhnc,hvc->bhnv", o_lat, w_uv)  # (b, h, n, v)

    def _rows_mask(self, lengths: Tensor | None, n: int, s: int, device: torch.device) -> Tensor | None:
        """Which keys each of the h*n query rows sees: the causal rule, or each example's own
        keys in a ragged batch (lengths (b,)); None when every row sees every key."""
        h = self.spec.n_heads
        if lengths is None:
            return decode.rows_mask(None, self.spec.causal, h, n, s, device)
        keys = ragged.key_mask(lengths, n, s, causal=self.spec.causal)  # (b, 1, n, s)
        return decode.rows_mask(keys, False, h, n, s, device)  # (b, 1, h*n, s)

    @property
    def dropout_p(self) -> float:
        return self.spec.dropout if self.training else 0.0

    def extra_repr(self) -> str:
        t = self.dims
        return (
            f"h={self.spec.n_heads}, kv_lora={t.kv_lora_rank}, q_lora={t.q_lora_rank}, "
            f"nope={t.qk_nope_head_dim}, rope={t.qk_rope_head_dim}, v={t.v_head_dim}, "
            f"absorb={self.absorb}, backend={self.backend_name}"
        )


def cache_per_token(spec: AttnSpec, options: Mapping[str, Any]) -> int:
    """The registry's cache hook: kv_lora + rope numbers per token, whatever g is."""
    return MLADims.resolve(spec, options).cache_per_token


register(
    "mla",
    description=(
        "Multi-head latent attention (DeepSeek-V2): caches a shared latent and rope key, not K/V. "
        "Sizes left None follow DeepSeek's proportions: kv_lora=4e, nope=v=e, rope=e/2."
    ),
    paper=PAPER,
    options=dict(
        kv_lora_rank=None,
        q_lora_rank=0,
        qk_nope_head_dim=None,
        qk_rope_head_dim=None,
        v_head_dim=None,
        rope_theta=10000.0,
        absorb="decode",
    ),  # fmt: skip
    # g has no meaning for MLA: fixing it to h makes the sweep run it once per (n, h); every
    # head does get its own decompressed key and value in the naive form.
    preset=with_kv_heads(lambda s: s.n_heads),
    uses_kv_heads=False,
    cache_per_token=cache_per_token,
)(MultiHeadLatentAttention)
