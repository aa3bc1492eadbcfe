"""The key-driven and perturbed variants' performance goals, printed side by side (interleaved,
one process, 1 thread, CPU):

    python benchmarks/ratios_keydriven.py [--base REV] [--rounds R]

1. Forward at b=2, n=1024, d=512, h=16, g=4 (issue 3): kdgqa / gqa and dgqa / gqa (goal
   <= 1.5), pgqa / gqa (goal <= 1.3), and kdgqa's loop-over-groups reference / its fast path
   (goal >= 2).
2. Decode, one new token against a KV cache of S=4096, same shape (issue 18): kdgqa / gqa and
   dgqa / gqa (goal <= 1.15), pgqa / gqa (goal <= 1.10). For information: mha, and kdgqa with
   the accelerator's decode path (rows = h, no reads of device values, see
   `keydecode.decode_layout`).
3. Before / after (issue 18): with `--base REV` (default: the first commit of this work's
   parent, ad57e94), the package as it was at REV is extracted from git into a temporary
   folder and imported beside this one; every variant runs in fwd, fwd_bwd and decode at both
   versions, interleaved, with the same weights and inputs. Goal for fwd and fwd_bwd: new / old
   <= 1.05 (no slower, within the noise of a shared machine).
"""

import argparse
import importlib
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

import attn_variants as av
from attn_variants import keydecode, keydriven
from harness.measure import interleave as compare
from harness.measure import workload
from harness.measure.timing import summarize

B, N, S, D, H, G = 2, 1024, 4096, 512, 16, 4
BASE = "ad57e94"  # main before issue 18
SAMPLE_S = 0.01  # decode: a sample is >= 10 ms of back-to-back steps (one step is ~1-2 ms)
FORWARD_GOALS = {"kdgqa": ("<=", 1.5), "dgqa": ("<=", 1.5), "pgqa": ("<=", 1.3)}
DECODE_GOALS = {"kdgqa": ("<=", 1.15), "dgqa": ("<=", 1.15), "pgqa": ("<=", 1.10)}
VARIANTS = ("kdgqa", "dgqa", "pgqa")
STEPS = {"fwd": workload._forward, "fwd_bwd": workload._forward_backward, "decode": workload._decode}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=BASE, help="git revision to compare against ('' skips it)")
    parser.add_argument("--rounds", type=int, default=25)
    args = parser.parse_args()
    torch.set_num_threads(1)
    forward(args.rounds)
    decode(4 * args.rounds)
    if args.base:
        before_after(args.base, args.rounds)


def build(variant: str, mode: str, seq_len: int):
    return workload.build(variant, av.AttnSpec(D, H, G), mode, batch=B, seq_len=seq_len)


def forward(rounds: int) -> None:
    fns = {name: build(name, "fwd", N).step for name in ("gqa", *VARIANTS)}
    kdgqa = build("kdgqa", "fwd", N).module  # same seed: same weights as the timed kdgqa
    x = torch.randn(B, N, D, generator=torch.Generator().manual_seed(0))  # the workload's x (same seed)

    def reference() -> object:
        with torch.no_grad():
            return keydriven.reference_forward(kdgqa, x)

    fns["kdgqa_reference"] = reference
    samples = compare.interleaved(fns, rounds=rounds, warmup=2)
    compare.print_table(samples, "gqa", f"forward, b={B} n={N} d={D} h={H} g={G}, {rounds} rounds, 1 thread")
    for name, (op, goal) in FORWARD_GOALS.items():
        report(samples, name, "gqa", op, goal)
    report(samples, "kdgqa_reference", "kdgqa", ">=", 2.0)


def decode(rounds: int) -> None:
    fns = {name: build(name, "decode", S).step for name in ("gqa", *VARIANTS, "mha")}
    fns["kdgqa_rows_h"] = padded_to_h(build("kdgqa", "decode", S).step)
    samples = compare.interleaved(fns, rounds=rounds, warmup=3, min_sample_s=SAMPLE_S)
    title = (
        f"\ndecode, one token against a cache of {S}, {rounds} rounds of >= {SAMPLE_S * 1e3:.0f} ms, 1 thread"
    )
    compare.print_table(samples, "gqa", title)
    for name, (op, goal) in DECODE_GOALS.items():
        report(samples, name, "gqa", op, goal)


def padded_to_h(step):
    """kdgqa's decode step with h query rows per KV head, as on an accelerator."""

    def run() -> object:
        chosen = keydecode.on_host
        keydecode.on_host = lambda t: False
        try:
            return step()
        finally:
            keydecode.on_host = chosen

    return run


def before_after(rev: str, rounds: int) -> None:
    base = import_base(rev)
    for mode in ("fwd", "fwd_bwd", "decode"):
        seq_len = S if mode == "decode" else N
        fns = {"gqa": build("gqa", mode, seq_len).step}
        for name in VARIANTS:
            fns[name] = build(name, mode, seq_len).step
            fns[f"{name}@{rev}"] = build_base(base, name, mode, seq_len)
        decoding = mode == "decode"
        r = rounds * (4 if decoding else 1)
        samples = compare.interleaved(fns, rounds=r, warmup=2, min_sample_s=SAMPLE_S if decoding else 0.0)
        print()
        print(f"{mode} at n={seq_len}: this tree against {rev}, {r} rounds, 1 thread")
        for name in VARIANTS:
            report(samples, name, f"{name}@{rev}", *(("", None) if decoding else ("<=", 1.05)))
        for name in VARIANTS:  # both versions against gqa, for the record
            report(samples, f"{name}@{rev}", "gqa", "", None)
            report(samples, name, "gqa", "", None)


def import_base(rev: str):
    """The attn_variants package as of git revision `rev`, importable as attn_variants_base."""
    folder = Path(tempfile.mkdtemp(prefix="attn_variants_base_"))
    root = Path(__file__).resolve().parents[2]
    tar = subprocess.run(
        ["git", "-C", str(root), "archive", rev, "attn_variants"], check=True, capture_output=True
    )
    subprocess.run(["tar", "-x", "-C", str(folder)], input=tar.stdout, check=True)
    (folder / "attn_variants").rename(folder / "attn_variants_base")
    sys.path.insert(0, str(folder))
    return importlib.import_module("attn_variants_base")


def build_base(base, variant: str, mode: str, seq_len: int, seed: int = 0):
    """`workload.build`'s step for the old package's module: same seeds, same weights and x."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    torch.manual_seed(seed)
    module = base.create(variant, base.AttnSpec(D, H, G))
    x = torch.randn(B, seq_len, D, generator=gen)
    return STEPS[mode](module, module, x, {"n_visual": 0}, gen)  # (module, run, x, layout_kw, gen)


def report(samples: dict[str, list[float]], name: str, reference: str, op: str, goal: float | None) -> None:
    """The goal's verdict on the median per-round ratio, plus the ratio of the p10 times (the
    least disturbed calls: a robust cross-check on a machine shared with other jobs)."""
    r = compare.ratios(samples, reference)[name]
    quiet = summarize(samples[name]).p10 / summarize(samples[reference]).p10
    verdict = ""
    if goal is not None:
        met = r.median <= goal if op == "<=" else r.median >= goal
        verdict = f" (goal {op} {goal}: {'met' if met else 'MISSED'})"
    spread = f"[p10 {r.p10:.3f}, p90 {r.p90:.3f}]"
    print(f"{name} / {reference}: {r.median:.3f}x {spread}, p10 times {quiet:.3f}x{verdict}")


if __name__ == "__main__":
    main()
