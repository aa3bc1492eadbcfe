"""The generate command's CPU goals, measured (not a test: run it and read the figures).

    python benchmarks/generate_goals.py [--out DIR] [--repeats 5] [--cell gqa:1024]

1. clocks: `ttft_s + (T - 1) * tpot_mean_s` against `wall_s`, every ok row of a default run
   (bench.toml [generate]: every variant at P = 128, 512, 1024, 2048);
2. repeatability: one cell measured `--repeats` times in this process, the spread of tpot_s
   ((max - min) / median), the runs interleaved with nothing else;
3. attn_share: reported at every context for every causal-safe variant, and whether it rises
   with context for the GQA family (mha, gqa, mqa): each step up in P, and first to last.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
from pathlib import Path

import torch

from harness import config, measure
from harness.generate import cell, run
from harness.measure import timing
from harness.variant_choice import parse_one

GQA_FAMILY = ("mha", "gqa", "mqa")


def clocks(df) -> float:
    ok = df[df["status"] == "ok"]
    gap = (ok["ttft_s"] + (ok["new_tokens"] - 1) * ok["tpot_mean_s"]) / ok["wall_s"] - 1
    verdict = "met" if gap.abs().max() < 0.02 else "NOT met"
    print(f"1. clocks: {len(ok)} ok rows; (ttft + (T-1) tpot_mean) / wall - 1: "
          f"min {gap.min():+.3%}, max {gap.max():+.3%}; goal |gap| < 2%: {verdict}")  # fmt: skip
    return float(gap.abs().max())


def shares(df) -> None:
    ok = df[df["status"] == "ok"]
    contexts = sorted(df["context"].unique())
    print(f"3. attn_share at P = {contexts}:")
    for variant, rows in ok.groupby("variant", sort=False):
        s = rows.sort_values("context")["attn_share"].tolist()
        steps_up = sum(b > a for a, b in zip(s, s[1:], strict=False))
        note = f"rises {steps_up}/{len(s) - 1} steps, first->last {s[0]:.2f}->{s[-1]:.2f}"
        print(f"   {variant:7s} {' '.join(f'{x:.3f}' for x in s)}  ({len(s)} contexts; {note})")
    refused = sorted(set(df.loc[df["status"] != "ok", "variant"]))
    print(f"   not run (status rows): {refused}")


def repeatability(cfg: run.GenerateConfig, spec: str, repeats: int) -> None:
    name, _, p = spec.partition("@")
    choice, context = parse_one(name), int(p)
    device = measure.resolve_device(cfg.device)
    cfg = dataclasses.replace(cfg, dtype="float32" if cfg.dtype == "auto" else cfg.dtype)
    with timing.threads(cfg.threads):
        env = measure.environment(device)
        rows = [cell.measure_cell(choice, context, cfg, device, env, "repeat") for _ in range(repeats)]
    print(f"2. repeatability: {name} P={context}, {repeats} runs of the cell:")
    for column in ("tpot_s", "tpot_cpu_s"):
        values = [getattr(r, column) for r in rows]
        if None in values:
            continue
        spread = (max(values) - min(values)) / statistics.median(values)
        print(f"   {column} (ms): {' '.join(f'{t * 1e3:.4g}' for t in values)}; (max - min) / median = "
              f"{spread:.1%}; goal < 5%: {'met' if spread < 0.05 else 'NOT met'}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/generate-goals")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cell", default="gqa@1024", help="variant@context for the repeatability runs")
    ap.add_argument("--profile", default=None)
    args = ap.parse_args()
    cfg = config.load(run.GenerateConfig, "generate", profile=args.profile, overrides={"out": args.out})
    print(f"torch {torch.__version__}, {measure.cpu_name()}, threads={cfg.threads}, config: {cfg}")
    df = run.run(cfg, run_dir=Path(args.out) / "run")
    clocks(df)
    repeatability(cfg, args.cell, args.repeats)
    shares(df)
    print(f"CSV: {df.attrs['csv']}")


if __name__ == "__main__":
    main()
