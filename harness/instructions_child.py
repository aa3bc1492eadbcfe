"""The process valgrind runs for `attnbench check --metric instructions` (see instructions.py).

    valgrind --tool=callgrind --collect-atstart=no ... python -m harness.instructions_child PLAN OUT

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

from . import check, config, workload
from .check import CheckConfig


class Counter:
    """Switches callgrind's collection on around one call and dumps it; numbers the dumps."""

    def __init__(self) -> None:
        self.dumps = 0

    def count(self, fn: Callable[[], object]) -> int:
        """Run `fn` once with collection on; the number of the dump that holds its count."""
        gc.collect()
        gc.disable()  # a collection must not land inside one cell's count
        torch._C._valgrind_toggle()
        try:
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
        dumps = [counter.count(step) for _ in range(cfg.instructions_calls)]
    except workload.UnsupportedMode as err:
        return {"status": "unsupported", "error": str(err)}
    except Exception as err:  # noqa: BLE001 (a failing cell is reported and fails the check)
        return {"status": "error", "error": f"{type(err).__name__}: {err}"[:500]}
    return {"status": "ok", "error": "", "dumps": dumps}


def header() -> dict:
    """What a count depends on besides the code: the ISA torch dispatches to under valgrind
    (valgrind emulates no AVX-512, so it may differ from the bare machine's), torch, Python."""
    return {
        "pid": os.getpid(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
    }


def main(plan: str, out: str) -> None:
    cfg = config.build(CheckConfig, json.loads(Path(plan).read_text()))
    torch.set_num_threads(1)
    counter = Counter()
    with open(out, "w") as f:
        f.write(json.dumps(header()) + "\n")
        f.flush()
        for cell in check.cells(cfg):
            f.write(json.dumps(count_cell(cell, cfg, counter)) + "\n")
            f.flush()


if __name__ == "__main__":
    main(*sys.argv[1:])
