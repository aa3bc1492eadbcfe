"""Issue 15's README figures, measured interleaved in one process:

    python benchmarks/ratios_mla_moh.py [--n 1024] [--rounds 20] [--threads 1]

At b=2, d=512, h=8 (e=64): per mode (fwd, decode against a cache of n tokens), the latency of
mla, moh (g=8, on MHA's layout; g=2) and gqa/mqa against mha, per-round ratios; next to it
each variant's analytic KV-cache bytes and what a prefilled `KVCache` really holds, and for moh
its active-head share and active-head FLOPs (`flops_active`) against all the FLOPs it computes
(the official code computes every head).
"""

import argparse

import torch

import attn_variants as av
from harness import measure
from harness.measure import interleave as compare
from harness.measure import workload

B, D, H = 2, 512, 8
CANDIDATES = {  # name -> (variant, g)
    "mha": ("mha", H),
    "gqa_g2": ("gqa", 2),
    "mqa": ("mqa", 1),
    "mla": ("mla", H),
    "moh_g8": ("moh", H),
    "moh_g2": ("moh", 2),
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
            name: workload.build(variant, av.AttnSpec(D, H, g), mode, batch=B, seq_len=args.n)
            for name, (variant, g) in CANDIDATES.items()
        }
        fns = {name: w.step for name, w in loads.items()}
        samples = compare.interleaved(
            fns, rounds=args.rounds, warmup=3, min_sample_s=0.01 if mode == "decode" else 0
        )
        title = f"{mode}, b={B} n={args.n} d={D} h={H}, {args.rounds} rounds, {args.threads} thread(s)"
        compare.print_table(samples, "mha", title)
        print(f"{'candidate':<12}{'kv_cache_bytes':>16}{'cache.nbytes':>14}{'flops':>16}{'flops_active':>16}"
              f"{'active_head_frac':>18}")  # fmt: skip
        for name, w in loads.items():
            cache = av.KVCache()  # what a prefill of the n tokens really stores
            with torch.no_grad():
                w.module(torch.randn(B, args.n, D), cache=cache)
            flops, attention = measure.count_flops_detail(w.step)
            heads = measure.active_heads(w.module, flops, attention)
            active = f"{heads['flops_active']:,}" if heads["flops_active"] is not None else ""
            frac = f"{heads['active_head_frac']:.3f}" if heads["active_head_frac"] is not None else ""
            print(f"{name:<12}{w.kv_cache_bytes:>16,}{cache.nbytes:>14,}{flops:>16,}{active:>16}{frac:>18}")
        print()


if __name__ == "__main__":
    main()
