"""A tiny pre-norm transformer whose attention is any registered variant, for `attnbench accuracy`.

Embedding (tokens, image patches, or [patches; tokens]), L blocks of
[LayerNorm, attention variant, LayerNorm, MLP] with residuals (pre-norm as in GPT-2 / ViT),
a final LayerNorm and a linear head. Positions are learned absolute embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

import attn_variants as av

Ablate = Literal["none", "zero-attention"]
ABLATIONS: tuple[Ablate, ...] = ("none", "zero-attention")


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of the tiny transformer. `vocab` > 0 adds a token embedding, `patch_dim` > 0 a
    patch embedding; with both, the input is [patches; tokens] and the patches are visual tokens."""

    variant: str
    n_out: int  # head width: classes or vocabulary
    max_len: int  # n, the longest sequence (positions)
    vocab: int = 0
    patch_dim: int = 0
    dim: int = 64  # d
    n_heads: int = 4  # h
    n_kv_heads: int | None = None  # g (None: g = h); the variant's preset may fix it
    layers: int = 2
    causal: bool = True
    pool: bool = False  # True: the head reads the mean over positions (classification)
    ablate: Ablate = "none"  # zero-attention: every attention output is replaced by zeros
    options: dict[str, Any] = field(default_factory=dict)  # the variant's options

    def __post_init__(self) -> None:
        if self.ablate not in ABLATIONS:
            raise ValueError(f"ablate={self.ablate!r} is not one of {list(ABLATIONS)}")
        if self.vocab <= 0 and self.patch_dim <= 0:
            raise ValueError("the model needs vocab > 0 or patch_dim > 0 (an input embedding)")

    def spec(self) -> av.AttnSpec:
        """The attention spec after the variant's preset (mha: g = h, mqa: g = 1)."""
        spec = av.AttnSpec(dim=self.dim, n_heads=self.n_heads, n_kv_heads=self.n_kv_heads, causal=self.causal)
        return av.info(self.variant).resolve(spec)


class Block(nn.Module):
    """x + attn(norm(x)), then x + mlp(norm(x)): the pre-norm residual block."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.zero_attention = cfg.ablate == "zero-attention"
        self.norm1 = nn.LayerNorm(cfg.dim)
        self.attn = av.create(cfg.variant, cfg.spec(), **cfg.options)
        self.norm2 = nn.LayerNorm(cfg.dim)
        self.mlp = nn.Sequential(nn.Linear(cfg.dim, 4 * cfg.dim), nn.GELU(), nn.Linear(4 * cfg.dim, cfg.dim))

    def forward(self, x: Tensor, n_visual: int, modality: Tensor | None = None) -> Tensor:
        """x (b, n, d) -> (b, n, d); the layout is n_visual leading image tokens, or `modality` (b, n)."""
        # The ablation keeps every other weight and path: only what attention adds is removed,
        # so a task that still gets solved did not need attention.
        layout = {"n_visual": n_visual} if modality is None else {"modality": modality}
        attended = torch.zeros_like(x) if self.zero_attention else self.attn(self.norm1(x), **layout)
        x = x + attended
        return x + self.mlp(self.norm2(x))


class TinyTransformer(nn.Module):
    """`model(tokens=..., patches=...)` -> logits (b, n, n_out), or (b, n_out) when pooled."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_embed = nn.Embedding(cfg.vocab, cfg.dim) if cfg.vocab > 0 else None
        self.patch_embed = nn.Linear(cfg.patch_dim, cfg.dim) if cfg.patch_dim > 0 else None
        self.pos_embed = nn.Parameter(torch.randn(cfg.max_len, cfg.dim) * 0.02)  # (n_max, d)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, cfg.n_out)

    def forward(self, *, tokens: Tensor | None = None, patches: Tensor | None = None) -> Tensor:
        """tokens (b, t) ints and/or patches (b, m, patch_dim) -> logits.

        With both, the sequence is [patches; tokens] and n_visual = m is passed to attention:
        a multimodal variant treats the patches as visual tokens, a unimodal one reads the
        whole sequence as one causal stream (the concat baseline).
        """
        x, n_visual = self.embed(tokens, patches)  # (b, n, d)
        return self.run(x, n_visual=n_visual)

    def run(self, x: Tensor, *, n_visual: int = 0, modality: Tensor | None = None) -> Tensor:
        """The blocks, norm and head over an embedded sequence x (b, n, d), positions added;
        `modality` (b, n) for any layout of text and images (the pairs task)."""
        for block in self.blocks:
            x = block(x, n_visual, modality)
        x = self.norm(x)
        return self.head(x.mean(dim=1) if self.cfg.pool else x)  # (b, n_out) or (b, n, n_out)

    def embed_parts(self, parts: list[tuple[str, Tensor]]) -> tuple[Tensor, Tensor]:
        """[("text", ids (b, t)) or ("image", patches (b, m, p)), ...] in order -> the sequence
        x (b, n, d) with positions added, and its modality ids (b, n): images numbered 1, 2, ..."""
        xs, ids, image = [], [], 0
        for kind, t in parts:
            if kind == "image":
                image += 1
                xs.append(self.patch_embed(t))  # (b, m, d)
            else:
                xs.append(self.tok_embed(t))  # (b, t, d)
            ids.append(
                torch.full(t.shape[:2], image if kind == "image" else 0, dtype=torch.long, device=t.device)
            )
        x = torch.cat(xs, dim=1)  # (b, n, d)
        if x.shape[1] > self.cfg.max_len:
            raise ValueError(f"sequence of {x.shape[1]} tokens exceeds max_len={self.cfg.max_len}")
        return x + self.pos_embed[: x.shape[1]], torch.cat(ids, dim=1)  # (b, n, d), (b, n)

    def embed(self, tokens: Tensor | None, patches: Tensor | None) -> tuple[Tensor, int]:
        """The input sequence (b, n, d) with positions added, and its count of visual tokens."""
        parts = []
        if patches is not None:
            parts.append(self.patch_embed(patches))  # (b, m, d)
        if tokens is not None:
            parts.append(self.tok_embed(tokens))  # (b, t, d)
        if not parts:
            raise ValueError("forward needs tokens, patches or both")
        x = torch.cat(parts, dim=1)  # (b, n, d), n = m + t
        if x.shape[1] > self.cfg.max_len:
            raise ValueError(f"sequence of {x.shape[1]} tokens exceeds max_len={self.cfg.max_len}")
        n_visual = patches.shape[1] if patches is not None and tokens is not None else 0
        return x + self.pos_embed[: x.shape[1]], n_visual

    def kv_cache_bytes(self, seq_len: int, batch: int = 1) -> int:
        """The KV cache of every layer at `seq_len` tokens: L * 2*b*g*n*e*itemsize for the GQA
        family, the variant's own cache per token otherwise (mla: its latent and rope key)."""
        entry, dtype = av.info(self.cfg.variant), self.head.weight.dtype
        per_layer = entry.kv_cache_bytes(self.cfg.spec(), self.cfg.options, batch, seq_len, dtype)
        return self.cfg.layers * per_layer

    def aux_loss(self) -> Tensor | None:
        """aux_loss_coef x the mean over layers of the attention's aux loss (MoH's load-balance
        loss, set by a training forward), or None when no layer has one."""
        layers = [b.attn for b in self.blocks if getattr(b.attn, "aux_loss", None) is not None]
        if not layers:
            return None
        return layers[0].aux_loss_coef * torch.stack([a.aux_loss for a in layers]).mean()


