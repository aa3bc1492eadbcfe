"""Decode at the roof: each variant's decode step against the time to read what it must read.

    python benchmarks/ratios_decode_roof.py [--s 16384] [--b 1] [--rounds 15] [--threads 1]

At d=1024, h=16, g=4 (mha and mla fix their own g), one process, CPU, rounds interleaved:
each variant's decode step (one token against a cache of s tokens, `workload.build`, as the
sweep times it) and, as its own candidate, a `sum` over a buffer of the bytes the step must
read (`roof.decode_bytes`: the cache as the registry counts it, the weights, x in and out).
Printed per variant: the step's median and p10-p90, its bytes, the per-round ratio step / sum,
the roofline time from `attnbench calibrate`'s peaks (max of bytes over bandwidth and FLOPs
over matmul FLOP/s) with the step's ratio to it, what bounds it, and its ratio to gqa's step.

Goals (s=16,384, b=1): mha, mqa, gqa, concat: step / sum <= 2.0; kdgqa, dgqa, pgqa, moh:
0.95 <= step / gqa <= 1.15; mla: step / roofline <= 2.5; the sweep's roof_util
(= roofline / step) within 25% of the benchmark's own sum / step.
"""

import argparse

import torch

import attn_variants as av
from harness import calibrate, compare, flops, roof, workload
from harness.timing import summarize

D, H, G = 1024, 16, 4
VARIANTS = ("mha", "mqa", "gqa", "concat", "kdgqa", "dgqa", "pgqa", "moh", "mla", "mmca")
GQA_FAMILY = ("mha", "mqa", "gqa", "concat")
ON_GQA = ("kdgqa", "dgqa", "pgqa", "moh")
SAMPLE_S = 0.02  # a sample is >= 20 ms of back-to-back calls (a step is 1-20 ms)


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
    fns = {}
    for name, (w, n_bytes, _) in built.items():
        fns[name] = w.step
        fns[f"sum:{name}"] = torch.ones(n_bytes // 4).sum  # float32: n_bytes of it, read once
    samples = compare.interleaved(fns, rounds=args.rounds, warmup=2, min_sample_s=SAMPLE_S)
    print(
        f"decode, b={args.b} s={args.s} d={D} h={H} g={G}, {args.rounds} interleaved rounds of >= "
        f"{SAMPLE_S * 1e3:.0f} ms, {args.threads} thread(s), torch {torch.__version__}; roof: "
        f"{peaks.peak_bytes_per_s / 1e9:.1f} GB/s, {peaks.peak_flops / 1e9:.1f} GFLOP/s ({peaks.device_name})"
    )
    table(built, samples, peaks, args.s)


def spread(s) -> str:
    return f"{s.median:.2f} [{s.p10:.2f},{s.p90:.2f}]"


def table(built: dict, samples: dict[str, list[float]], peaks, s: int) -> None:
    print(
        f"{'variant':<8}{'step ms':>9}{'p10-p90':>14}{'MB':>8}{'sum ms':>8}{'step/sum':>18}"
        f"{'roof ms':>9}{'bound':>9}{'step/roof':>10}{'roof_util':>10}{'sum/step':>9}{'step/gqa':>18}"
    )
    to_gqa = compare.ratios(samples, "gqa") if "gqa" in samples else {}
    for name, (_, n_bytes, fl) in built.items():
        t, r = summarize(samples[name]), summarize(samples[f"sum:{name}"])
        per_round = summarize([a / b for a, b in zip(samples[name], samples[f"sum:{name}"], strict=True)])
        roof_time = roof.roof_s(n_bytes, fl, peaks.peak_bytes_per_s, peaks.peak_flops)
        kind = roof.bound(n_bytes, fl, peaks.peak_bytes_per_s, peaks.peak_flops)
        times = f"{t.p10 * 1e3:.2f}-{t.p90 * 1e3:.2f}"
        gqa = spread(to_gqa[name]) if name in to_gqa else ""
        print(
            f"{name:<8}{t.median * 1e3:>9.2f}{times:>14}{n_bytes / 1e6:>8.1f}{r.median * 1e3:>8.2f}"
            f"{spread(per_round):>18}{roof_time * 1e3:>9.2f}{kind:>9}{t.median / roof_time:>10.2f}"
            f"{roof_time / t.median:>10.3f}{r.median / t.median:>9.3f}{gqa:>18}"
        )
    verdicts(built, samples, peaks)


def verdicts(built: dict, samples: dict[str, list[float]], peaks) -> None:
    """The issue's goals, each with its figure and met / MISSED."""
    lines = []
    for name in GQA_FAMILY:
        if name in built:
            r = compare.ratios({"a": samples[name], "b": samples[f"sum:{name}"]}, "b")["a"].median
            lines.append((f"{name} step / sum", r, r <= 2.0, "<= 2.0"))
    if "gqa" in samples:
        to_gqa = compare.ratios(samples, "gqa")
        for name in ON_GQA:
            if name in built:
                r = to_gqa[name].median
                lines.append((f"{name} step / gqa step", r, 0.95 <= r <= 1.15, "in [0.95, 1.15]"))
    if "mla" in built:
        _, n_bytes, fl = built["mla"]
        r = summarize(samples["mla"]).median / roof.roof_s(
            n_bytes, fl, peaks.peak_bytes_per_s, peaks.peak_flops
        )
        lines.append(("mla step / roofline", r, r <= 2.5, "<= 2.5"))
    print()
    for label, r, met, goal in lines:
        print(f"{label:<24}{r:>8.3f}  goal {goal}: {'met' if met else 'MISSED'}")


if __name__ == "__main__":
    main()
