"""Issue 3's performance goals, printed side by side (interleaved, one process, 1 thread):

    python tests/bench/ratios_keydriven.py

Forward at b=2, n=1024, d=512, h=16, g=4 on CPU: kdgqa / gqa and dgqa / gqa (goal <= 1.5),
pgqa / gqa (goal <= 1.3), and kdgqa's loop-over-groups reference / its fast path (goal >= 2).
Then, for information (no goal), one decode step against a KV cache of N tokens, same shape.
"""

import torch

import attn_variants as av
from attn_variants import keydriven
from harness import compare, workload
from harness.timing import summarize

B, N, D, H, G = 2, 1024, 512, 16, 4
GOALS = {"kdgqa": ("<=", 1.5), "dgqa": ("<=", 1.5), "pgqa": ("<=", 1.3)}


def main(rounds: int = 25) -> None:
    torch.set_num_threads(1)
    spec = av.AttnSpec(D, H, G)

    def fwd(variant: str, mode: str = "fwd"):
        return workload.build(variant, spec, mode, batch=B, seq_len=N)

    fns = {name: fwd(name).step for name in ("gqa", "kdgqa", "dgqa", "pgqa")}
    kdgqa = fwd("kdgqa").module  # same seed: same weights as the timed kdgqa
    x = torch.randn(B, N, D, generator=torch.Generator().manual_seed(0))  # the workload's x (same seed)

    def reference() -> object:
        with torch.no_grad():
            return keydriven.reference_forward(kdgqa, x)

    fns["kdgqa_reference"] = reference
    samples = compare.interleaved(fns, rounds=rounds, warmup=2)
    compare.print_table(samples, "gqa", f"forward, b={B} n={N} d={D} h={H} g={G}, {rounds} rounds, 1 thread")
    for name, (op, goal) in GOALS.items():
        report(samples, name, "gqa", op, goal)
    report(samples, "kdgqa_reference", "kdgqa", ">=", 2.0)
    decode = {name: fwd(name, "decode").step for name in ("gqa", "kdgqa", "dgqa", "pgqa", "mha")}
    samples = compare.interleaved(decode, rounds=4 * rounds, warmup=3)
    compare.print_table(samples, "gqa", f"decode, one token against a cache of {N}, {4 * rounds} rounds")


def report(samples: dict[str, list[float]], name: str, reference: str, op: str, goal: float) -> None:
    """The goal's verdict on the median per-round ratio, plus the ratio of the p10 times (the
    least disturbed calls: a robust cross-check on a machine shared with other jobs)."""
    r = compare.ratios(samples, reference)[name]
    quiet = summarize(samples[name]).p10 / summarize(samples[reference]).p10
    met = r.median <= goal if op == "<=" else r.median >= goal
    print(
        f"{name} / {reference}: {r.median:.3f}x [p10 {r.p10:.3f}, p90 {r.p90:.3f}], "
        f"p10 times {quiet:.3f}x (goal {op} {goal}: {'met' if met else 'MISSED'})"
    )


if __name__ == "__main__":
    main()
