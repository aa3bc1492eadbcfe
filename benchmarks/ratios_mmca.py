"""Issues 4 and 17's performance goals, printed side by side (interleaved, one process, one thread):

    python benchmarks/ratios_mmca.py

mmca ("self" and "full") vs the concat baseline (gqa reading the sequence as one causal
stream) forward at b=2, m=256 image + 768 text tokens (n=1024), d=512, h=8, g=2, in two layouts:

- prefix: one image first (n_visual=m), mmca's three-SDPA slice path. Goal: mmca / concat <= 1.0;
- interleaved: the same m image tokens as 2 images between text (workload.modality_ids), mmca's
  two masked SDPA calls. Reported against concat given the same ids (it validates, then ignores
  them); no goal: two full-length masked calls cost more than one causal call.
"""

import torch

import attn_variants as av
from harness.measure import interleave as compare
from harness.measure import workload

B, M, N_TEXT, D, H, G, IMAGES = 2, 256, 768, 512, 8, 2, 2
GOAL = 1.0


def main(rounds: int = 30) -> None:
    torch.set_num_threads(1)  # a shared machine: one thread per process times steadily
    spec = av.AttnSpec(D, H, G)

    def fwd(variant: str, layout: str = "prefix", **opts):
        kw = dict(batch=B, seq_len=M + N_TEXT, n_visual=M, layout=layout, images=IMAGES, options=opts)
        return workload.build(variant, spec, "fwd", **kw).step

    fns = {
        "concat": fwd("concat"),  # one causal stream, one softmax
        "mmca_self": fwd("mmca", visual_attention="self"),
        "mmca_full": fwd("mmca", visual_attention="full"),
        "concat_interleaved": fwd("concat", "interleaved"),
        "mmca_self_interleaved": fwd("mmca", "interleaved", visual_attention="self"),
        "mmca_full_interleaved": fwd("mmca", "interleaved", visual_attention="full"),
    }
    samples = compare.interleaved(fns, rounds=rounds, warmup=3)
    title = f"forward, b={B} m={M} n_text={N_TEXT} d={D} h={H} g={G}, {rounds} rounds, 1 thread"
    compare.print_table(samples, "concat", title)
    rel = compare.ratios(samples, "concat")
    for name in ("mmca_self", "mmca_full"):
        verdict = "meets" if rel[name].median <= GOAL else "MISSES"
        print(f"prefix {name} / concat: {rel[name].median:.3f}x ({verdict} the goal <= {GOAL}x)")
    rel = compare.ratios(samples, "concat_interleaved")
    for name in ("mmca_self_interleaved", "mmca_full_interleaved"):
        print(f"{name} / concat_interleaved: {rel[name].median:.3f}x ({IMAGES} images, no goal)")


if __name__ == "__main__":
    main()
