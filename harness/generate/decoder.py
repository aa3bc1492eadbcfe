"""A small decoder-only language model whose attention is any registered variant, for
`attnbench generate`.

LLaMA's block layout (Touvron et al. 2023, arXiv 2302.13971): pre-norm RMSNorm (Zhang &
Sennrich 2019, arXiv 1910.07467), the variant's attention, RMSNorm, a SwiGLU MLP (Shazeer 2020,
arXiv 2002.05202), residuals around both; a token embedding and an output head tied to it
(Press & Wolf 2017, arXiv 1608.05859). Random weights: a decode step's time does not depend on
their values.

Departures from LLaMA, and why:
- no position embedding in the decoder: the registry's attention modules own their positions
  (mla applies its RoPE inside; the GQA family has none, so the model is NoPE, Kazemnejad et
  al. 2023, arXiv 2305.19466). RoPE on q and k would be elementwise work inside the attention
  module, small beside the cache reads a decode step is made of;
- the accuracy task's `TinyTransformer` (harness/model.py) is a different model (LayerNorm,
  GELU MLP, learned positions, an untied head, no cache path), so this one is its own class;
  both build their attention the same way, `av.create` over the resolved spec.

Each layer's attention keeps its own `KVCache` (K/V for the GQA family, the latent and rope key
for mla, modality ids for mmca): `new_caches()` makes one per layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

import attn_variants as av


@dataclass(frozen=True)
class DecoderConfig:
    """Sizes of the decoder; `n_kv_heads` None is g = h (the variant's preset may fix g)."""

    variant: str
    vocab: int = 4096
    dim: int = 256  # d
    n_heads: int = 8  # h
    n_kv_heads: int | None = None  # g
    layers: int = 4  # L
    # SwiGLU hidden width; 0: LLaMA's rule, 2/3 of 4d rounded up to a multiple of 64
    # (three matrices of d x hidden cost what two of d x 4d do).
    mlp_hidden: int = 0
    options: dict[str, Any] = field(default_factory=dict)  # the variant's options

    def __post_init__(self) -> None:
        for name in ("vocab", "dim", "n_heads", "layers"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)} must be positive")
        if self.mlp_hidden < 0:
            raise ValueError(f"mlp_hidden={self.mlp_hidden} must be >= 0 (0: LLaMA's 8d/3)")

    @property
    def hidden(self) -> int:
        """The SwiGLU hidden width."""
        return self.mlp_hidden or -(-(8 * self.dim // 3) // 64) * 64

    def spec(self) -> av.AttnSpec:
        """The attention spec after the variant's preset (mha: g = h, mqa: g = 1)."""
        spec = av.AttnSpec(dim=self.dim, n_heads=self.n_heads, n_kv_heads=self.n_kv_heads, causal=True)
        return av.info(self.variant).resolve(spec)


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)): x (b, n, d) -> (b, n, d); LLaMA's w1/w3/w2 as gate/up/down."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderBlock(nn.Module):
    """x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.attn_norm = nn.RMSNorm(cfg.dim, eps=1e-6)
        self.attn = av.create(cfg.variant, cfg.spec(), **cfg.options)
        self.mlp_norm = nn.RMSNorm(cfg.dim, eps=1e-6)
        self.mlp = SwiGLU(cfg.dim, cfg.hidden)

        # The attention-share timer (harness/generate/share.py) while one is attached, else None.
        self.timer: Any = None

    def forward(self, x: Tensor, cache: av.KVCache | None, n_visual: int) -> Tensor:
        """x (b, n, d) -> (b, n, d); `cache` is this layer's, or None (the whole sequence)."""
        x = x + self.attend(self.attn_norm(x), cache, n_visual)
        return x + self.mlp(self.mlp_norm(x))

    def attend(self, x: Tensor, cache: av.KVCache | None, n_visual: int) -> Tensor:
        """The variant's attention, bracketed by the timer when one is attached. A compiled decode
        step runs this eagerly (`torch.compiler.disable`, harness/generate/loop.py): the cache's
        length is a Python int that grows every token, on which dynamo would recompile."""
        if self.timer is None:
            return self.attn(x, n_visual=n_visual, cache=cache)
        self.timer.start()
        out = self.attn(x, n_visual=n_visual, cache=cache)
        self.timer.stop()
        return out


class Decoder(nn.Module):
    """`decoder(tokens, caches)` -> logits (b, n, vocab)."""

    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab, cfg.dim)
        self.blocks = nn.ModuleList(DecoderBlock(cfg) for _ in range(cfg.layers))
        self.norm = nn.RMSNorm(cfg.dim, eps=1e-6)
        self.head = nn.Linear(cfg.dim, cfg.vocab, bias=False)
        self.head.weight = self.embed.weight  # tied: one (vocab, d) matrix
        nn.init.normal_(self.embed.weight, std=cfg.dim**-0.5)  # logits of order 1, not of order sqrt(d)

    def forward(
        self, tokens: Tensor, caches: list[av.KVCache] | None = None, n_visual: int = 0, last: bool = False
    ) -> Tensor:
        """tokens (b, n) ints -> logits (b, n, vocab), or (b, 1, vocab) for the last position only
        (`last`: generation needs no other, and a 32K prompt's full logits would take gigabytes).
        With `caches` (one per layer) the tokens continue what the caches hold; `n_visual` leading
        tokens of a first call are image tokens for a multimodal variant (a unimodal one reads
        them as text)."""
        if caches is not None and len(caches) != len(self.blocks):
            raise ValueError(f"{len(caches)} caches for {len(self.blocks)} layers")
        x = self.embed(tokens)  # (b, n, d)
        for i, block in enumerate(self.blocks):
            x = block(x, None if caches is None else caches[i], n_visual)
        if last:
            x = x[:, -1:]  # (b, 1, d)
        return self.head(self.norm(x))  # (b, n, vocab)

    def new_caches(self, layout: str = "padded", page_size: int = 16) -> list[av.KVCache]:
        """An empty cache per layer, padded or paged (attn_variants/paged.py)."""
        return [av.KVCache(layout=layout, page_size=page_size) for _ in self.blocks]

    def set_timer(self, timer: Any) -> None:
        """Attach `timer` (start/stop around every attention call) to each layer; None detaches."""
        for block in self.blocks:
            block.timer = timer

    def kv_cache_bytes(self, seq_len: int, batch: int) -> int:
        """The registry's analytic cache of all layers at `seq_len` tokens."""
        entry, dtype = av.info(self.cfg.variant), self.embed.weight.dtype
        return self.cfg.layers * entry.kv_cache_bytes(
            self.cfg.spec(), self.cfg.options, batch, seq_len, dtype
        )


def cache_nbytes(caches: list[av.KVCache]) -> int:
    """What the caches really store (every live field, metadata included)."""
    return sum(c.nbytes for c in caches)
