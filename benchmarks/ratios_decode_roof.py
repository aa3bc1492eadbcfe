"""Decode at the roof: each variant's decode step against the time to read what it must read.

    python benchmarks/ratios_decode_roof.py [--s 16384] [--b 1] [--rounds 15] [--threads 1]

At d=1024, h=16, g=4 (mha and mla fix their own g), one process, CPU, rounds interleaved:
each variant's decode step (one token against a cache of s tokens, `workload.build`, as the
sweep times it) and, as its own candidate, a `sum` over a buffer of the bytes the step must
read (`roof.decode_bytes`: the cache as the registry counts it, the weights, x in and out); and
`matmul`, calibrate's k x k product (2 k^3 FLOPs), so each round has its own FLOP/s.

Printed per variant: the step's median and p10-p90 (ms), its bytes (MB), the per-round ratio
step / sum; the per-round roofline ratio step / max(sum, FLOPs at that round's matmul rate)
(`in-run`: both roofs measured in the same rounds as the step, so machine load cancels); the
roofline time from `attnbench calibrate`'s cached peaks and roof_util = that / step median, as
the sweep computes it (an idle machine's roof: on a loaded one it reads low); what bounds the
step; and the per-round ratio to gqa's step.

Goals (s=16,384, b=1): mha, mqa, gqa, concat: step / sum <= 2.0; kdgqa, dgqa, pgqa, moh:
0.95 <= step / gqa <= 1.15; mla: step / roofline <= 2.5 (compute-bound on a CPU); the sweep's
roof_util within 25% of the benchmark's own in-run roof / step (sum / step where memory bounds).
"""

import argparse

import torch

import attn_variants as av
from harness.measure import calibrate, flops, roof, workload
from harness.measure import interleave as compare
from harness.measure.timing import Summary, summarize

D, H, G = 1024, 16, 4
VARIANTS = ("mha", "mqa", "gqa", "concat", "kdgqa", "dgqa", "pgqa", "moh", "mla", "mmca")
GQA_FAMILY = ("mha", "mqa", "gqa", "concat")
ON_GQA = ("kdgqa", "dgqa", "pgqa", "moh")
SAMPLE_S = 0.02  # a sample is >= 20 ms of back-to-back calls (a step is 1-20 ms)
K = calibrate.MATMUL_K["cpu"]


def build(variant: str, s: int, b: int) -> tuple[workload.Workload, int, int]:
    """The decode workload, its bytes (roof.decode_bytes) and its FLOPs (the sweep's count)."""
    w = workload.build(variant, av.AttnSpec(D, H, G), "decode", batch=b, seq_len=s)
    n_bytes = roof.decode_bytes(w.module, w.kv_cache_bytes, b, 1, torch.float32)
    counted = flops.count_real(w.step)
    w.step()  # count_real ran the step under the math kernel; warm the timed one
    return w, n_bytes, counted.flops_effective


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--s", type=int, default=16384)
    parser.add_argument("--b", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    peaks = calibrate.get(torch.device("cpu"), "float32")
    built = {v: build(v, args.s, args.b) for v in args.variants.split(",")}
    x, y = torch.randn(K, K), torch.randn(K, K)
    fns = {"matmul": lambda: x @ y}
    for name, (w, n_bytes, _) in built.items():
        fns[name] = w.step
        fns[f"sum:{name}"] = torch.ones(n_bytes // 4).sum  # float32: n_bytes of it, read once
    samples = compare.interleaved(fns, rounds=args.rounds, warmup=2, min_sample_s=SAMPLE_S)
    print(
        f"decode, b={args.b} s={args.s} d={D} h={H} g={G}, {args.rounds} interleaved rounds of >= "
        f"{SAMPLE_S * 1e3:.0f} ms, {args.threads} thread(s), torch {torch.__version__}; calibrated roof "
        f"({peaks.device_name}): {peaks.peak_bytes_per_s / 1e9:.1f} GB/s, "
        f"{peaks.peak_flops / 1e9:.1f} GFLOP/s; "
        f"in-run matmul: {2 * K**3 / summarize(samples['matmul']).median / 1e9:.1f} GFLOP/s (median)"
    )
    table(built, samples, peaks)


def per_round(samples: dict[str, list[float]], name: str, fl: int) -> tuple[Summary, Summary]:
    """The step over its sum, and over its in-run roofline max(sum, FLOPs at the round's
    matmul rate), per round."""
    rows = zip(samples[name], samples[f"sum:{name}"], samples["matmul"], strict=True)
    by_round = [(t, s, max(s, fl * m / (2 * K**3))) for t, s, m in rows]
    return summarize([t / s for t, s, _ in by_round]), summarize([t / r for t, _, r in by_round])


def spread(s: Summary) -> str:
    return f"{s.median:.2f} [{s.p10:.2f},{s.p90:.2f}]"


def table(built: dict, samples: dict[str, list[float]], peaks) -> None:
    print(
        f"{'variant':<8}{'step ms':>9}{'p10-p90':>14}{'MB':>7}{'step/sum':>18}{'step/roof in-run':>19}"
        f"{'roof_s ms':>10}{'roof_util':>10}{'bound':>9}{'step/gqa':>18}"
    )
    to_gqa = compare.ratios(samples, "gqa") if "gqa" in samples else {}
    verdicts = []
    for name, (_, n_bytes, fl) in built.items():
        t = summarize(samples[name])
        to_sum, to_roof = per_round(samples, name, fl)
        roof_time = roof.roof_s(n_bytes, fl, peaks.peak_bytes_per_s, peaks.peak_flops)
        kind = roof.bound(n_bytes, fl, peaks.peak_bytes_per_s, peaks.peak_flops)
        times = f"{t.p10 * 1e3:.2f}-{t.p90 * 1e3:.2f}"
        gqa = spread(to_gqa[name]) if name in to_gqa else ""
        print(
            f"{name:<8}{t.median * 1e3:>9.2f}{times:>14}{n_bytes / 1e6:>7.1f}{spread(to_sum):>18}"
            f"{spread(to_roof):>19}{roof_time * 1e3:>10.2f}{roof_time / t.median:>10.3f}{kind:>9}{gqa:>18}"
        )
        verdicts += goals(name, to_sum, to_roof, to_gqa.get(name), roof_time / t.median)
    print()
    for label, r, met, goal in verdicts:
        print(f"{label:<40}{r:>8.3f}  goal {goal}: {'met' if met else 'MISSED'}")


def goals(name: str, to_sum: Summary, to_roof: Summary, to_gqa: Summary | None, roof_util: float) -> list:
    """The issue's goals for `name`: (label, figure, met, goal)."""
    lines = []
    if name in GQA_FAMILY:
        lines.append((f"{name} step / sum", to_sum.median, to_sum.median <= 2.0, "<= 2.0"))
    if name in ON_GQA and to_gqa is not None:
        lines.append(
            (f"{name} step / gqa step", to_gqa.median, 0.95 <= to_gqa.median <= 1.15, "in [0.95, 1.15]")
        )
    if name == "mla":
        lines.append(("mla step / roofline (in-run)", to_roof.median, to_roof.median <= 2.5, "<= 2.5"))
    agree = roof_util * to_roof.median  # the sweep's roof_util over the benchmark's roof / step
    lines.append(
        (f"{name} roof_util / (in-run roof / step)", agree, 0.75 <= agree <= 1.25, "in [0.75, 1.25]")
    )
    return lines


if __name__ == "__main__":
    main()
