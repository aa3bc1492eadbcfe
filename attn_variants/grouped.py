"""Grouped-query attention: MHA (g = h), MQA (g = 1) and GQA (1 <= g <= h) as one class.

Ainslie et al. 2023, "GQA: Training Generalized Multi-Query Transformer Models from
Multi-Head Checkpoints", arXiv 2305.13245. Query head i reads KV head i // (h/g).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from . import decode, ragged
from . import modality as layout
from .backends import get_backend
from .cache import KVCache, skips_attention
from .registry import create, info, register, with_kv_heads
from .spec import AttnSpec

GQA_PAPER = "https://arxiv.org/abs/2305.13245"


class GroupedQueryAttention(nn.Module):
    """The base of every variant: shared q/k/v/o projections, one `attend` hook to override.

    Projections are `nn.Linear` named as in HF transformers (q_proj, k_proj, v_proj, o_proj),
    so weights move between variants by `state_dict`.
    """

    def __init__(self, spec: AttnSpec, *, backend: str = "sdpa") -> None:
        super().__init__()
        self.spec = spec
        self.backend_name = backend
        self.backend = get_backend(backend)
        h, g, e, d = spec.n_heads, spec.n_kv_heads, spec.head_dim, spec.dim
        self.q_proj = nn.Linear(d, h * e, bias=spec.bias)
        self.k_proj = nn.Linear(d, g * e, bias=spec.bias)
        self.v_proj = nn.Linear(d, g * e, bias=spec.bias)
        self.o_proj = nn.Linear(h * e, d, bias=spec.bias)

    def forward(
        self, x: Tensor, *, n_visual: int = 0, modality: Tensor | None = None, cache: KVCache | None = None
    ) -> Tensor:
        """x (b, n, d) -> (b, n, d). A unimodal variant reads any layout of text and images as
        one causal stream (the "concat" baseline of MMCA), so `n_visual` and `modality` (b, n)
        are only validated here (attn_variants/modality.py)."""
        self._check_input(x, n_visual, modality)
        q, k, v = self.project(x)
        if cache is not None:
            k, v = cache.update(k, v)  # (b, g, s, e), s = cached + n
        o = self.attend(q, k, v, n_visual=n_visual, cache=cache)  # (b, h, n, e)
        return self.merge(o)

    def project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (b, n, d) -> q (b, h, n, e), k (b, g, n, e), v (b, g, n, e)."""
        b, n, _ = x.shape
        h, g, e = self.spec.n_heads, self.spec.n_kv_heads, self.spec.head_dim
        q = self.q_proj(x).view(b, n, h, e).transpose(1, 2)  # (b, h, n, e)
        k = self.k_proj(x).view(b, n, g, e).transpose(1, 2)  # (b, g, n, e)
        v = self.v_proj(x).view(b, n, g, e).transpose(1, 2)  # (b, g, n, e)
        return q, k, v

    def attend(self, q: Tensor, k: Tensor, v: Tensor, *, n_visual: int, cache: KVCache | None) -> Tensor:
        """q (b, h, n, e), k/v (b, g, s, e) -> (b, h, n, e). Variants override this.

        With a cache (decode, chunked prefill) the call goes through the registry's one decode
        path, `decode.kernel`, which lays each KV head's query heads out as its rows where that
        is faster, and over a ragged cache each example attends to its own tokens only
        (attn_variants/ragged.py); without a cache, straight to the backend."""
        if skips_attention(cache):  # KVCache.fill: the cache is complete, the output unused
            return q.new_zeros(*q.shape[:-1], v.shape[-1])  # (b, h, n, e)
        return self.call_backend(q, k, v, cache, causal=self.spec.causal)

    def call_backend(self, q: Tensor, k: Tensor, v: Tensor, cache: KVCache | None, *, causal: bool) -> Tensor:
        """q (b, h, n, e), k/v (b, g, s, e) -> (b, h, n, e): the backend, through the decode path
        with a cache, per example's own keys over a ragged one."""
        kernel = decode.kernel(self.backend_name) if cache is not None else self.backend
        if ragged.active(cache):  # each example over its own cached tokens only
            return ragged.attend(kernel, q, k, v, cache, causal=causal, dropout_p=self.dropout_p)
        return kernel(q, k, v, causal=causal, dropout_p=self.dropout_p)

    def merge(self, o: Tensor) -> Tensor:
        """o (b, h, n, e) -> (b, n, d) through o_proj."""
        b, h, n, e = o.shape
        return self.o_proj(o.transpose(1, 2).reshape(b, n, h * e))  # (b, n, h*e) -> (b, n, d)

    @property
    def dropout_p(self) -> float:
        return self.spec.dropout if self.training else 0.0

    def _check_input(self, x: Tensor, n_visual: int, modality: Tensor | None = None) -> None:
        layout.check_unimodal(x, self.spec.dim, n_visual, modality)

    def extra_repr(self) -> str:
        s = self.spec
        return (
            f"h={s.n_heads}, g={s.n_kv_heads}, e={s.head_dim}, causal={s.causal}, backend={self.backend_name}"
        )


