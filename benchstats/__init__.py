"""benchstats: the pure statistics of attnbench, shared by harness/ and reports/.

reports/ reads only CSVs and must not import harness; harness's check and the reports'
run-against-run comparison must still reach the same verdict by the same code. So the
decision lives here, in a package that imports neither (nor torch): numpy and scipy only.
"""

from .decision import Decision, Summary, Verdict, decide, smallest_p, summarize

__all__ = ["Decision", "Summary", "Verdict", "decide", "smallest_p", "summarize"]
