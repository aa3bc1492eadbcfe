"""A served decode step: one ragged batch against its requests decoded one by one, and the
paged layout against the padded one, interleaved, one process, one CPU thread.

    python benchmarks/ratios_ragged_decode.py [variant ...]     # default: gqa

b = 8 requests, lengths drawn uniform in [256, 4096] (seed 0), d = 1024, h = 16, g = 4,
float32. Candidates, each one decode step (the cache cut back to the drawn lengths first):
- "8 alone": the sum of the 8 single-request steps, each with its own cache of its length;
- "batched padded": one step of the ragged batch, padded layout;
- "batched paged 16" / "batched paged 128": the same batch, paged layout (pages of 16 / 128);
- "batched padded, mask": the padded batch through the accelerator kernel (one masked call
  over the padded frame) instead of the host's per-example split.
It prints the ratios and each layout's kv_bytes_needed, kv_bytes_allocated and padding_waste.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable

import torch

import attn_variants as av
from attn_variants import ragged
from harness.measure import interleave as compare

B, D, H, G, LO, HI = 8, 1024, 16, 4, 256, 4096


def lengths(seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(LO, HI) for _ in range(B)]


def step(module: torch.nn.Module, prompt: torch.Tensor, x_next: torch.Tensor, keep, **cache_kw):
    """One decode step of `module` from a cache filled with `prompt` cut to `keep`."""
    cache = av.KVCache(**cache_kw)
    with torch.no_grad():
        cache.fill(module, prompt, lengths=keep if isinstance(keep, list) else None)
        module(x_next, cache=cache)  # grow the buffers (and pages) outside the timed steps
        cache.truncate(keep)

    def run() -> None:
        cache.truncate(keep)
        with torch.no_grad():
            module(x_next, cache=cache)

    return run, cache


def candidates(name: str, ls: list[int]) -> tuple[dict[str, Callable[[], None]], dict[str, av.KVCache]]:
    torch.manual_seed(0)
    module = av.create(name, av.info(name).resolve(av.AttnSpec(D, H, G))).eval()
    prompt = torch.randn(B, max(ls), D)  # (b, n, d)
    x_next = torch.randn(B, 1, D)  # (b, 1, d)
    alone = [step(module, prompt[i : i + 1, :n], x_next[i : i + 1], n)[0] for i, n in enumerate(ls)]
    fns, caches = {"8 alone": lambda: [f() for f in alone]}, {}
    for label, kw in (
        ("batched padded", {}),
        ("batched paged 16", {"layout": "paged", "page_size": 16}),
        ("batched paged 128", {"layout": "paged", "page_size": 128}),
    ):
        fns[label], caches[label] = step(module, prompt, x_next, ls, **kw)
    masked, _ = step(module, prompt, x_next, ls)

    def mask_kernel() -> None:
        split = ragged.kernel_for
        ragged.kernel_for = lambda q: "mask"
        try:
            masked()
        finally:
            ragged.kernel_for = split

    fns["batched padded, mask"] = mask_kernel
    return fns, caches


def main(variants: list[str]) -> None:
    torch.set_num_threads(1)
    ls = lengths()
    print(f"b={B}, lengths uniform [{LO}, {HI}] seed 0: {ls} (mean {sum(ls) / B:.0f}, max {max(ls)})")
    print(f"d={D}, h={H}, g={G}, float32, 1 thread, torch {torch.__version__}")
    for name in variants:
        fns, caches = candidates(name, ls)
        samples = compare.interleaved(fns, rounds=25, warmup=2)
        compare.print_table(samples, "8 alone", title=f"{name}: one decode step")
        for label, cache in caches.items():
            cache.truncate(ls)  # the cache a step starts from
            need, have = cache.nbytes_needed, cache.nbytes
            print(f"  {label:<20} kv_bytes_needed {need:>11,}  allocated {have:>11,}  ", end="")
            print(f"padding_waste {have / need:.3f}")
        ratio = compare.ratios(samples, "batched padded")["batched paged 16"]
        print(f"  paged 16 / padded step time: {ratio.median:.3f} [{ratio.p10:.3f}, {ratio.p90:.3f}]")


if __name__ == "__main__":
    main(sys.argv[1:] or ["gqa"])
