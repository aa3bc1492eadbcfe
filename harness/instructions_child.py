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
from torch.profiler import ProfilerActivity, profile

from . import check, config, measure, workload
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


def kernel(step: Callable[[], object]) -> str:
    """The SDPA kernel one call of `step` runs (part of what a count is comparable across)."""
    with measure._quiet_stderr(), profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    return measure.sdpa_backend(e.name for e in prof.events())


def count_cell(cell, cfg: CheckConfig, counter: Counter) -> dict:
    """One cell: its SDPA kernel, warm-up, then `instructions_calls` counted calls.

    The profiled call goes first: the first call after a profiler session was measured ~5% above
    the rest (its callbacks being torn down), and the warm-up calls absorb that."""
    try:
        step = check.cell_step(cell, cfg, torch.device("cpu"))
        backend = kernel(step)
        for _ in range(max(cfg.warmup, 1)):
            step()
        dumps = [counter.count(step) for _ in range(cfg.instructions_calls)]
    except workload.UnsupportedMode as err:
        return {"status": "unsupported", "error": str(err)}
    except Exception as err:  # noqa: BLE001 (a failing cell is reported and fails the check)
        return {"status": "error", "error": f"{type(err).__name__}: {err}"[:500]}
    return {"status": "ok", "error": "", "dumps": dumps, "sdpa_backend": backend}


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
