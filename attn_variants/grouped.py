"""Grouped-query attention: MHA (g = h), MQA (g = 1) and GQA (1 <= g <= h) as one class.

Ainslie et al. 2023, "GQA: Training Generalized Multi-Query Transformer Models from
Multi-Head Checkpoints", arXiv 2305.13245. Query head i reads KV head i // (h/g).

gqa's option `grouping` fixes another map, groups of any size (QCQA arXiv 2406.10247,
AsymGQA arXiv 2406.14963; grouping.py): one backend call per distinct group size, the cache
still g KV heads (held in the plan's KV-head order). `from_mha(..., grouping=...)` chooses it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Literal

import torch
from torch import Tensor, nn

from . import decode, ragged
from . import grouping as grouping_mod
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

    def __init__(self, spec: AttnSpec, *, backend: str = "sdpa", grouping: object = None) -> None:
        super().__init__()
        self.spec = spec
        self.backend_name = backend
        self.backend = get_backend(backend)
        h, g, e, d = spec.n_heads, spec.n_kv_heads, spec.head_dim, spec.dim
        self.q_proj = nn.Linear(d, h * e, bias=spec.bias)
        self.k_proj = nn.Linear(d, g * e, bias=spec.bias)
        self.v_proj = nn.Linear(d, g * e, bias=spec.bias)
        self.o_proj = nn.Linear(h * e, d, bias=spec.bias)
        self.grouping = None if grouping is None else grouping_mod.parse(grouping, h, g)
        self.layout = None  # the fused plan of an uneven grouping; None: query head i reads i // (h/g)
        if self.grouping is not None and self.grouping != grouping_mod.contiguous(h, g):
            self.layout = plan = grouping_mod.GroupLayout.of(self.grouping, g)
            for name in ("q_order", "kv_order", "q_inverse"):  # not persistent: state dicts stay GQA's
                self.register_buffer(name, torch.tensor(getattr(plan, name)), persistent=False)

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
        if self.layout is not None:  # the plan's order: heads of one group next to each other
            q = q.index_select(1, self.q_order)  # (b, h, n, e)
            k, v = k.index_select(1, self.kv_order), v.index_select(1, self.kv_order)  # (b, g, n, e)
        return q, k, v

    def attend(self, q: Tensor, k: Tensor, v: Tensor, *, n_visual: int, cache: KVCache | None) -> Tensor:
        """q (b, h, n, e), k/v (b, g, s, e) -> (b, h, n, e). Variants override this.

        With a cache (decode, chunked prefill) the call goes through the registry's one decode
        path, `decode.kernel`, which lays each KV head's query heads out as its rows where that
        is faster, and over a ragged cache each example attends to its own tokens only
        (attn_variants/ragged.py); without a cache, straight to the backend."""
        if skips_attention(cache):  # KVCache.fill: the cache is complete, the output unused
            return q.new_zeros(*q.shape[:-1], v.shape[-1])  # (b, h, n, e)
        if self.layout is not None:
            return self.attend_uneven(q, k, v, cache)
        return self.call_backend(q, k, v, cache, causal=self.spec.causal)

    def call_backend(self, q: Tensor, k: Tensor, v: Tensor, cache: KVCache | None, *, causal: bool) -> Tensor:
        """q (b, h, n, e), k/v (b, g, s, e) -> (b, h, n, e): the backend, through the decode path
        with a cache, per example's own keys over a ragged one."""
        kernel = decode.kernel(self.backend_name) if cache is not None else self.backend
        if ragged.active(cache):  # each example over its own cached tokens only
            return ragged.attend(kernel, q, k, v, cache, causal=causal, dropout_p=self.dropout_p)
        return kernel(q, k, v, causal=causal, dropout_p=self.dropout_p)

    def attend_uneven(self, q: Tensor, k: Tensor, v: Tensor, cache: KVCache | None) -> Tensor:
        """The plan's order in and out: per group size s, its k KV heads and s*k query heads are a
        plain GQA, one backend call on slices (views) of q, k and v."""
        outs, q_at, kv_at = [], 0, 0
        for size, count in self.layout.classes:
            qs = q[:, q_at : q_at + size * count]  # (b, s*k, n, e)
            ks, vs = k[:, kv_at : kv_at + count], v[:, kv_at : kv_at + count]  # (b, k, s, e)
            outs.append(self.call_backend(qs, ks, vs, cache, causal=self.spec.causal))
            q_at, kv_at = q_at + size * count, kv_at + count
        return torch.cat(outs, dim=1)  # (b, h, n, e)

    def merge(self, o: Tensor) -> Tensor:
        """o (b, h, n, e) -> (b, n, d) through o_proj."""
        if self.layout is not None:
            o = o.index_select(1, self.q_inverse)  # (b, h, n, e) back in query-head order
        b, h, n, e = o.shape
        return self.o_proj(o.transpose(1, 2).reshape(b, n, h * e))  # (b, n, h*e) -> (b, n, d)

    @property
    def dropout_p(self) -> float:
        return self.spec.dropout if self.training else 0.0

    def _check_input(self, x: Tensor, n_visual: int, modality: Tensor | None = None) -> None:
        layout.check_unimodal(x, self.spec.dim, n_visual, modality)

    def extra_repr(self) -> str:
        s = self.spec
        uneven = "" if self.grouping is None else f", grouping={'-'.join(map(str, self.grouping))}"
        return (
            f"h={s.n_heads}, g={s.n_kv_heads}, e={s.head_dim}, causal={s.causal}, "
            f"backend={self.backend_name}{uneven}"
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
    description=(
        "Grouped-query attention: h/g query heads share each of g KV heads; `grouping` (e.g. 0-0-0-1) "
        "fixes an uneven map, one KV-head id per query head (from_mha chooses it)."
    ),
    paper=GQA_PAPER,
    options=dict(grouping=None),  # None: neighbours, query head i reads KV head i // (h/g)
)(GroupedQueryAttention)


