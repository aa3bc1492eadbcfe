"""Issue 4's performance goal, printed side by side (interleaved, one process, one thread):

    python tests/bench/ratios_mmca.py

mmca ("self" and "full") vs the concat baseline (gqa reading [visual; text] as one causal
stream) forward at b=2, m=256 visual + 768 text tokens (n=1024), d=512, h=8, g=2.
Goal: mmca / concat <= 1.5.
"""

import torch

import attn_variants as av
from harness import compare, workload

B, M, N_TEXT, D, H, G = 2, 256, 768, 512, 8, 2
GOAL = 1.5


def main(rounds: int = 30) -> None:
    torch.set_num_threads(1)  # a shared machine: one thread per process times steadily
    spec = av.AttnSpec(D, H, G)

    def fwd(variant: str, **opts):
        n = M + N_TEXT
        return workload.build(variant, spec, "fwd", batch=B, seq_len=n, n_visual=M, options=opts).step

    fns = {
        "concat": fwd("gqa"),  # a unimodal variant given n_visual: one causal stream, one softmax
        "mmca_self": fwd("mmca", visual_attention="self"),
        "mmca_full": fwd("mmca", visual_attention="full"),
    }
    samples = compare.interleaved(fns, rounds=rounds, warmup=3)
    title = f"forward, b={B} m={M} n_text={N_TEXT} d={D} h={H} g={G}, {rounds} rounds, 1 thread"
    compare.print_table(samples, "concat", title)
    rel = compare.ratios(samples, "concat")
    for name in ("mmca_self", "mmca_full"):
        verdict = "meets" if rel[name].median <= GOAL else "MISSES"
        print(f"{name} / concat: {rel[name].median:.3f}x ({verdict} the goal <= {GOAL}x)")


if __name__ == "__main__":
    main()
