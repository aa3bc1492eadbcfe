"""Perturbed GQA, PGQA (Khan et al. 2024, arXiv 2408.08454, its "case study").

Standard GQA, then for each group output o_grp (b, h/g, n*e) (the h/g query heads that share
one KV head, each flattened over its n positions):
  - draw uniform noise u (h/g, n*e) and set its diagonal to 0;
  - standardise u per row, rescale it to o_grp's per-row mean and std;
  - subtract it: o_grp - u, before o_proj.
The paper applies it in train and eval (`perturb_eval=True`, the default).

Fast path: the fused GQA backend, then ONE vectorised noise op over all groups: the noise is
drawn as (g, h/g, n*e), one matrix per group, shared by the examples of the batch (the
definition draws u per group, not per example). `reference_forward` is the loop over groups.

Not causal-safe while perturbing: o_grp's row mean and std run over all n positions, so the
output at position t depends on later tokens. With the perturbation off it is exactly GQA.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .backends import eager
from .cache import KVCache
from .grouped import GroupedQueryAttention
from .keydriven import PAPER
from .registry import register
from .spec import AttnSpec


def parse_seed(seed: object) -> int | None:
    """An int, None, or their text ('7', 'none': `attnbench sweep --variants pgqa:seed=7`)."""
    if isinstance(seed, str) and seed.strip().lower() in ("none", ""):
        return None
    if isinstance(seed, str) and seed.strip().lstrip("-").isdigit():
        return int(seed)
    if seed is None or (isinstance(seed, int) and not isinstance(seed, bool)):
        return seed
    raise ValueError(f"seed={seed!r} must be an integer or None")


def perturb(o: Tensor, g: int, u: Tensor) -> Tensor:
    """o (b, h, n, e), uniform noise u (g, h/g, n*e) -> o minus each group's rescaled noise.

    Statistics run in >= float32; the std is the unbiased one (torch's default, the paper's)."""
    b, h, n, e = o.shape
    work = torch.promote_types(o.dtype, torch.float32)
    rows = o.to(work).reshape(b, g, h // g, n * e)  # (b, g, h/g, n*e): group j = heads j*h/g...
    u = u.to(work).clone()
    u.diagonal(dim1=-2, dim2=-1).zero_()  # each group's (h/g, n*e) diagonal
    correction = 1 if n * e > 1 else 0  # one element: the biased std (0), not NaN
    z = (u - u.mean(-1, keepdim=True)) / u.std(-1, keepdim=True, correction=correction).clamp_min(
        torch.finfo(work).tiny
    )  # (g, h/g, n*e), rows standardised; a constant row stays 0
    mean = rows.mean(-1, keepdim=True)  # (b, g, h/g, 1)
    std = rows.std(-1, keepdim=True, correction=correction)
    return (rows - (z * std + mean)).reshape(b, h, n, e).to(o.dtype)  # (b, h, n, e)


@register(
    "pgqa",
    description="Perturbed GQA: GQA, then each group's output minus uniform noise rescaled to its "
    "row mean/std (train and eval). NOT causal-safe while perturbing (row stats span all positions).",
    paper=PAPER,
    causal_safe=False,
    options={"perturb_eval": True, "seed": None},  # the paper perturbs in eval too
)
class PerturbedGQA(GroupedQueryAttention):
    """PGQA. `perturb_eval=False` makes eval plain GQA; `seed` gives the module its own
    torch.Generator (on the device of the activations), so runs repeat exactly; None draws
    from torch's global generator."""

    def __init__(
        self, spec: AttnSpec, *, backend: str = "sdpa", perturb_eval: bool = True, seed: int | None = None
    ) -> None:
        if not isinstance(perturb_eval, bool):
            raise ValueError(f"perturb_eval={perturb_eval!r} must be True or False")
        super().__init__(spec, backend=backend)
        self.perturb_eval = perturb_eval
        self.seed = parse_seed(seed)
        self._generator: torch.Generator | None = None

    @property
    def perturbing(self) -> bool:
        return self.training or self.perturb_eval

    def attend(self, q: Tensor, k: Tensor, v: Tensor, *, n_visual: int, cache: KVCache | None) -> Tensor:
        """q (b, h, n, e), k/v (b, g, s, e) -> (b, h, n, e): fused GQA, then the noise."""
        o = super().attend(q, k, v, n_visual=n_visual, cache=cache)  # (b, h, n, e)
        if not self.perturbing:
            return o
        return perturb(o, self.spec.n_kv_heads, self.draw_noise(o))

    def draw_noise(self, o: Tensor) -> Tensor:
        """Uniform [0, 1) noise (g, h/g, n*e) for output o (b, h, n, e)."""
        _, h, n, e = o.shape
        g = self.spec.n_kv_heads
        work = torch.promote_types(o.dtype, torch.float32)
        return torch.rand(g, h // g, n * e, generator=self.generator(o.device), device=o.device, dtype=work)

    def generator(self, device: torch.device) -> torch.Generator | None:
        """The module's generator on `device`, seeded on first use there; None without a seed."""
        if self.seed is None:
            return None
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device).manual_seed(self.seed)
        return self._generator

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, perturb_eval={self.perturb_eval}, seed={self.seed}"


def reference_forward(module: PerturbedGQA, x: Tensor, u: Tensor) -> Tensor:
    """x (b, n, d) -> (b, n, d) with the noise u (g, h/g, n*e) given: eager GQA, then a loop
    over groups and a plain per-row rescale, as the definition reads."""
    q, k, v = module.project(x)  # (b, h, n, e), (b, g, n, e), (b, g, n, e)
    o = eager(q, k, v, causal=module.spec.causal)  # (b, h, n, e)
    b, h, n, e = o.shape
    g = module.spec.n_kv_heads
    r = h // g
    outputs = []
    for j in range(g):
        o_grp = o[:, j * r : (j + 1) * r].reshape(b, r, n * e)  # (b, h/g, n*e)
        noise = u[j].to(o.dtype).clone()  # (h/g, n*e)
        noise.fill_diagonal_(0)
        noise = (noise - noise.mean(1, keepdim=True)) / noise.std(1, keepdim=True)
        noise = noise * o_grp.std(2, keepdim=True) + o_grp.mean(2, keepdim=True)  # (b, h/g, n*e)
        outputs.append((o_grp - noise).reshape(b, r, n, e))
    return module.merge(torch.cat(outputs, dim=1))  # (b, h, n, e) -> (b, n, d)


__all__ = ["PerturbedGQA", "perturb", "reference_forward"]
