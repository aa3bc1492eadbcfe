"""Two commits timed on this machine, side by side: the check's comparison when its baseline has no
figures for this machine model, or with `--against REV` (harness/check/against.py).

Each side is a child process whose `attn_variants` is that side's (the base: its commit's folder,
first on `sys.path`; the head: the one this process imports) and whose harness is this one, so
the instrument is the same and only the variants differ. Both children live through the whole
check. For every cell and pass the parent asks one child, then the other, to time the cell's
rounds (variant and reference interleaved in that child, as `check.measure_cell` does in
process), alternating which side goes first from cell to cell and pass to pass: a burst of load
or a clock change lands on both sides alike rather than on one. The head's ratios are then
decided against the base's by the check's own test (benchstats/).

The child (`main`) reads the CheckConfig as one JSON line on stdin, answers with its header
(which attn_variants and harness it imported), then one answer per request; answers are lines
that start with MARK, so anything else a variant prints is ignored.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import attn_variants as av
from attn_variants import plugins

from ..sweep.grid import Cell
from . import against
from . import ratios as check
from .ratios import CheckConfig, Result

MARK = "@attnbench-side "


@dataclass(frozen=True)
class Pair:
    """Both sides' results, cell by cell in the head's grid order."""

    head: list[Result]
    base: list[Result]  # a cell the base does not know (a new variant) has status 'error' here


class Side:
    """One long-lived child process timing cells with the attn_variants found in `variants_root`."""

    def __init__(self, name: str, cfg: CheckConfig, variants_root: Path) -> None:
        self.name, self.cfg, self.root = name, cfg, Path(variants_root).resolve()
        self.log = tempfile.TemporaryFile(mode="w+")  # the child's stderr, read if it dies
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            against.child_command(__name__, self.root), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self.log, text=True,
        )  # fmt: skip
        self._send(asdict(self.cfg))
        header = self._receive()
        where = Path(header["attn_variants"]).resolve()
        if not where.is_relative_to(self.root):  # the comparison would be of one commit with itself
            self.close()
            raise RuntimeError(f"the {self.name} child imported attn_variants from {where}, not {self.root}")

    def measure(self, cell: Cell, rounds: int, pass_no: int) -> Result:
        """The cell's rounds in this side's child; a child that died is an error result (and is
        started again for the next cell)."""
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        try:
            self._send({"cell": describe(cell), "rounds": rounds, "pass": pass_no})
            answer = self._receive()
        except (OSError, EOFError) as err:
            return Result(cell, "error", f"the {self.name} child process died: {err}")
        ratios, times = tuple(answer["ratios"]), (tuple(answer["variant_s"]), tuple(answer["reference_s"]))
        return Result(cell, answer["status"], answer["error"], ratios, *times)

    def _send(self, obj: dict) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(obj) + "\n")
        self.proc.stdin.flush()

    def _receive(self) -> dict:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(MARK):
                return json.loads(line[len(MARK) :])
        self.proc.wait()
        self.log.seek(0)
        tail = self.log.read()[-600:].strip()
        raise EOFError(f"exit {self.proc.returncode}: {tail}")

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()  # the child's loop ends at end of input
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def describe(cell: Cell) -> dict:
    """What a child needs to rebuild the cell with its own registry (`cell_at`)."""
    return dict(
        name=cell.choice.name, options=[list(kv) for kv in cell.choice.options], mode=cell.mode,
        batch=cell.batch, seq_len=cell.seq_len, n_heads=cell.spec.n_heads, n_kv_heads=cell.spec.n_kv_heads,
        compile=cell.compile, key=list(cell.key()),
    )  # fmt: skip


def measure_pair(
    cfg: CheckConfig,
    base_root: Path,
    head_root: Path | None = None,
    progress: Callable[[Result], None] | None = None,
    todo: Sequence[Cell] | None = None,
) -> Pair:
    """Every cell of `cfg` (`todo`, if the caller expanded them already), timed with the base's
    variants and with the head's (by default the attn_variants this process imports),
    alternately, pass by pass; `progress` gets the head's."""
    todo = check.cells(cfg) if todo is None else todo
    head = Side("head", cfg, head_root or against.head_variants())
    base = Side("base", cfg, base_root)
    results = {side.name: {c.key(): Result(c, "ok") for c in todo} for side in (head, base)}
    try:
        for side in (head, base):
            try:
                side.start()
            except EOFError as err:  # its attn_variants does not import (or the child cannot start)
                raise ValueError(
                    f"cannot measure the {side.name} ({side.root}): its child exited, {err}"
                ) from None
        for p, rounds in enumerate(check.pass_rounds(cfg.rounds, cfg.passes)):
            for i, cell in enumerate(todo):
                for side in (base, head) if (p + i) % 2 == 0 else (head, base):
                    done = results[side.name][cell.key()]
                    if done.status == "ok":
                        results[side.name][cell.key()] = check.merge(done, side.measure(cell, rounds, p))
                if progress:
                    progress(results["head"][cell.key()])
    finally:
        head.close()
        base.close()
    return Pair(*(list(results[name].values()) for name in ("head", "base")))


def reference_ratios(base: Sequence[Result]) -> dict[tuple[str, ...], tuple[float, ...]]:
    """`Cell.key()` -> the base's ratios, for `check.compare_all` (cells the base ran)."""
    return {r.cell.key(): r.ratios for r in base if r.status == "ok"}


# --- the child ------------------------------------------------------------------------------


def answer(obj: dict) -> None:
    print(MARK + json.dumps(obj), flush=True)


def rebuild(request: dict, cfg: CheckConfig) -> Cell:
    """The requested cell from this side's registry; ValueError if it has no such variant or
    option, or resolves it to another cell (a preset that changed)."""
    from ..sweep.grid import cell_at
    from ..variant_choice import VariantChoice

    c = request["cell"]
    choice = VariantChoice(c["name"], tuple(tuple(kv) for kv in c["options"]))
    shape = (c["mode"], c["seq_len"], c["n_heads"], c["n_kv_heads"])
    cell = cell_at(choice, *shape, cfg, c["compile"], batch=c["batch"])  # the grid may hold several b
    if list(cell.key()) != c["key"]:
        raise ValueError(f"this commit resolves the cell to {cell.key()}, not {tuple(c['key'])}")
    return cell


def main() -> None:
    """Serve timing requests on stdin until it closes (see the module docstring)."""
    import harness

    from .. import config, measure
    from ..measure import timing

    cfg = config.build(CheckConfig, json.loads(sys.stdin.readline()))
    plugins.load_all(cfg.plugins)  # the same plugins as the parent, before any cell is rebuilt
    answer({"attn_variants": av.__file__, "harness": harness.__file__, "pid": os.getpid()})
    device = measure.resolve_device(cfg.device)
    flush = timing.L2Flush(device)
    references: dict = {}
    current = None
    with timing.threads(cfg.threads):
        for line in sys.stdin:
            request = json.loads(line)
            if request["pass"] != current:  # as check.measure_all: references rebuilt each pass
                references, current = {}, request["pass"]
            try:
                cell = rebuild(request, cfg)
            except ValueError as err:
                answer({"status": "error", "error": f"not in this commit: {err}", "ratios": [],
                        "variant_s": [], "reference_s": []})  # fmt: skip
                continue
            r = check.measure_cell(cell, cfg, device, references, request["rounds"], flush)
            answer(dict(status=r.status, error=r.error, ratios=r.ratios, variant_s=r.variant_s,
                        reference_s=r.reference_s))  # fmt: skip


if __name__ == "__main__":
    main()
