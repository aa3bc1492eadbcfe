"""`attnbench check --metric instructions`: CPU instruction counts under callgrind.

Time on a shared 2-core machine moves by 15-20% between runs; the number of instructions a
step executes barely moves (a gqa forward: 0.03% between two runs). PyTorch guards its own CPU
fast paths the same way (`benchmarks/instruction_counts`, `Timer.collect_callgrind`).

How: ONE valgrind process runs every cell, so valgrind's start-up (loading torch, ~45-70 s) is
paid once. Collection is off from the start (`--collect-atstart=no`); the child
(harness/check/instructions_child.py) switches it on around each counted call with
`torch._C._valgrind_toggle()` and off with `torch._C._valgrind_toggle_and_dump_stats()`, as
torch's own wrapper does. Every counted call thus becomes one numbered callgrind dump whose
`summary:` line is that call's instruction count.

Stable counts, by other means than torch's `CallgrindStats.denoise` (which drops CPython's
dict/refcount bookkeeping function by function from an annotated per-function profile; we keep
only totals, so there is nothing to filter):
- PYTHONHASHSEED=0 and one thread: dict layouts and OpenMP scheduling are the same every run;
- `gc.collect()` before and the collector disabled during each counted call, so a collection
  triggered by an allocation count never lands inside one cell's count;
- `warmup` uncounted calls first (lazy init, allocator and oneDNN caches), then the median of
  `instructions_calls` separately dumped calls; `spread` ((max - min) / median) is recorded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch

from .. import measure
from ..measure import timing
from ..sweep.grid import Cell
from . import against, instructions_child
from .ratios import CheckConfig, cell_name, cell_step, cells

INSTALL_HINT = (
    "valgrind is not installed, and --metric instructions counts under callgrind: install it "
    "(Debian/Ubuntu: `sudo apt-get install valgrind`; Fedora: `sudo dnf install valgrind`; "
    "macOS has none) or use --metric time"
)
CALLGRIND = (
    "--tool=callgrind",
    "--collect-atstart=no",  # counted only between the child's toggles
    "--dump-line=no",  # totals are all we read: smaller dumps, faster runs
    "--dump-instr=no",
)


@dataclass(frozen=True)
class Count:
    """One cell of an instruction-count run: the count of each counted call, or why none."""

    cell: Cell
    status: Literal["ok", "unsupported", "error"]
    error: str = ""
    calls: tuple[int, ...] = ()  # instructions of each separately dumped call
    sdpa_backend: str = ""  # the SDPA kernel the cell's step ran (a baseline is per kernel)

    @property
    def name(self) -> str:
        return cell_name(self.cell)

    @property
    def instructions(self) -> int:
        """The median count of the counted calls."""
        return int(statistics.median(self.calls))

    @property
    def spread(self) -> float:
        """(max - min) / median over the counted calls: how repeatable this cell's count is."""
        return (max(self.calls) - min(self.calls)) / max(self.instructions, 1)


def valgrind() -> str:
    """The valgrind executable; its absence is a ValueError (exit 2) saying how to install it."""
    exe = shutil.which("valgrind")
    if exe is None:
        raise ValueError(INSTALL_HINT)
    return exe


def valgrind_version(exe: str) -> str:
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip() or "unknown"


def measure_all(
    cfg: CheckConfig, variants_root: Path | None = None, todo: list[Cell] | None = None
) -> tuple[list[Count], dict[str, str]]:
    """Count every cell of `cfg` in `instructions_jobs` valgrind processes side by side (valgrind
    runs on one core; a count does not depend on its neighbour); the counts, in `cells(cfg)`
    order (`todo`, if the caller expanded them already; the children expand the same grid), and
    the run's environment (torch, CPU ISA as torch sees it under valgrind, Python).

    `variants_root`: a folder whose attn_variants the children import instead of this one (a
    base commit's, harness/check/against.py); its cells' SDPA kernel is then not probed (this
    process runs the other variants) and left blank."""
    return measure_sides(cfg, [variants_root], todo)[0]


