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

import math

import torch
from torch import Tensor

from .backends import eager
from .cache import KVCache
from .grouped import GroupedQueryAttention
from .keydriven import PAPER
from .registry import register
from .spec import AttnSpec


def check_seed(seed: object) -> int | None:
    """`seed` itself if it is an int or None (the CLI's `pgqa:seed=7` arrives parsed, see
    harness/variant_choice.py); anything else is a ValueError naming it."""
    if seed is None or (isinstance(seed, int) and not isinstance(seed, bool)):
        return seed
    raise ValueError(f"seed={seed!r} must be an integer or None")


def centred(x: Tensor, dims: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """x minus its mean over `dims`, and that difference's norm over `dims` (kept).

    Two passes, one temporary of x's size: `torch.std_mean`'s Welford loop took 4.6-8.8 ms
    against 0.2 ms for a mean and a norm on a (2, 4, 4, 32768) tensor, one CPU thread."""
    c = x - x.mean(dims, keepdim=True)
    return c, torch.linalg.vector_norm(c, dim=dims, keepdim=True)


def perturb(o: Tensor, g: int, u: Tensor) -> Tensor:
    """o (b, h, n, e), noise u (g, h/g, n*e) with its diagonals already 0 -> o minus each
    group's noise, standardised per row and rescaled to o_grp's row mean and std.

    A row of o_grp (b, h/g, n*e) is one (example, head) over all n*e values, so the group
    split needs no reshape of o: statistics reduce over (n, e) and u is viewed as (h, n, e).
    With N = n*e values per row, c = o - mean_o and d = u - mean_u, the unbiased stds are
    |c| / sqrt(N - 1) and |d| / sqrt(N - 1), so o - (z * std_o + mean_o) with
    z = d / std_u is c - |c| * d / |d|: the sqrt(N - 1) cancel (and a one-value row gives 0,
    as the definition's biased fallback does). A constant noise row (|d| = 0) counts as z = 0.
    That is 9 small ops per call besides the draw, 18 before (decode runs it on one token per
    step), and two passes over o, whose memory layout (SDPA returns (b, n, h, e) strides) the result
    keeps, so `merge` stays a view. Statistics run in >= float32. Nothing is detached:
    gradients flow through o's row mean and norm too."""
    b, h, n, e = o.shape
    dtype, work = o.dtype, torch.promote_types(o.dtype, torch.float32)
    d, norm_d = centred(u, dims=(-1,))  # (g, h/g, n*e), (g, h/g, 1)
    unit = (d / norm_d.clamp_min(torch.finfo(work).tiny)).reshape(h, n, e)  # (h, n, e); d = 0 stays 0
    c, norm_c = centred(o.to(work), dims=(-2, -1))  # (b, h, n, e), (b, h, 1, 1): each row's n*e values
    return torch.addcmul(c, unit, norm_c, value=-1).to(dtype)  # (b, h, n, e), in o's memory layout


@register(
    "pgqa",
    description="Perturbed GQA: GQA, then each group's output minus uniform noise rescaled to its "
    "row mean/std (train and eval). NOT causal-safe while perturbing (row stats span all positions).",
    paper=PAPER,
    causal_safe=False,
    options={"perturb_eval": True, "seed": None},  # the paper perturbs in eval too
    # A decode step perturbs its one new token with its own noise and that token's own row
    # statistics, so it is not the last row of a forward over the prefix (which normalises over
    # every position, with noise drawn for all of them).
    decode_exact=False,
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
        self.seed = check_seed(seed)
        self._generator: torch.Generator | None = None
        # Draws made under torch.compile (counter_uniform's counter); not in the state dict.
        self.register_buffer("compiled_draws", torch.zeros((), dtype=torch.long), persistent=False)

    @property
    def perturbing(self) -> bool:
        return self.training or self.perturb_eval

    reads_pages = True  # its attend hands k and v to GQA's untouched (None: the pages in place)

    def attend(
        self, q: Tensor, k: Tensor | None, v: Tensor | None, *, n_visual: int, cache: KVCache | None
    ) -> Tensor:
        """q (b, h, n, e), k/v (b, g, s, e) -> (b, h, n, e): fused GQA, then the noise."""
        o = super().attend(q, k, v, n_visual=n_visual, cache=cache)  # (b, h, n, e)
        if not self.perturbing:
            return o
        return perturb(o, self.spec.n_kv_heads, self.draw_noise(o))

    def draw_noise(self, o: Tensor) -> Tensor:
        """Uniform [0, 1) noise (g, h/g, n*e) for output o (b, h, n, e), diagonals set to 0."""
        _, h, n, e = o.shape
        g = self.spec.n_kv_heads
        work = torch.promote_types(o.dtype, torch.float32)
        if self.seed is not None and torch.compiler.is_compiling():
            # torch.compile cannot trace a torch.Generator ("Failed to convert args/kwargs to
            # proxy"): a seeded module draws from a counter-based hash instead, reproducible
            # per seed under compile, though not the same numbers as the eager generator.
            u = counter_uniform((g, h // g, n * e), self.seed, self.compiled_draws, work)
            self.compiled_draws.add_(1)
        else:
            u = torch.rand(g, h // g, n * e, generator=self.generator(o.device), device=o.device, dtype=work)
        u.diagonal(dim1=-2, dim2=-1).zero_()  # each group's (h/g, n*e) diagonal, as the paper
        return u

    def generator(self, device: torch.device) -> torch.Generator | None:
        """The module's generator on `device`, seeded on first use there; None without a seed."""
        if self.seed is None:
            return None
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device).manual_seed(self.seed)
        return self._generator

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, perturb_eval={self.perturb_eval}, seed={self.seed}"


MASK32 = 0xFFFFFFFF


def counter_uniform(shape: tuple[int, ...], seed: int, counter: Tensor, dtype: torch.dtype) -> Tensor:
    """Uniform [0, 1) noise of `shape` from an integer hash of (seed, counter, index): stateless,
    so torch.compile traces it. Two rounds of xorshift-multiply (Wellons' "lowbias32" shape)
    on 32-bit values in int64; every multiplier is < 2**31, so no product overflows. 24 bits
    per value. The counter (a 0-dim int64 tensor) makes each call's draw differ."""
    size = math.prod(shape)
    key = (seed * 0x9E3779B1) & MASK32  # Python ints: exact
    x = torch.arange(size, device=counter.device, dtype=torch.int64) + counter * size  # (size,)
    x = (x ^ key) & MASK32
    for mult in (0x7FEB352D, 0x2C1B3C6D):
        x = x ^ (x >> 16)
        x = (x * mult) & MASK32  # < 2**32 * 2**31: fits int64
    x = x ^ (x >> 15)
    return ((x >> 8).to(dtype) / 2**24).reshape(shape)  # (shape)


def reference_forward(module: PerturbedGQA, x: Tensor, u: Tensor) -> Tensor:
    """x (b, n, d) -> (b, n, d) with the noise u (g, h/g, n*e) given: eager GQA, then a loop
    over groups and a plain per-row rescale, as the definition reads."""
    q, k, v = module.project(x)  # (b, h, n, e), (b, g, n, e), (b, g, n, e)
    o = eager(q, k, v, causal=module.spec.causal)  # (b, h, n, e)
    return module.merge(reference_perturb(o, module.spec.n_kv_heads, u))  # (b, h, n, e) -> (b, n, d)


def reference_perturb(o: Tensor, g: int, u: Tensor) -> Tensor:
    """o (b, h, n, e), noise u (g, h/g, n*e) -> (b, h, n, e): the loop over groups and the
    per-row rescale as the definition reads."""
    b, h, n, e = o.shape
    r = h // g
    outputs = []
    for j in range(g):
        o_grp = o[:, j * r : (j + 1) * r].reshape(b, r, n * e)  # (b, h/g, n*e)
        noise = u[j].to(o.dtype).clone()  # (h/g, n*e)
        noise.fill_diagonal_(0)
        noise = (noise - noise.mean(1, keepdim=True)) / noise.std(1, keepdim=True)
        noise = noise * o_grp.std(2, keepdim=True) + o_grp.mean(2, keepdim=True)  # (b, h/g, n*e)
        outputs.append((o_grp - noise).reshape(b, r, n, e))
    return torch.cat(outputs, dim=1)  # (b, h, n, e)


__all__ = ["PerturbedGQA", "perturb", "reference_forward", "reference_perturb"]