Grouping = Literal["neighbour", "weights", "activations"]
GROUPINGS: tuple[Grouping, ...] = ("neighbour", "weights", "activations")


@torch.no_grad()
def from_mha(
    mha: GroupedQueryAttention,
    n_kv_heads: int,
    variant: str = "gqa",
    *,
    grouping: Grouping | Sequence[int] = "neighbour",
    calibration: Tensor | None = None,
    **options: Any,
) -> nn.Module:
    """Uptrain an MHA module into a grouped variant by mean-pooling K/V heads per group.

    GQA paper section 2.1 (arXiv 2305.13245), also the KDGQA paper's protocol: each of the g
    new K/V projections is the mean of its group's source heads (weights and biases); q_proj and
    o_proj are copied unchanged. `variant` may be any registered variant with these
    projections (gqa, kdgqa, dgqa, pgqa, moh, ...); weights it names in `fresh_on_uptrain`
    (moh's router) keep their fresh initialisation.

    `grouping` says which query heads share a KV head:
    - "neighbour": h/g consecutive heads (GQA's), for every variant;
    - "weights": the groups, sizes free, whose heads' K/V projection weights (and biases) lie
      closest to their group's mean: QCQA's weight-sharing error (arXiv 2406.10247), the
      weights' loss from the mean-pooling itself (grouping.choose);
    - "activations": the same on the heads' keys and values over `calibration` (b, n, d), a batch
      of the layer's inputs: AsymGQA's activation-informed grouping (arXiv 2406.14963), scored by
      what pooling does to those keys and values;
    - or h KV-head ids. Anything but neighbours needs a variant with the `grouping` option (gqa).
    """
    spec = mha.spec
    if spec.n_kv_heads != spec.n_heads:
        raise ValueError(f"from_mha needs an MHA module (g = h = {spec.n_heads}); got g={spec.n_kv_heads}")
    if not issubclass(info(variant).cls, GroupedQueryAttention):
        raise ValueError(
            f"variant {variant!r} cannot be uptrained from MHA: it has no q/k/v/o projections to copy "
            "(from_mha supports the GQA family)"
        )
    groups = choose_grouping(mha, n_kv_heads, grouping, calibration)
    if groups is not None:
        if "grouping" not in info(variant).options:
            raise ValueError(
                f"grouping={grouping!r} needs a variant with a 'grouping' option (gqa), not {variant!r}"
            )
        options = {**options, "grouping": groups}
    weight = mha.q_proj.weight
    target = create(variant, replace(spec, n_kv_heads=n_kv_heads), **options)
    target = target.to(device=weight.device, dtype=weight.dtype)
    state = {name: t.clone() for name, t in mha.state_dict().items()}
    for proj in ("k_proj", "v_proj"):
        for kind in ("weight", "bias"):
            key = f"{proj}.{kind}"
            if key in state:
                state[key] = _mean_pool_heads(state[key], spec.n_heads, n_kv_heads, groups)
    missing, unexpected = target.load_state_dict(state, strict=False)
    fresh = tuple(f"{name}." for name in getattr(target, "fresh_on_uptrain", ()))
    not_fresh = [k for k in missing if not k.startswith(fresh)]
    if unexpected or not_fresh:
        raise ValueError(
            f"{variant!r} does not take MHA weights: missing {not_fresh}, unexpected {unexpected}"
        )
    return target


