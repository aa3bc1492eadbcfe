"""`attnbench decide`: one row per attention design (a variant with its options and g) joining
cache bytes per token (the registry's, per tensor-parallel device), measured decode and prefill
latency, accuracy per task, and which designs are Pareto-dominated and by what.

config.py holds the settings, pareto.py the dominance rule, table.py the join of sweep and
accuracy frames into the decision table, runner.py the runs read or run and the files written.
"""

from .config import DecideConfig

__all__ = ["DecideConfig"]
