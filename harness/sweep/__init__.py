"""`attnbench sweep`: latency, memory and FLOPs of registered variants over a grid, into CSV.

    from harness.sweep import SweepConfig, run
    df = run(harness.config.load(SweepConfig, "sweep", profile="quick"))  # also <out>/<run_id>/sweep.csv

config.py holds the settings, grid.py the cells they ask for, cell.py one cell measured into a
row, runner.py the run (its folder, resuming, the speedup column), executors.py where cells run
(this process or Ray), view.py what the console shows.
"""

from .config import SweepConfig
from .runner import run

__all__ = ["SweepConfig", "run"]