def choose_grouping(
    mha: GroupedQueryAttention, g: int, grouping: Grouping | Sequence[int], calibration: Tensor | None
) -> tuple[int, ...] | None:
    """The KV head of each query head for `from_mha`; None for GQA's neighbours."""
    h, e = mha.spec.n_heads, mha.spec.head_dim
    if h % g:
        raise ValueError(f"n_heads={h} is not divisible by n_kv_heads={g}")
    if not isinstance(grouping, str):
        return grouping_mod.parse(grouping, h, g)
    if grouping not in GROUPINGS:
        raise ValueError(f"grouping={grouping!r} is not one of {list(GROUPINGS)} or h KV-head ids")
    if grouping == "neighbour":
        return None
    if grouping == "weights":
        parts = [
            p.view(h, e, -1)
            for lin in (mha.k_proj, mha.v_proj)
            for p in (lin.weight, lin.bias)
            if p is not None
        ]
        return grouping_mod.choose(torch.cat(parts, dim=-1), g)  # (h, e, d or d+1 per projection)
    if calibration is None:
        raise ValueError(
            "grouping='activations' needs calibration=x, a (b, n, d) batch of the layer's inputs"
        )
    b, n, _ = calibration.shape
    k = mha.k_proj(calibration).view(b, n, h, e)  # (b, n, h, e)
    v = mha.v_proj(calibration).view(b, n, h, e)  # (b, n, h, e)
    return grouping_mod.choose(torch.cat([k, v], dim=-1).permute(2, 0, 1, 3), g)  # (h, b, n, 2e)


def _mean_pool_heads(param: Tensor, h: int, g: int, grouping: Sequence[int] | None = None) -> Tensor:
    """(h*e, ...) -> (g*e, ...): KV head j is the mean of its group's heads, h/g consecutive
    heads, or the heads i with grouping[i] == j."""
    e = param.shape[0] // h
    if grouping is None:
        grouped = param.reshape(g, h // g, e, *param.shape[1:])  # (g, h/g, e, ...)
        return grouped.mean(dim=1).reshape(g * e, *param.shape[1:])  # (g*e, ...)
    heads = param.reshape(h, e, *param.shape[1:])  # (h, e, ...)
    index = torch.as_tensor(grouping, device=param.device)  # (h,)
    pooled = [heads[index == j].mean(dim=0) for j in range(g)]  # g x (e, ...)
    return torch.stack(pooled).reshape(g * e, *param.shape[1:])  # (g*e, ...)
