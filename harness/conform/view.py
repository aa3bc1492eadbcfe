"""The console side of `attnbench conform`: a table of properties x variants, then one line per
failed property with what was measured; exit code 1 if any property failed."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..variant_choice import VariantChoice
from .checks import NAMES, check
from .probe import TOLERANCE, ConformConfig
from .properties import Verdict

STYLE = {"pass": "green", "fail": "bold red", "n/a": "dim", "declared": "yellow"}
WORD = {"pass": "pass", "fail": "FAIL", "n/a": "n/a", "declared": "declared"}


def main(choices: Sequence[VariantChoice], cfg: ConformConfig, console: Console) -> int:
    """Check every choice, print the table and the failures; 0 if none failed, else 1."""
    results: dict[str, list[Verdict]] = {}
    for choice in choices:
        label = _label(choice)
        with console.status(f"conform {label}"):
            results[label] = check(choice.name, dict(choice.options), cfg)
    console.print(table(results, cfg))
    failed = [(label, v) for label, vs in results.items() for v in vs if v.status == "fail"]
    for label, v in failed:
        console.print(f"[bold red]FAIL[/] {escape(label)} {v.prop}: {escape(v.detail)}", soft_wrap=True)
    if len(results) > 1:
        for label, vs in results.items():
            for v in (v for v in vs if v.status == "declared"):
                console.print(
                    f"[yellow]declared[/] {escape(label)} {v.prop}: {escape(v.detail)}", soft_wrap=True
                )
    console.print(_summary(results, failed), soft_wrap=True)
    return 1 if failed else 0


def table(results: dict[str, list[Verdict]], cfg: ConformConfig) -> Table:
    """Rows: properties; columns: variants; a cell: the verdict and, where short, the figure."""
    tol = TOLERANCE[getattr(torch, cfg.dtype)]
    shapes = f"b={cfg.batch} n={cfg.seq_len} h={cfg.heads} g={cfg.kv_heads} e={cfg.head_dim}"
    title = f"conform: {cfg.dtype} on {cfg.device}, {shapes}, tolerance {tol:g} (relative to max |output|)"
    t = Table(title=title, expand=False)
    t.add_column("property", no_wrap=True)
    if len(results) == 1:  # one variant: its verdicts and what was measured, side by side
        ((label, verdicts),) = results.items()
        t.add_column(escape(label), no_wrap=True)
        t.add_column("measured", overflow="fold")
        for v in verdicts:
            t.add_row(v.prop, _cell(v), escape(v.detail))
        return t
    for label in results:
        t.add_column(escape(label), overflow="fold")
    for i, prop in enumerate(NAMES):
        t.add_row(prop, *(_cell(vs[i]) for vs in results.values()))
    return t


def _cell(v: Verdict) -> str:
    return f"[{STYLE[v.status]}]{WORD[v.status]}[/]"


def _label(choice: VariantChoice) -> str:
    return choice.name + (f"[{choice.options_text}]" if choice.options else "")


def _summary(results: dict[str, list[Verdict]], failed: list) -> str:
    n = len(results)
    if not failed:
        return f"{n} variant(s) conform"
    bad = sorted({label for label, _ in failed})
    return f"{len(bad)} of {n} variant(s) fail: {', '.join(bad)}"
