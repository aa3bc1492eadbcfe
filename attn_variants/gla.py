"""Grouped latent attention, GLA (Zadouri, Strauss, Dao 2025, "Hardware-Efficient Attention for
Fast Decoding", arXiv 2505.21487, section 3.2).

Official code: Dao-AILab/grouped-latent-attention `modeling_llama_GLA.py`, class `LlamaFlashGLA`.
The parameters keep its names and shapes, so its attention state dicts load with strict=True
(L latent heads, 2 in the paper's GLA-2 and the official code; kv = kv_proj_dim, default 4e;
q_lat = q_proj_dim, default 8e; r = rope_dim, default e/2):
  `W_dQ` (d -> q_lat), `q_norm` (RMSNorm over q_lat), `W_uQ_rope` (q_lat -> h*(e + r)),
  `W_dKV` (d -> kv + r), `kv_norm_1` .. `kv_norm_L` (RMSNorm over kv/L each, eps 1e-6),
  `W_ukv_1` .. `W_ukv_L` (kv/L -> (h/L)*2e: per head e key then e value numbers), `o_proj`
  (h*e -> d). The `W_*` layers carry biases (the official nn.Linear defaults); `o_proj` one
  iff `spec.bias` (the official `config.attention_bias`).

Every token is compressed into L latent heads c_l = kv_norm_l(W_dKV(x)[l-th kv/L slice]) plus
ONE rope key k_pe = RoPE(W_dKV(x)[kv:]) shared by all heads. Query heads [l*h/L, (l+1)*h/L)
read latent l. Scale (e + r)^-1/2. The cache holds the L latents and the rope key: kv + r
numbers per token, fields "kv" (b, L, s, kv/L) and "pe" (b, 1, s, r).

Two forms compute the same function, as in mla.py:
- naive: k_nope, v = W_ukv_l(c_l) per head; k = [k_nope; k_pe]; softmax(q k^T (e+r)^-1/2) v;
- absorbed: W_uK folds into the query and W_uV into the output, so attention runs on the latents
  themselves, L "KV heads" of key [c_l; k_pe] and value c_l. The key bias of W_ukv adds q . b_k
  to every score of a query row, which softmax ignores; the value bias adds b_v to each output
  (the weights sum to one): both are exact.
Option `absorb`: "decode" (default: naive for prefill, absorbed when the call continues a cache),
"always" or "never". The naive form runs through the backend (`backend="eager", absorb="never"`
is the plain reference path); the absorbed form is einsums over the cached latents in place.

Departures from the official code, and why:
- The official decode path raises on its first step (its per-head up-projection views the
  cached latent, s tokens, as q_len tokens); here prefill and decode share one cache.
- The cache holds each latent after its kv_norm and the rope key after RoPE (official: before
  both, so cached keys were rotated at the current step's positions). Same count of numbers.
- RMSNorm is torch's nn.RMSNorm in the input dtype (official: float32, cast back before the
  weight), RoPE as in gta.py (attn_variants/rope.py): equal in float32 and float64.
- The naive form pads v with zero columns to the query width, as the official code does for
  flash-attn, and runs the variant's backend (sdpa or eager) instead of flash_attn_func.
- The number of latent heads L and the latent widths are options (the official code fixes
  L = 2, kv = 4e, q_lat = 8e).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import ragged
from .backends import causal_mask, get_backend
from .cache import KVCache, skips_attention
from .modality import check_unimodal
from .registry import register, with_kv_heads
from .rope import apply_rope, check_rope_dim, check_theta
from .spec import AttnSpec

PAPER = "https://arxiv.org/abs/2505.21487"
Absorb = Literal["decode", "always", "never"]
ABSORB: tuple[Absorb, ...] = ("decode", "always", "never")
NORM_EPS = 1e-6  # LlamaConfig's rms_norm_eps, which the official q_norm and kv_norm_* take


@dataclass(frozen=True)
class GLADims:
    """The resolved sizes; None options take the official proportions to e."""

    n_latent_heads: int  # L
    kv_proj_dim: int  # all L latents together
    q_proj_dim: int
    rope_dim: int  # r

    @classmethod
    def resolve(cls, spec: AttnSpec, options: Mapping[str, Any]) -> GLADims:
        e = spec.head_dim
        get = lambda k, default: default if options.get(k) is None else options[k]  # noqa: E731
        dims = cls(
            get("n_latent_heads", 2),
            get("kv_proj_dim", 4 * e),
            get("q_proj_dim", 8 * e),
            get("rope_dim", e // 2),
        )
        dims.check(spec)
        return dims

    def check(self, spec: AttnSpec) -> None:
        for name in ("n_latent_heads", "kv_proj_dim", "q_proj_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        check_rope_dim(self.rope_dim, spec.head_dim)
        if spec.n_heads % self.n_latent_heads:
            raise ValueError(
                f"n_heads={spec.n_heads} is not divisible by n_latent_heads={self.n_latent_heads}"
            )
        if self.kv_proj_dim % self.n_latent_heads:
            raise ValueError(
                f"kv_proj_dim={self.kv_proj_dim} is not divisible by n_latent_heads={self.n_latent_heads}"
            )

    @property
    def latent_dim(self) -> int:
        """The width of one latent head, kv/L (2e at the official sizes)."""
        return self.kv_proj_dim // self.n_latent_heads

    @property
    def cache_per_token(self) -> int:
        return self.kv_proj_dim + self.rope_dim


class GroupedLatentAttention(nn.Module):
    """GLA behind the variant contract: x (b, n, d) -> (b, n, d), optional KVCache."""

    def __init__(
        self,
        spec: AttnSpec,
        *,
        backend: str = "sdpa",
        n_latent_heads: int = 2,
        kv_proj_dim: int | None = None,
        q_proj_dim: int | None = None,
        rope_dim: int | None = None,
        rope_theta: float = 10000.0,
        absorb: Absorb = "decode",
    ) -> None:
        super().__init__()
        if absorb not in ABSORB:
            raise ValueError(f"absorb={absorb!r} is not one of {list(ABSORB)}")
        check_theta(rope_theta)
        sizes = dict(
            n_latent_heads=n_latent_heads, kv_proj_dim=kv_proj_dim, q_proj_dim=q_proj_dim, rope_dim=rope_dim
        )
        self.dims = t = GLADims.resolve(spec, sizes)
        self.spec, self.absorb, self.rope_theta, self.backend_name = spec, absorb, rope_theta, backend
        self.backend = get_backend(backend)
        d, h, e, r = spec.dim, spec.n_heads, spec.head_dim, t.rope_dim
        self.W_dQ = nn.Linear(d, t.q_proj_dim)
        self.q_norm = nn.RMSNorm(t.q_proj_dim, eps=NORM_EPS)
        self.W_uQ_rope = nn.Linear(t.q_proj_dim, h * (e + r))
        self.W_dKV = nn.Linear(d, t.kv_proj_dim + r)
        for i in range(1, t.n_latent_heads + 1):  # official names kv_norm_1, W_ukv_1, kv_norm_2, ...
            setattr(self, f"kv_norm_{i}", nn.RMSNorm(t.latent_dim, eps=NORM_EPS))
            setattr(self, f"W_ukv_{i}", nn.Linear(t.latent_dim, h // t.n_latent_heads * 2 * e))
        self.o_proj = nn.Linear(h * e, d, bias=spec.bias)

    def latent_modules(self, name: str) -> list[nn.Module]:
        """`kv_norm` or `W_ukv` of latents 1..L, in order."""
        return [getattr(self, f"{name}_{i}") for i in range(1, self.dims.n_latent_heads + 1)]

    def forward(
        self, x: Tensor, *, n_visual: int = 0, modality: Tensor | None = None, cache: KVCache | None = None
    ) -> Tensor:
        """x (b, n, d) -> (b, n, d). Unimodal: `n_visual` and `modality` are only validated."""
        check_unimodal(x, self.spec.dim, n_visual, modality)
        start = cache.field_length("kv") if cache is not None else 0  # tokens cached: a shape, no sync
        positions = ragged.positions(cache, "kv", x.shape[1], x.device)  # (n,), or (b, n) per example
        q_nope, q_pe = self.queries(x, positions)  # (b, h, n, e), (b, h, n, r)
        c, k_pe = self.latents(x, positions)  # (b, L, n, kv/L), (b, 1, n, r)
        if cache is not None:
            c, k_pe = cache.append(2, kv=c, pe=k_pe)  # (b, L, s, kv/L), (b, 1, s, r)
        absorbed = self.absorb == "always" or (self.absorb == "decode" and start > 0)
        form = self.attend_absorbed if absorbed else self.attend_naive
        if skips_attention(cache):  # KVCache.fill: the latents and rope key are cached
            form = self.attend_none
        o = form(q_nope, q_pe, c, k_pe, cache if ragged.active(cache) else None)  # (b, h, n, e)
        b, h, n, e = o.shape
        return self.o_proj(o.transpose(1, 2).reshape(b, n, h * e))  # (b, n, h*e) -> (b, n, d)

    def queries(self, x: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
        """x (b, n, d), positions (n,) or (b, n) -> q_nope (b, h, n, e), q_pe (b, h, n, r) after RoPE."""
        (b, n, _), e, r = x.shape, self.spec.head_dim, self.dims.rope_dim
        q = self.W_uQ_rope(self.q_norm(self.W_dQ(x)))  # (b, n, h*(e+r))
        q = q.view(b, n, self.spec.n_heads, e + r).transpose(1, 2)  # (b, h, n, e+r)
        q_nope, q_pe = q.split([e, r], dim=-1)
        per_head = positions[:, None] if positions.dim() == 2 else positions  # (b, 1, n) or (n,)
        return q_nope, apply_rope(q_pe, per_head, self.rope_theta)

    def latents(self, x: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
        """x (b, n, d) -> the normalised latents c (b, L, n, kv/L) and k_pe (b, 1, n, r) after RoPE."""
        t = self.dims
        c, k_pe = self.W_dKV(x).split([t.kv_proj_dim, t.rope_dim], dim=-1)  # (b, n, kv), (b, n, r)
        parts = c.split(t.latent_dim, dim=-1)  # L x (b, n, kv/L)
        c = torch.stack([norm(p) for norm, p in zip(self.latent_modules("kv_norm"), parts, strict=True)], 1)
        per_head = positions[:, None] if positions.dim() == 2 else positions  # (b, 1, n) or (n,)
        return c, apply_rope(k_pe[:, None], per_head, self.rope_theta)  # (b, L, n, kv/L), (b, 1, n, r)

    def up_projection(self) -> tuple[Tensor, Tensor, Tensor]:
        """Every latent's W_ukv as w_uk, w_uv (L, h/L, e, kv/L) and the value bias b_uv (L, h/L, e)."""
        e, h, L = self.spec.head_dim, self.spec.n_heads, self.dims.n_latent_heads
        ups = self.latent_modules("W_ukv")
        w = torch.stack([m.weight for m in ups]).view(
            L, h // L, 2, e, self.dims.latent_dim
        )  # (L, h/L, 2, e, c)
        bias = torch.stack([m.bias for m in ups]).view(L, h // L, 2, e)  # (L, h/L, 2, e)
        return w[:, :, 0], w[:, :, 1], bias[:, :, 1]

    def attend_naive(
        self, q_nope: Tensor, q_pe: Tensor, c: Tensor, k_pe: Tensor, cache: KVCache | None = None
    ) -> Tensor:
        """Decompress every key and value per head, then the backend, scale (e+r)^-1/2. `cache`: a
        ragged one, each example over its own tokens (attn_variants/ragged.py)."""
        (b, L, s, _), h, e, r = c.shape, self.spec.n_heads, self.spec.head_dim, self.dims.rope_dim
        kv = torch.stack(
            [up(c[:, i]) for i, up in enumerate(self.latent_modules("W_ukv"))], 1
        )  # (b, L, s, h/L*2e)
        kv = kv.view(b, L, s, h // L, 2 * e).permute(0, 1, 3, 2, 4).reshape(b, h, s, 2 * e)  # (b, h, s, 2e)
        k_nope, v = kv.split([e, e], dim=-1)  # (b, h, s, e) each; head i from latent i // (h/L)
        k = torch.cat([k_nope, k_pe.expand(b, h, s, r)], dim=-1)  # (b, h, s, e+r)
        q = torch.cat([q_nope, q_pe], dim=-1)  # (b, h, n, e+r)
        v = F.pad(v, (0, r))  # (b, h, s, e+r): zero columns, as the official code pads for flash-attn
        if cache is not None:
            o = ragged.attend(
                self.backend, q, k, v, cache, field="kv", causal=self.spec.causal, dropout_p=self.dropout_p
            )
        else:
            o = self.backend(q, k, v, causal=self.spec.causal, dropout_p=self.dropout_p)
        return o[..., :e]  # (b, h, n, e)

    def attend_none(
        self, q_nope: Tensor, q_pe: Tensor, c: Tensor, k_pe: Tensor, cache: object = None
    ) -> Tensor:
        """Zeros (b, h, n, e) in place of the attention, inside `KVCache.fill`."""
        return torch.zeros_like(q_nope)

    def attend_absorbed(
        self, q_nope: Tensor, q_pe: Tensor, c: Tensor, k_pe: Tensor, cache: KVCache | None = None
    ) -> Tensor:
        """Attention on the latents, W_uK folded into the query and W_uV into the output: no
        per-head key or value, no copy of the cache. `cache`: a ragged one, its padding masked."""
        (b, h, n, e), L = q_nope.shape, self.dims.n_latent_heads
        w_uk, w_uv, b_uv = self.up_projection()  # (L, h/L, e, c) twice, (L, h/L, e)
        q_nope = q_nope.view(b, L, h // L, n, e)  # (b, L, h/L, n, e): query head i reads latent i // (h/L)
        q_pe = q_pe.view(b, L, h // L, n, -1)  # (b, L, h/L, n, r)
        q_lat = torch.einsum("blgne,lgec->blgnc", q_nope, w_uk)  # (b, L, h/L, n, c)
        scores = torch.einsum("blgnc,blsc->blgns", q_lat, c) + torch.einsum(
            "blgnr,bsr->blgns", q_pe, k_pe[:, 0]
        )
        scores = scores * (e + self.dims.rope_dim) ** -0.5  # (b, L, h/L, n, s)
        s = scores.shape[-1]
        if cache is not None:  # example i's query t sits at lengths[i] - n + t
            mask = ragged.key_mask(cache.lengths_of("kv", c.device), n, s, causal=self.spec.causal)
            scores = scores.masked_fill(~mask[:, :, None], float("-inf"))  # (b, L, h/L, n, s)
        elif self.spec.causal and n > 1:  # query i sits at s - n + i (bottom-right aligned)
            scores = scores.masked_fill(~causal_mask(n, s, scores.device), float("-inf"))
        probs = scores.softmax(dim=-1, dtype=torch.promote_types(scores.dtype, torch.float32))
        probs = F.dropout(probs.to(scores.dtype), p=self.dropout_p)  # (b, L, h/L, n, s)
        o_lat = torch.einsum("blgns,blsc->blgnc", probs, c)  # (b, L, h/L, n, c)
        o = torch.einsum("blgnc,lgec->blgne", o_lat, w_uv) + b_uv[None, :, :, None]  # (b, L, h/L, n, e)
        return o.reshape(b, h, n, e)  # (b, h, n, e)

    @property
    def dropout_p(self) -> float:
        return self.spec.dropout if self.training else 0.0

    def extra_repr(self) -> str:
        t = self.dims
        return (
            f"h={self.spec.n_heads}, latent_heads={t.n_latent_heads}, kv={t.kv_proj_dim}, "
            f"q_lat={t.q_proj_dim}, rope={t.rope_dim}, absorb={self.absorb}, backend={self.backend_name}"
        )


def cache_per_token(spec: AttnSpec, options: Mapping[str, Any]) -> int:
    """The registry's cache hook: the L latents (kv numbers) and one rope key, whatever g is."""
    return GLADims.resolve(spec, options).cache_per_token


def cache_per_device(spec: AttnSpec, options: Mapping[str, Any], tp: int) -> int:
    """Under tensor parallelism the latent heads split while there are enough of them (ceil(L/tp)
    a device, one at least, with the query heads that read it) and the rope key is replicated
    (arXiv 2505.21487, section 3.3: GLA-2 at TP=2 holds one latent head a device)."""
    t = GLADims.resolve(spec, options)
    return -(-t.n_latent_heads // tp) * t.latent_dim + t.rope_dim


register(
    "gla",
    description=(
        "Grouped latent attention (Zadouri, Strauss, Dao 2025): MLA's latent split into n_latent_heads "
        "(GLA-2), each read by its share of the query heads; caches kv_proj_dim + r numbers per token "
        "(defaults 4e + e/2)."
    ),
    paper=PAPER,
    options=dict(
        n_latent_heads=2,
        kv_proj_dim=None,
        q_proj_dim=None,
        rope_dim=None,
        rope_theta=10000.0,
        absorb="decode",
    ),  # fmt: skip
    # g has no meaning for GLA (its latent heads are n_latent_heads): fixing it to h makes the
    # sweep run it once per (n, h), as mla.
    preset=with_kv_heads(lambda s: s.n_heads),
    uses_kv_heads=False,
    cache_per_token=cache_per_token,
    cache_per_device=cache_per_device,
)(GroupedLatentAttention)