def uptrain(
    source: TinyTransformer, cfg: ModelConfig, grouping: str = "neighbour", **calibration: Tensor
) -> TinyTransformer:
    """A model for `cfg` (a grouped variant) from an MHA `source`, the GQA/KDGQA protocol.

    Every attention layer goes through `av.from_mha` (K/V heads mean-pooled per group,
    Ainslie et al. 2023 section 2.1); embeddings, norms, MLPs and head are copied. `grouping`
    is from_mha's ("weights", "activations": gqa's uneven groups); "activations" reads each
    layer's attention inputs on the source's forward of `calibration` (the model's inputs).
    """
    if source.cfg.spec().n_kv_heads != source.cfg.n_heads:
        raise ValueError(f"uptraining needs an MHA source model; its variant is {source.cfg.variant!r}")
    weight = source.head.weight
    target = TinyTransformer(cfg).to(device=weight.device, dtype=weight.dtype)
    shared = {k: v for k, v in source.state_dict().items() if ".attn." not in k}
    missing, _ = target.load_state_dict(shared, strict=False)
    inputs = attention_inputs(source, **calibration) if grouping == "activations" else [None] * cfg.layers
    for src, dst, x in zip(source.blocks, target.blocks, inputs, strict=True):
        extra = {} if grouping == "neighbour" else {"grouping": grouping, "calibration": x}
        dst.attn = av.from_mha(src.attn, cfg.spec().n_kv_heads, variant=cfg.variant, **cfg.options, **extra)
    not_attention = [k for k in missing if ".attn." not in k]
    if not_attention:
        raise ValueError(f"source and target models differ outside attention: {not_attention}")
    return target


@torch.no_grad()
def attention_inputs(model: TinyTransformer, **inputs: Tensor) -> list[Tensor]:
    """Each layer's attention input x (b, n, d) on `model(**inputs)`: AsymGQA's calibration."""
    seen: list[Tensor] = []
    hooks = [b.attn.register_forward_pre_hook(lambda _m, args: seen.append(args[0])) for b in model.blocks]
    try:
        model(**inputs)
    finally:
        for hook in hooks:
            hook.remove()
    if len(seen) != len(model.blocks):
        ran = f"{len(seen)} of {len(model.blocks)} attention layers ran"
        raise ValueError(f"{ran} (ablate={model.cfg.ablate!r}): no activations to group heads by")
    return seen
