"""Issue 2's performance goals, printed side by side (interleaved, one process):

    python benchmarks/ratios_gqa.py

gqa (g=2) vs mha forward at b=2, n=1024, d=512, h=8 (goal: ratio <= 1.05), and the sdpa fast
path vs the eager reference at n=1024 (goal: eager / sdpa >= 2).
"""

import torch

import attn_variants as av
from harness.measure import interleave as compare
from harness.measure import workload

B, N, D, H = 2, 1024, 512, 8


def main(rounds: int = 30) -> None:
    torch.set_num_threads(2)
    spec = av.AttnSpec(D, H, 2)

    def fwd(variant: str, **opts):
        return workload.build(variant, spec, "fwd", batch=B, seq_len=N, options=opts).step

    fns = {"mha": fwd("mha"), "gqa_g2": fwd("gqa"), "gqa_g2_eager": fwd("gqa", backend="eager")}
    samples = compare.interleaved(fns, rounds=rounds, warmup=3)
    compare.print_table(samples, "mha", f"forward, b={B} n={N} d={D} h={H}, {rounds} rounds, 2 threads")
    rel = compare.ratios(samples, "gqa_g2")
    print(f"eager / sdpa (gqa_g2): {rel['gqa_g2_eager'].median:.2f}x")


if __name__ == "__main__":
    main()
