"""The regression decision of `attnbench check`: it lives in benchstats/decision.py (read the
rationale there), shared with reports/, which must not import harness."""

from benchstats.decision import Decision, Verdict, decide, smallest_p

__all__ = ["Decision", "Verdict", "decide", "smallest_p"]
