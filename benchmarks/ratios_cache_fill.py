"""A decode cell's prefill: `KVCache.fill` vs the forward it replaces, interleaved, one process.

    python benchmarks/ratios_cache_fill.py [n ...]     # default: n = 512 2048 8192

Every variant that decodes, b=1, d=512, h=8, g=2, float32, one thread (as the quick sweep).
The forward's n-token attention is O(n^2); the fill computes only the O(n) cache fields, so the
ratio falls as n grows. tests/attn_variants/test_cache_fill.py checks they leave the same cache.
"""

import sys

import torch

import attn_variants as av
from harness.measure import interleave as compare
from harness.measure import timing

B, D, H, G = 1, 512, 8, 2


def prefills(name: str, n: int) -> dict[str, object]:
    entry = av.info(name)
    module = av.create(name, entry.resolve(av.AttnSpec(D, H, G))).eval()
    x = torch.randn(B, n, D)  # (b, n, d)
    kw = {"n_visual": n // 4} if entry.multimodal else {}

    def forward() -> None:
        with torch.no_grad():
            module(x, cache=av.KVCache(), **kw)

    def fill() -> None:
        with torch.no_grad():
            av.KVCache().fill(module, x, **kw)

    return {f"{name} forward": forward, f"{name} fill": fill}


def main(lengths: list[int]) -> None:
    torch.set_num_threads(1)
    decoders = [name for name in av.names() if "decode" in av.info(name).modes]
    for n in lengths:
        rounds = 5 if n > 4096 else 10
        print(f"n={n}, {rounds} rounds: fill / forward (median [p10, p90] of the per-round ratios)")
        for name in decoders:
            fns = prefills(name, n)
            samples = compare.interleaved(fns, rounds=rounds, warmup=1)
            r = compare.ratios(samples, f"{name} forward")[f"{name} fill"]
            forward_ms = timing.summarize(samples[f"{name} forward"]).median * 1e3
            print(f"  {name:7s} {r.median:6.3f} [{r.p10:.3f}, {r.p90:.3f}]  (forward {forward_ms:8.1f} ms)")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [512, 2048, 8192])
