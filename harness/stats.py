"""The regression decision of `attnbench check`: it lives in reports/stats.py (read the
rationale there), shared with reports/, which must not import harness."""

from reports.stats import Decision, Verdict, decide, smallest_p

__all__ = ["Decision", "Verdict", "decide", "smallest_p"]
