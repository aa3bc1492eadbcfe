"""The process valgrind runs for `attnbench check --metric instructions` (see instructions.py).

    valgrind --tool=callgrind --collect-atstart=no ... python -m harness.check.instructions_child PLAN OUT

PLAN is the CheckConfig as JSON. OUT gets one JSON line of environment, then one line per
cell, flushed as each cell finishes (a crash keeps what was counted): its status and the
callgrind dump numbers of its counted calls. Dumps are numbered 1, 2, ... in the order of
`_valgrind_toggle_and_dump_stats` calls within this process.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path

import torch

import attn_variants

from .. import config
from ..measure import workload
from ..records import error_text
from . import ratios as check
from .ratios import CheckConfig

# A decode step at the CI size is ~0.7M instructions, where one odd malloc path or dict resize
# is ~1% (its calls spread 0.2-2.4% measured): one count holds ten steps, reported per step.
DECODE_STEPS = 10


class Counter:
    """Switches callgrind's collection on around one call and dumps it; numbers the dumps."""

    def __init__(self) -> None:
        self.dumps = 0

    def count(self, fn: Callable[[], object], steps: int = 1) -> int:
        """Run `fn` `steps` times with collection on; the number of the dump that holds the count."""
        gc.collect()
        gc.disable()  # a collection must not land inside one cell's count
        torch._C._valgrind_toggle()
        try:
            for _ in range(steps):
                fn()
        finally:
            torch._C._valgrind_toggle_and_dump_stats()
            gc.enable()
            self.dumps += 1
        return self.dumps


def count_cell(cell, cfg: CheckConfig, counter: Counter) -> dict:
    """One cell: warm-up, then `instructions_calls` counted calls. (No profiler runs here: it is
    slow under valgrind, and the first call after a profiler session counted ~5% high.)"""
    try:
        step = check.cell_step(cell, cfg, torch.device("cpu"))
        for _ in range(max(cfg.warmup, 1)):
            step()
        steps = DECODE_STEPS if cell.mode == "decode" else 1
        dumps = [counter.count(step, steps) for _ in range(cfg.instructions_calls)]
    except workload.UnsupportedMode as err:
        return {"status": "unsupported", "error": str(err)}
    except Exception as err:  # noqa: BLE001 (a failing cell is reported and fails the check)
        return {"status": "error", "error": error_text(err)}
    return {"status": "ok", "error": "", "dumps": dumps, "steps": steps}


def header() -> dict:
    """What a count depends on besides the code: the ISA torch dispatches to under valgrind
    (valgrind emulates no AVX-512, so it may differ from the bare machine's), torch, Python."""
    return {
        "pid": os.getpid(),
        "attn_variants": attn_variants.__file__,  # the parent checks it is the commit it asked for
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
    }


def main(plan: str, out: str, job: str = "0", jobs: str = "1") -> None:
    """Count cells job, job + jobs, ... of the plan's grid (the parent runs `jobs` of these)."""
    cfg = config.build(CheckConfig, json.loads(Path(plan).read_text()))
    torch.set_num_threads(1)
    counter = Counter()
    with open(out, "w") as f:
        f.write(json.dumps(header()) + "\n")
        f.flush()
        for cell in check.cells(cfg)[int(job) :: int(jobs)]:
            f.write(json.dumps(count_cell(cell, cfg, counter)) + "\n")
            f.flush()


if __name__ == "__main__":
    main(*sys.argv[1:])
