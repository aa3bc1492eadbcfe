"""GTA, GLA and uneven-grouped GQA against their bases, interleaved in one process:

    python benchmarks/ratios_gta_gla.py [--n 1024] [--rounds 20] [--threads 1]

At b=2, d=512, h=8 (e=64), per mode (fwd, decode against a cache of n tokens): gqa (g=2),
gta (g=2: about the cache of gqa g=1.25), mla and gla (2 latent heads, both 4e + e/2 numbers a
token), and gqa with an uneven grouping of the same g (sizes 1 and 7: two backend calls) against
mha; then each one's analytic KV-cache bytes next to what a prefilled `KVCache` really holds.
"""

import argparse

import torch

import attn_variants as av
from harness.measure import interleave as compare
from harness.measure import workload

B, D, H = 2, 512, 8
UNEVEN = "0-1-1-1-1-1-1-1"  # KV head 0 for one query head, KV head 1 for seven
CANDIDATES = {  # name -> (variant, g, options)
    "mha": ("mha", H, {}),
    "gqa_g2": ("gqa", 2, {}),
    "gqa_g2_uneven": ("gqa", 2, {"grouping": UNEVEN}),
    "gta_g2": ("gta", 2, {}),
    "mla": ("mla", H, {}),
    "gla": ("gla", H, {}),
    "gla_naive": ("gla", H, {"absorb": "never"}),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for mode in ("fwd", "decode"):
        loads = {
            name: workload.build(variant, av.AttnSpec(D, H, g), mode, batch=B, seq_len=args.n, options=opts)
            for name, (variant, g, opts) in CANDIDATES.items()
            if not (mode == "fwd" and name == "gla_naive")  # the same form as gla's prefill
        }
        samples = compare.interleaved(
            {name: w.step for name, w in loads.items()},
            rounds=args.rounds,
            warmup=3,
            min_sample_s=0.01 if mode == "decode" else 0,
        )
        title = f"{mode}, b={B} n={args.n} d={D} h={H}, {args.rounds} rounds, {args.threads} thread(s)"
        compare.print_table(samples, "mha", title)
        print(f"{'candidate':<16}{'kv_cache_bytes':>16}{'cache.nbytes':>14}")
        for name, w in loads.items():
            cache = av.KVCache()  # what a prefill of the n tokens really stores
            with torch.no_grad():
                cache.fill(w.module, torch.randn(B, args.n, D))
            print(f"{name:<16}{w.kv_cache_bytes:>16,}{cache.nbytes:>14,}")
        print()


if __name__ == "__main__":
    main()
