"""benchstats (the check's decision) on synthetic per-round ratios: what is flagged and what is not."""

import numpy as np
import pytest

import benchstats as stats
from harness.check.ratios import CheckConfig

TOL, ALPHA = 0.15, 0.01


def rounds(median, n=30, noise=0.05, seed=0, outliers=0.0):
    """Per-round ratios: log-normal noise around `median`, a share of rounds made 1.5-3x slower
    (a preempted variant), like a shared machine's."""
    rng = np.random.default_rng(seed)
    r = median * np.exp(rng.normal(0.0, noise, n))
    hit = rng.random(n) < outliers
    r[hit] *= rng.uniform(1.5, 3.0, hit.sum())
    return r.tolist()


def decide(new, base, **kw):
    return stats.decide(new, base, tolerance=kw.get("tolerance", TOL), alpha=kw.get("alpha", ALPHA))


def test_clear_regression_is_flagged_with_a_tiny_p():
    d = decide(rounds(1.2, seed=1), rounds(0.8, seed=2))  # 1.5x slower
    assert d.verdict == "REGRESSED"
    assert d.p_value < 1e-6 and d.change == pytest.approx(0.5, abs=0.05)


def test_regression_is_flagged_through_heavy_tailed_noise():
    d = decide(rounds(1.2, noise=0.1, seed=3, outliers=0.2), rounds(0.8, noise=0.1, seed=4, outliers=0.2))
    assert d.verdict == "REGRESSED" and d.p_value < ALPHA


@pytest.mark.parametrize("noise", [0.02, 0.1, 0.3])
def test_noise_alone_is_never_flagged(noise):
    same = dict(noise=noise, outliers=0.1)
    verdicts = [decide(rounds(0.8, seed=s, **same), rounds(0.8, seed=1000 + s, **same)) for s in range(200)]
    assert {d.verdict for d in verdicts} == {"ok"}


def test_improvement_is_not_a_regression():
    d = decide(rounds(0.4, seed=5), rounds(0.8, seed=6))  # 2x faster
    assert d.verdict == "improved" and d.change < -0.4 and d.p_value < ALPHA


@pytest.mark.parametrize("n", [30, 1000])
def test_five_percent_under_a_fifteen_percent_tolerance_is_ok_however_many_rounds(n):
    d = decide(rounds(0.84, n=n, seed=7), rounds(0.8, n=n, seed=8))
    assert d.verdict == "ok" and d.change == pytest.approx(0.05, abs=0.02)
    assert d.p_value > 0.5  # the test is against baseline x 1.15, not against the baseline


def test_a_median_over_the_line_by_chance_is_not_significant():
    base = [0.6, 0.8, 1.0, 1.2, 1.4] * 2
    new = [0.5, 0.9, 1.25, 1.3, 1.35, 1.8, 0.7, 1.2, 1.22, 1.5]
    d = decide(new, base)
    assert d.median > d.baseline * (1 + TOL)  # the effect rule alone would flag it
    assert d.p_value >= ALPHA and d.verdict == "ok"


def test_significant_but_within_tolerance_is_ok():
    d = decide(rounds(0.88, n=500, noise=0.01, seed=9), rounds(0.8, n=500, noise=0.01, seed=10))
    assert d.change == pytest.approx(0.1, abs=0.01) and d.verdict == "ok"


def test_a_cell_missing_from_the_baseline_is_new():
    d = decide(rounds(0.8), None)
    assert d.verdict == "new" and d.baseline is None and d.p_value is None


def test_too_few_rounds_to_ever_fail_is_refused():
    assert stats.smallest_p(4, 4) == pytest.approx(1 / 70)
    with pytest.raises(ValueError, match="cannot reach alpha=0.01"):
        decide([2.0] * 4, [1.0] * 4)
    with pytest.raises(ValueError, match="rounds=4 can never reach alpha=0.01"):
        CheckConfig(rounds=4)
    assert decide([2.0, 2.1, 2.2, 2.3, 2.4], [1.0, 1.1, 1.2, 1.3, 1.4]).verdict == "REGRESSED"


@pytest.mark.parametrize("bad", [dict(tolerance=0.0), dict(tolerance=1.5), dict(alpha=0.0)])
def test_bad_tolerance_or_alpha_names_the_value(bad):
    with pytest.raises(ValueError, match=r"must both be in \(0, 1\)"):
        decide(rounds(0.8), rounds(0.8), **bad)


def test_rounds_are_split_over_passes_and_passes_not_above_rounds():
    from harness.check.ratios import pass_rounds

    assert pass_rounds(30, 3) == [10, 10, 10] and pass_rounds(20, 3) == [7, 7, 6] and pass_rounds(5, 1) == [5]
    with pytest.raises(ValueError, match="passes=6 must be <= rounds=5"):
        CheckConfig(rounds=5, passes=6)