def measure_sides(
    cfg: CheckConfig, roots: Sequence[Path | None], todo: list[Cell] | None = None
) -> list[tuple[list[Count], dict[str, str]]]:
    """`measure_all` for each of `roots` (None: this process's attn_variants), every side's
    valgrind processes started at once, `instructions_jobs` shared among the sides: each
    process pays valgrind's start-up (loading torch) once, whichever commit it counts."""
    exe, todo = valgrind(), cells(cfg) if todo is None else todo
    jobs = max(1, min(cfg.instructions_jobs // len(roots), len(todo)))
    sides = [Path(root or against.head_variants()).resolve() for root in roots]
    with tempfile.TemporaryDirectory(prefix="attnbench-callgrind-") as tmp:
        plan = Path(tmp, "plan.json")
        plan.write_text(json.dumps(asdict(cfg)))
        folders = [[Path(tmp, f"side{s}-job{j}") for j in range(jobs)] for s in range(len(sides))]
        procs = [
            [_start_child(exe, plan, folder, j, jobs, root) for j, folder in enumerate(side_folders)]
            for root, side_folders in zip(sides, folders, strict=True)
        ]
        pairs = [zip(ps, fs, strict=True) for ps, fs in zip(procs, folders, strict=True)]
        done = [[_finish(proc, folder) for proc, folder in side] for side in pairs]
    version = valgrind_version(exe)
    return [
        _side_counts(todo, side_done, cfg, root, probe=given is None, version=version)
        for side_done, root, given in zip(done, sides, roots, strict=True)
    ]


def _side_counts(
    todo: list[Cell], done: list, cfg: CheckConfig, root: Path, *, probe: bool, version: str
) -> tuple[list[Count], dict[str, str]]:
    """One side's counts, in `todo` order, and its environment; RuntimeError if its children
    imported attn_variants from anywhere but `root`."""
    imported = Path(done[0][0].get("attn_variants", root)).resolve()
    if not imported.is_relative_to(root):  # the counts would be of other code than asked
        raise RuntimeError(f"the callgrind child imported attn_variants from {imported}, not {root}")
    jobs, counted = len(done), {}
    for j, (_, records, dumps) in enumerate(done):
        for cell, rec in zip(todo[j::jobs], records, strict=False):
            counted[cell.key()] = _count(cell, rec, dumps, cfg, probe=probe)
    stopped = "the callgrind run stopped before this cell"
    counts = [counted.get(c.key(), Count(c, "error", stopped)) for c in todo]
    env = {k: str(v) for k, v in done[0][0].items() if k not in ("pid", "attn_variants")}
    return counts, {**env, "valgrind_version": version}


def _start_child(exe: str, plan: Path, folder: Path, job: int, jobs: int, root: Path) -> subprocess.Popen:
    """harness/check/instructions_child.py under callgrind, with `root`'s attn_variants, counting cells
    job, job + jobs, ..."""
    folder.mkdir()
    cmd = [exe, *CALLGRIND, f"--callgrind-out-file={folder}/cg.%p"]
    cmd += against.child_command(instructions_child.__name__, root)
    cmd += [str(plan), str(folder / "counts.jsonl"), str(job), str(jobs)]
    env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen, folder: Path) -> tuple[dict, list[dict], dict[int, int]]:
    """Wait for one child: its header, its per-cell records and its dumps' counts."""
    log, _ = proc.communicate()
    out = folder / "counts.jsonl"
    lines = [json.loads(line) for line in out.read_text().splitlines()] if out.is_file() else []
    if not lines:
        raise RuntimeError(f"the callgrind run failed (exit {proc.returncode}): {log[-800:]}")
    return lines[0], lines[1:], read_dumps(folder, lines[0]["pid"])


def read_dumps(folder: Path, pid: int) -> dict[int, int]:
    """Dump number -> instructions, from callgrind's `cg.<pid>.<n>` files (their `summary:` line)."""
    found = {}
    for path in folder.glob(f"cg.{pid}.*"):
        number = path.name.rsplit(".", 1)[1]
        match = re.search(r"^summary:\s*(\d+)", path.read_text(), re.M)
        if number.isdigit() and match:
            found[int(number)] = int(match.group(1))
    return found


def _count(cell: Cell, rec: dict, dumps: dict[int, int], cfg: CheckConfig, probe: bool = True) -> Count:
    if rec["status"] != "ok":
        return Count(cell, rec["status"], rec["error"])
    missing = [d for d in rec["dumps"] if d not in dumps]
    if missing:
        return Count(cell, "error", f"callgrind dumps {missing} were not written")
    per_step = tuple(round(dumps[d] / rec["steps"]) for d in rec["dumps"])
    return Count(cell, "ok", "", per_step, kernel(cell, cfg) if probe else "")


def kernel(cell: Cell, cfg: CheckConfig) -> str:
    """The SDPA kernel the cell's step runs, from one profiled call here, outside valgrind (the
    profiler is slow under it; the CPU dispatch between flash_cpu and math does not depend on
    the instruction set valgrind emulates)."""
    with timing.threads(1):
        step = cell_step(cell, cfg, torch.device("cpu"))
        return measure.probe(step, torch.device("cpu")).sdpa_backend
