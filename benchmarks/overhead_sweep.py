"""Where a sweep's harness overhead goes: each untimed step of a cell, summed over the run.

    python benchmarks/overhead_sweep.py [sweep flags, default: --profile quick --no-report]

Runs `attnbench sweep` in this process with the per-cell steps wrapped by a wall-clock timer
(`measure.probe`, `flops.count`, `flops.count_real`, `sweep_cell._build`, `timing.sample`, ...) and
prints their totals after the sweep's own summary line. `timing.sample` minus the `timed
repeats` of the summary is the timing loop's own cost; `measure_cell` minus the rest is what
no wrapper names. The goal (issue 13): the quick profile's overhead under 8%.
"""

import collections
import functools
import sys
import time

from harness import cli, measure
from harness.measure import calibrate, flops, timing
from harness.sweep import cell as sweep_cell

STEPS = [
    (measure, "warm_up_tools"),
    (measure, "probe"),
    (flops, "count"),
    (flops, "count_real"),
    (sweep_cell, "_build"),
    (sweep_cell, "_estimate"),
    (measure, "active_heads"),
    (calibrate, "get"),
    (timing, "sample"),
    (sweep_cell, "measure_cell"),
]


def timed(totals: collections.Counter, name: str, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[name] += time.perf_counter() - start

    return wrapper


def main(argv: list[str]) -> None:
    totals: collections.Counter = collections.Counter()
    for module, name in STEPS:
        setattr(module, name, timed(totals, f"{module.__name__}.{name}", getattr(module, name)))
    try:
        cli.app(["sweep", *(argv or ["--profile", "quick", "--no-report"])], standalone_mode=False)
    finally:
        for name, seconds in totals.most_common():
            print(f"{name:30s} {seconds:8.2f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