register(
    "mha",
    description="Multi-head attention: every query head has its own KV head (g = h).",
    paper="https://arxiv.org/abs/1706.03762",
    preset=with_kv_heads(lambda s: s.n_heads),
)(GroupedQueryAttention)
register(
    "mqa",
    description="Multi-query attention: all query heads share one KV head (g = 1).",
    paper="https://arxiv.org/abs/1911.02150",
    preset=with_kv_heads(lambda s: 1),
)(GroupedQueryAttention)
register(
    "gqa",
    description="Grouped-query attention: h/g query heads share each of g KV heads.",
    paper=GQA_PAPER,
)(GroupedQueryAttention)


@torch.no_grad()
def from_mha(mha: GroupedQueryAttention, n_kv_heads: int, variant: str = "gqa", **options: Any) -> nn.Module:
    """Uptrain an MHA module into a grouped variant by mean-pooling K/V heads per group.

    GQA paper section 2.1 (arXiv 2305.13245), also the KDGQA paper's protocol: each of the g
    new K/V projections is the mean of its h/g source heads (weights and biases); q_proj and
    o_proj are copied unchanged. `variant` may be any registered variant with these
    projections (gqa, kdgqa, dgqa, pgqa, moh, ...); weights it names in `fresh_on_uptrain`
    (moh's router) keep their fresh initialisation.
    """
    spec = mha.spec
    if spec.n_kv_heads != spec.n_heads:
        raise ValueError(f"from_mha needs an MHA module (g = h = {spec.n_heads}); got g={spec.n_kv_heads}")
    if not issubclass(info(variant).cls, GroupedQueryAttention):
        raise ValueError(
            f"variant {variant!r} cannot be uptrained from MHA: it has no q/k/v/o projections to copy "
            "(from_mha supports the GQA family)"
        )
    weight = mha.q_proj.weight
    target = create(variant, replace(spec, n_kv_heads=n_kv_heads), **options)
    target = target.to(device=weight.device, dtype=weight.dtype)
    state = {name: t.clone() for name, t in mha.state_dict().items()}
    for proj in ("k_proj", "v_proj"):
        for kind in ("weight", "bias"):
            key = f"{proj}.{kind}"
            if key in state:
                state[key] = _mean_pool_heads(state[key], spec.n_heads, n_kv_heads)
    missing, unexpected = target.load_state_dict(state, strict=False)
    fresh = tuple(f"{name}." for name in getattr(target, "fresh_on_uptrain", ()))
    not_fresh = [k for k in missing if not k.startswith(fresh)]
    if unexpected or not_fresh:
        raise ValueError(
            f"{variant!r} does not take MHA weights: missing {not_fresh}, unexpected {unexpected}"
        )
    return target


def _mean_pool_heads(param: Tensor, h: int, g: int) -> Tensor:
    """(h*e, ...) -> (g*e, ...): the mean over each group of h/g consecutive heads."""
    e = param.shape[0] // h
    grouped = param.reshape(g, h // g, e, *param.shape[1:])  # (g, h/g, e, ...)
    return grouped.mean(dim=1).reshape(g * e, *param.shape[1:])  # (g*e, ...)
