"""The fixture every conformance property runs on: one variant, tiny odd shapes, fresh modules.

Every call builds the module afresh from the same seed and reseeds torch's global generator
before it runs, so two calls differ only in what the property changed: a stateful variant
(dgqa's norm cache) or a random one (pgqa's noise, drawn from the global generator unless
seeded) gives equal outputs for equal inputs, and any difference is the property's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

import attn_variants as av

# Largest |difference| / max(1, max |reference|) counted as equal, per dtype. float64 on the CPU
# is tight: an honest decode or an untouched causal prefix differs from the one forward by
# rounding only (~1e-15). Low precision compares kernels that round differently.
TOLERANCE = {
    torch.float64: 1e-9,
    torch.float32: 1e-4,
    torch.float16: 1e-2,
    torch.bfloat16: 5e-2,
}


@dataclass(frozen=True)
class ConformConfig:
    """The shapes and numerics of `attnbench conform` (tiny and odd by default: n = 11)."""

    device: Literal["cpu", "cuda"] = "cpu"
    dtype: Literal["float64", "float32", "float16", "bfloat16"] = "float64"
    batch: int = 2
    seq_len: int = 11  # odd: no power-of-two block hides an off-by-one
    prefill: int = 5  # decode: these tokens in one call, then the rest one by one
    heads: int = 8
    kv_heads: int = 4  # 1 < g < h: grouped variants group, key-driven ones have g norms to rank
    head_dim: int = 4
    n_visual: int = 4  # multimodal: image tokens of the prefix layout (m <= prefill)
    seed: int = 0
    plugins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 2 <= self.batch:
            raise ValueError(f"batch={self.batch} must be >= 2 (batch independence changes one example)")
        if not 1 <= self.n_visual <= self.prefill < self.seq_len - 1:
            raise ValueError(
                f"need 1 <= n_visual={self.n_visual} <= prefill={self.prefill} < seq_len - 1 "
                f"= {self.seq_len - 1}"
            )
        if self.seq_len < 8:
            raise ValueError(f"seq_len={self.seq_len} must be >= 8 (two images and text between them)")
        av.AttnSpec(self.heads * self.head_dim, self.heads, self.kv_heads)  # bad (h, g) raise here


@dataclass
class Probe:
    """One variant (name and options) at the config's shapes, on its device and dtype."""

    name: str
    options: Mapping[str, Any]
    cfg: ConformConfig
    entry: av.VariantInfo = field(init=False)
    spec: av.AttnSpec = field(init=False)

    def __post_init__(self) -> None:
        self.entry = av.info(self.name)
        c = self.cfg
        self.spec = self.entry.resolve(av.AttnSpec(c.heads * c.head_dim, c.heads, c.kv_heads))
        self.device = torch.device(c.device)
        self.dtype = getattr(torch, c.dtype)
        self.tol = TOLERANCE[self.dtype]

    def module(self, *, train: bool = False) -> nn.Module:
        """A fresh module, the same weights every time (seeded), in eval unless `train`."""
        torch.manual_seed(self.cfg.seed)
        with self.device:
            module = av.create(self.name, self.spec, **self.options)
        return module.to(device=self.device, dtype=self.dtype).train(train)

    def inputs(self, n: int | None = None, *, seed: int = 1, scale: int = 0) -> Tensor:
        """Seeded x (b, n, d), drawn on the CPU in float64 and then moved (the same on any device).
        Each model dim has its own scale (0.1 to 3.1, drawn from seed `scale`), so key-head norms
        differ: with equal norms a key-driven allocation stays uniform and hides what it reads.
        A perturbation draws with another `scale`, so it also moves which heads are largest."""
        dims = torch.Generator().manual_seed(self.cfg.seed * 1000 + 500 + scale)
        scale = torch.rand(self.spec.dim, generator=dims, dtype=torch.float64)
        gen = torch.Generator().manual_seed(self.cfg.seed * 1000 + seed)
        shape = (self.cfg.batch, n or self.cfg.seq_len, self.spec.dim)  # (b, n, d)
        x = torch.randn(shape, generator=gen, dtype=torch.float64) * (scale * 3 + 0.1)  # (b, n, d)
        return x.to(self.device, self.dtype)

    def forward(self, x: Tensor, **layout: Any) -> Tensor:
        """One forward of a fresh module under no_grad: (b, n, d) -> (b, n, d)."""
        module = self.module()
        torch.manual_seed(self.cfg.seed + 1)  # random variants draw the same numbers each call
        with torch.no_grad():
            return module(x, **layout)

    def error(self, got: Tensor, want: Tensor) -> float:
        """max |got - want| / max(1, max |want|), in float64."""
        got, want = got.double(), want.double()
        scale = max(1.0, want.abs().max().item()) if want.numel() else 1.0
        return (got - want).abs().max().item() / scale if want.numel() else 0.0

    def layouts(self) -> dict[str, dict[str, Any]]:
        """The layout keywords a multimodal variant is held to: plain text, the prefix layout
        (m image tokens first) and an interleaved one with two images."""
        b, n, m = self.cfg.batch, self.cfg.seq_len, self.cfg.n_visual
        return {
            "text": {},
            "prefix": {"n_visual": m},
            "interleaved": {"modality": interleaved(b, n, self.device)},
        }


def interleaved(b: int, n: int, device: torch.device) -> Tensor:
    """(b, n) ids: text, image 1 (3 tokens), text, image 2 (2 tokens), text."""
    ids = [0] * n
    ids[1:4] = [1, 1, 1]
    ids[5:7] = [2, 2]
    return torch.tensor(ids, device=device).expand(b, n)  # (b, n)


def fmt(x: float) -> str:
    """A measured error, short: '0', '3.1e-16', '0.42'."""
    return "0" if x == 0 else f"{x:.2g}"
