"""Does `attnbench compare` call run-to-run drift a change? Several sweeps of identical code,
compared pairwise, and a synthetic slowdown that must be found.

    python benchmarks/compare_drift.py                      # 4 sweeps of 12 cells, ~2-3 min on 2 cores
    python benchmarks/compare_drift.py --runs 6 --repeats 100 --out /tmp/drift
    (runs already in --out are read again, not re-measured: delete the folder to measure anew)

Each sweep is its own process (`attnbench sweep`), one after the other, so the runs differ as
two runs of a user's do. Reported, for the rule `compare` uses (reports/run_drift.py) and for
the old rule (Mann-Whitney U over the calls pooled per run, reports.stats.decide):

- false verdicts: every ordered pair of runs (one run a side), every cell; "slower" or "faster"
  between identical code is false;
- with several runs: every split of the runs into two equal halves (k vs k runs);
- found: the same pairs with B's latencies (median and every call) scaled by `--slowdown`
  (a real, uniform slowdown): share of cells "slower", count "faster".
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
from pathlib import Path

import pandas as pd

from reports import comparison as cmp
from reports.stats import decide

SWEEP = ["--variants", "mha,gqa,mqa", "--heads", "8", "--kv-heads", "2", "--modes", "fwd,decode"]


def sweep(out: Path, seq_len: str, repeats: int, threads: int) -> pd.DataFrame:
    """One sweep in a fresh process; its sweep.csv (an earlier one in `out` is read again)."""
    if list(out.glob("*/sweep.csv")):
        return pd.read_csv(next(out.glob("*/sweep.csv")))
    args = [*SWEEP, "--seq-len", seq_len, "--repeats", str(repeats), "--threads", str(threads)]
    cmd = [sys.executable, "-m", "harness.cli", "sweep", *args, "--out", str(out), "--no-report"]
    subprocess.run(cmd, check=True, capture_output=True)
    return pd.read_csv(next(out.glob("*/sweep.csv")))


def scaled(df: pd.DataFrame, factor: float) -> pd.DataFrame:
    """Every latency of a run times `factor`: its medians and its stored calls."""
    calls = df["latency_ms_samples"].map(lambda s: ";".join(f"{float(x) * factor:.6f}" for x in s.split(";")))
    return df.assign(latency_ms_median=df["latency_ms_median"] * factor, latency_ms_samples=calls)


def verdicts(a: list[pd.DataFrame], b: list[pd.DataFrame], threshold: float) -> pd.Series:
    comp = cmp.compare(a, b, threshold=threshold)
    return comp.cells.loc[comp.cells["status_a"] == "ok", "verdict"]


def pooled_calls(a: pd.DataFrame, b: pd.DataFrame, threshold: float) -> pd.Series:
    """The old rule: Mann-Whitney U of B's calls against A's, both runs' calls as independent draws."""
    key = ["variant", "mode", "seq_len", "n_kv_heads"]
    merged = a.merge(b, on=key, suffixes=("_a", "_b"))
    out = []
    for row in merged.to_dict("records"):
        sa, sb = (list(map(float, row[f"latency_ms_samples_{s}"].split(";"))) for s in "ab")
        d = decide(sb, sa, tolerance=threshold, alpha=cmp.ALPHA)
        out.append({"REGRESSED": "slower", "improved": "faster"}.get(d.verdict, "same"))
    return pd.Series(out)


def tally(name: str, parts: list[pd.Series]) -> None:
    allv = pd.concat(parts, ignore_index=True)
    slow, fast = int((allv == "slower").sum()), int((allv == "faster").sum())
    print(f"{name}: {len(allv)} verdicts, {slow} slower, {fast} faster ({(slow + fast) / len(allv):.1%})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--seq-len", default="128,512")
    ap.add_argument("--repeats", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--threshold", type=float, default=0.05)
    ap.add_argument("--slowdown", type=float, default=1.10)
    ap.add_argument("--out", type=Path, default=Path("results/compare_drift"))
    args = ap.parse_args()
    runs = [sweep(args.out / f"run{i}", args.seq_len, args.repeats, args.threads) for i in range(args.runs)]
    pairs = list(itertools.permutations(range(args.runs), 2))
    t, f = args.threshold, args.slowdown
    print(f"{args.runs} runs of {len(runs[0])} cells; threshold {t:g}; slowdown x{f:g}")
    tally(
        "old rule (calls pooled), identical code, 1 vs 1",
        [pooled_calls(runs[i], runs[j], t) for i, j in pairs],
    )
    tally("run rule, identical code, 1 vs 1", [verdicts([runs[i]], [runs[j]], t) for i, j in pairs])
    halves = [h for h in itertools.combinations(range(args.runs), args.runs // 2) if 0 in h]
    other = [[i for i in range(args.runs) if i not in h] for h in halves]
    if args.runs >= 4:
        split = [(list(h), o) for h, o in zip(halves, other, strict=True)]
        split += [(o, list(h)) for h, o in split]
        tally(
            f"run rule, identical code, {args.runs // 2} vs {args.runs // 2}",
            [verdicts([runs[i] for i in h], [runs[i] for i in o], t) for h, o in split],
        )
        tally(
            f"run rule, B x{f:g}, {args.runs // 2} vs {args.runs // 2}",
            [verdicts([runs[i] for i in h], [scaled(runs[i], f) for i in o], t) for h, o in split],
        )
    tally(
        f"old rule (calls pooled), B x{f:g}, 1 vs 1",
        [pooled_calls(runs[i], scaled(runs[j], f), t) for i, j in pairs],
    )
    tally(f"run rule, B x{f:g}, 1 vs 1", [verdicts([runs[i]], [scaled(runs[j], f)], t) for i, j in pairs])
    ratios = pd.concat(
        [cmp.compare(runs[i], runs[j]).cells["ratio"].dropna() for i, j in pairs], ignore_index=True
    )
    q = ratios.quantile([0.01, 0.1, 0.5, 0.9, 0.99])
    print("identical code, B/A of cell medians, p1/p10/p50/p90/p99: " + " ".join(f"{x:.3f}" for x in q))


if __name__ == "__main__":
    main()
