"""The verdict of `attnbench compare` on one cell, with the run as the unit of drift.

The calls of one run share that run's machine state (a neighbour's load, frequency, cache
layout of the process), so they are not independent draws of "the code's latency": two runs of
identical code differ by more than their calls' spread says. A test that pools calls across
runs (Mann-Whitney U over the calls, a bootstrap of the calls) reads that drift as a change:
on four sweeps of identical code it called 28 of 144 pairwise cells slower or faster at
p < 0.01. Here each run contributes one number per cell, its median latency, and the noise a
change must beat is the variation of those numbers between runs of the same side.

- **One run per side:** the drift between runs cannot be estimated. The verdict is the
  threshold alone: slower iff median(B) / median(A) > 1 + threshold, faster iff it is below
  1 - threshold, else same; no p-value, no interval. The threshold is then the whole budget for
  drift, and `compare` says so in its header.
- **Several runs on a side:** per cell, the mean log run median of each side; their difference
  is the log ratio. The between-run variance of log run medians is pooled over every cell
  compared (sum of squares about each side's cell mean over the summed degrees of freedom):
  with two or three runs a side one cell alone gives one or two degrees of freedom, too few for
  any test, while the log scale makes the drift of a 0.5 ms and a 50 ms cell comparable. A
  cell whose own runs spread more than the pool is judged against its own spread instead
  (s = max(pooled, own)): cells do not all drift alike (a 0.1 ms decode step moves more with a
  neighbour's load than a 50 ms prefill), and the pool must not lend a noisy cell the quiet
  cells' precision. A cell is slower iff its ratio exceeds 1 + threshold and a one-sided
  t-test of log ratio - log(1 + threshold) > 0 (standard error s * sqrt(1/k + 1/l), the pooled
  degrees of freedom) gives p < alpha; faster is the mirror image with log(1 - threshold).
  p10-p90 is the t interval of the ratio.

What it cannot see: drift shared by every run of one side and none of the other (all of A taken
on a quiet machine, all of B on a busy one). Interleave the runs of the two sides in time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Drift:
    """The pooled between-run standard deviation of log run medians and its degrees of freedom
    (df = 0: no side of any cell had two runs, so drift cannot be estimated)."""

    sd: float
    df: int


@dataclass(frozen=True)
class RunVerdict:
    verdict: str  # slower, faster or same
    ratio: float  # geometric mean of B's run medians / that of A's
    p10: float  # NaN with one run per side
    p90: float
    p_value: float


def pooled_drift(cells: Sequence[tuple[Sequence[float], Sequence[float]]]) -> Drift:
    """Drift from the (A run medians, B run medians) of every compared cell."""
    ss, df = 0.0, 0
    for side in (s for cell in cells for s in cell):
        logs = np.log(np.asarray(side, dtype=np.float64))
        ss += float(((logs - logs.mean()) ** 2).sum()) if len(logs) else 0.0
        df += max(len(logs) - 1, 0)
    return Drift(math.sqrt(ss / df) if df else math.nan, df)


def _own_sd(la: np.ndarray, lb: np.ndarray) -> float:
    """This cell's own between-run spread of log medians (0 when no side has two runs)."""
    ss = sum(float(((x - x.mean()) ** 2).sum()) for x in (la, lb))
    df = max(len(la) - 1, 0) + max(len(lb) - 1, 0)
    return math.sqrt(ss / df) if df else 0.0


def judge(
    a: Sequence[float], b: Sequence[float], drift: Drift, *, threshold: float, alpha: float
) -> RunVerdict:
    """The verdict on one cell from its run medians on each side (each a non-empty list)."""
    la, lb = np.log(np.asarray(a, dtype=np.float64)), np.log(np.asarray(b, dtype=np.float64))
    log_ratio = float(lb.mean() - la.mean())
    ratio = math.exp(log_ratio)
    if drift.df == 0 or not drift.sd > 0:
        verdict = "slower" if ratio > 1 + threshold else "faster" if ratio < 1 - threshold else "same"
        return RunVerdict(verdict, ratio, math.nan, math.nan, math.nan)
    from scipy.stats import t  # imported here: scipy.stats costs ~0.5 s to import

    se = max(drift.sd, _own_sd(la, lb)) * math.sqrt(1 / len(la) + 1 / len(lb))
    if ratio > 1:
        p = float(t.sf((log_ratio - math.log1p(threshold)) / se, drift.df))
        verdict = "slower" if ratio > 1 + threshold and p < alpha else "same"
    else:
        p = float(t.cdf((log_ratio - math.log1p(-threshold)) / se, drift.df))
        verdict = "faster" if ratio < 1 - threshold and p < alpha else "same"
    half = float(t.ppf(0.9, drift.df)) * se
    return RunVerdict(verdict, ratio, math.exp(log_ratio - half), math.exp(log_ratio + half), p)
