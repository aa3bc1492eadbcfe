"""Are short steps timed cold? The first 20 timed samples of each cell against its last 20,
with the fixed 3-call warm-up (`--warmup-s 0`) and with the warm-up by time (the default).

    python benchmarks/warmup_cold.py                     # decode cells, 100 repeats, ~1-2 min on 2 cores
    python benchmarks/warmup_cold.py --modes fwd,decode --out /tmp/warm

Each setting is one sweep in its own process (`attnbench sweep --repeats 100 --warmup 3`), run
one after the other and then once more in the other order, so a change of machine load during
the run does not favour one setting. Printed per setting: the median over cells of
median(first 20) / median(last 20), its range, and the warm-up calls the rows record.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

SWEEP = ["--variants", "mha,gqa,mqa", "--heads", "8", "--kv-heads", "2", "--threads", "1", "--no-report"]


def sweep(out: Path, modes: str, seq_len: str, warmup_s: float) -> pd.DataFrame:
    cmd = [sys.executable, "-m", "harness.cli", "sweep", *SWEEP, "--modes", modes, "--seq-len", seq_len]
    cmd += ["--repeats", "100", "--warmup", "3", "--warmup-s", str(warmup_s), "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True)
    return pd.concat(pd.read_csv(p) for p in sorted(out.glob("*/sweep.csv")))


def cold_ratio(samples: str) -> float:
    s = np.array([float(x) for x in samples.split(";")])
    return float(np.median(s[:20]) / np.median(s[-20:]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", default="decode")
    ap.add_argument("--seq-len", default="128,512")
    ap.add_argument("--out", type=Path, default=Path("results/warmup_cold"))
    args = ap.parse_args()
    settings = {"fixed 3 calls": 0.0, "by time (0.1 s)": 0.1}
    frames: dict[str, list[pd.DataFrame]] = {name: [] for name in settings}
    for order in (list(settings), list(settings)[::-1]):
        for name in order:
            out = args.out / f"{name.split()[0]}-{len(frames[name])}"
            frames[name].append(sweep(out, args.modes, args.seq_len, settings[name]))
    for name, parts in frames.items():
        df = pd.concat(parts)
        df = df[df["status"] == "ok"]
        ratio = df["latency_ms_samples"].map(cold_ratio)
        calls = df["warmup_calls"]
        print(
            f"{name}: first-20 / last-20 median over {len(df)} cells {ratio.median():.3f} "
            f"(range {ratio.min():.3f}-{ratio.max():.3f}); "
            f"warm-up calls {int(calls.min())}-{int(calls.max())}"
        )


if __name__ == "__main__":
    main()
