"""The regression decision of `attnbench check` and `attnbench compare`, on two sets of samples.

A top-level package of its own that imports no other module of the project (nor torch, nor
matplotlib), so that both sides may import it: the check and the harness's timing (harness, which
does not import reports) and the run-against-run comparison (reports, which does not import
harness) share these statistics and this one decision. For `check` a sample is a per-round
ratio; for `compare` a per-call latency.

In `check` a sample is one round's ratio variant time / reference time, measured interleaved
in one process (harness/measure/interleave.py), so machine-wide drift mostly cancels. The baseline CSV keeps
every per-round ratio of the run it was taken from, not only their median.

The test, and why this one. A cell REGRESSED iff both:

1. effect: median(new) > median(baseline) * (1 + tolerance), and
2. significance: a one-sided Mann-Whitney U test (scipy.stats.mannwhitneyu,
   alternative="greater") of the new ratios against the baseline ratios scaled by
   (1 + tolerance) gives p < alpha.

- Two samples, not one: the baseline median is itself an estimate from a finite number of
  rounds on a noisy machine. A one-sample test (Wilcoxon signed-rank, or a bootstrap interval
  of the new median) against the stored median would treat that estimate as exact and
  carry its error straight into the verdict. Mann-Whitney U compares the two sets of rounds,
  so the baseline's own spread counts.
- Rank-based: timing ratios on a shared machine have a heavy right tail (a round in which the
  OS preempted the variant but not the reference). Ranks are not moved by how far such a round
  lies; no normality and, unlike the signed-rank test, no symmetry is assumed.
- Scaling the baseline by (1 + tolerance) makes the null hypothesis "the new ratios are not
  stochastically larger than the baseline's plus the tolerance", i.e. in log space a location
  shift of at most log(1 + tolerance). A 1.05x change under tolerance 0.15 is therefore not a
  regression however many rounds are taken; the test only decides whether a shift beyond the
  tolerance is real or a few unlucky rounds.
- The effect rule alone would flag a cell whose median crossed the line by chance with few
  rounds; the test alone (with many rounds) would flag a shift that is significant but
  within the tolerance. Both are required.
- What neither can see: drift between the baseline run and this one that moves every round
  of a cell alike (another CPU model, a different torch build, a busy memory bus). The
  tolerance is the budget for that; the check refuses a baseline from another device kind.

`alpha` is per cell (default 0.01). Rounds are treated as independent; alternating the
order in each round (variant first, then reference first) keeps them closer to that.
IMPROVED is the mirror image: median below baseline * (1 - tolerance), alternative="less".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

Verdict = Literal["ok", "REGRESSED", "improved", "new"]


@dataclass(frozen=True)
class Summary:
    """Median and the p10/p90 spread of a set of samples (in the samples' unit)."""

    median: float
    p10: float
    p90: float
    n: int


def summarize(samples: Sequence[float]) -> Summary:
    """Median and p10/p90 of `samples` (linear interpolation, numpy's and torch's default)."""
    if len(samples) == 0:
        raise ValueError("no samples to summarize")
    p10, median, p90 = np.quantile(np.asarray(samples, dtype=np.float64), [0.1, 0.5, 0.9]).tolist()
    return Summary(median=median, p10=p10, p90=p90, n=len(samples))


@dataclass(frozen=True)
class Decision:
    """The verdict on one cell and the figures it rests on (ratios are variant / reference)."""

    verdict: Verdict
    median: float  # median per-round ratio of this run
    p10: float
    p90: float
    baseline: float | None  # the baseline's median ratio; None when the cell is new
    change: float | None  # median / baseline - 1
    p_value: float | None  # one-sided Mann-Whitney U on the side the median moved to


def smallest_p(n_new: int, n_baseline: int) -> float:
    """The smallest one-sided p-value Mann-Whitney U can give for these sample sizes (no ties):
    1 / C(n + m, n), when every new sample outranks every baseline sample."""
    log_comb = math.lgamma(n_new + n_baseline + 1) - math.lgamma(n_new + 1) - math.lgamma(n_baseline + 1)
    return math.exp(-log_comb)


def decide(
    new: Sequence[float], baseline: Sequence[float] | None, *, tolerance: float, alpha: float
) -> Decision:
    """Verdict of one cell from its per-round ratios and the baseline's (None: not in the baseline)."""
    if not 0 < tolerance < 1 or not 0 < alpha < 1:
        raise ValueError(f"tolerance={tolerance} and alpha={alpha} must both be in (0, 1)")
    s = summarize(new)
    if not baseline:
        return Decision("new", s.median, s.p10, s.p90, None, None, None)
    if smallest_p(len(new), len(baseline)) >= alpha:
        raise ValueError(
            f"{len(new)} new and {len(baseline)} baseline rounds cannot reach alpha={alpha} "
            f"(smallest possible p = {smallest_p(len(new), len(baseline)):.3g}); take more rounds"
        )
    # Imported here: scipy.stats costs ~0.5 s to import, and far more under valgrind.
    from scipy.stats import mannwhitneyu

    base = summarize(baseline).median
    up = [r * (1 + tolerance) for r in baseline]
    down = [r * (1 - tolerance) for r in baseline]
    if s.median > base:
        p = float(mannwhitneyu(new, up, alternative="greater").pvalue)
        verdict: Verdict = "REGRESSED" if s.median > base * (1 + tolerance) and p < alpha else "ok"
    else:
        p = float(mannwhitneyu(new, down, alternative="less").pvalue)
        verdict = "improved" if s.median < base * (1 - tolerance) and p < alpha else "ok"
    return Decision(verdict, s.median, s.p10, s.p90, base, s.median / base - 1, p)
