"""`attnbench compare RUN_A RUN_B`: two finished sweeps, cell by cell, in the terminal.

(Not harness/measure/interleave.py, which times callables interleaved in one process.) The statistics
are reports/comparison.py's, the same table the multi-run report shows; the decision is
benchstats', the one `attnbench check` makes. This module only loads, prints and picks the
exit code.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from reports import comparison
from reports.load import load_run, unique_labels

STYLES = {"slower": "bold red", "faster": "green", "undecided": "yellow", "not run": "red"}


def load_pair(run_a: Path, run_b: Path) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """The two runs' sweep tables and labels; ValueError (one line) if either has no sweep.csv."""
    labels = unique_labels([Path(run_a), Path(run_b)])
    runs = [load_run(Path(p), label) for p, label in zip((run_a, run_b), labels, strict=True)]
    for run in runs:
        if run.sweep is None:
            raise ValueError(f"{run.path} holds no sweep.csv; compare needs two sweep runs")
    return runs[0].sweep, runs[1].sweep, labels


def rich_table(comp: comparison.Comparison) -> Table:
    """comparison.table as a rich table, the verdict coloured."""
    frame = comparison.table(comp)
    table = Table(show_lines=False, header_style="bold")
    for column in frame.columns:
        table.add_column(column, overflow="fold", justify="left" if column in ("cell", "note") else "right")
    for row in frame.to_dict("records"):
        style = STYLES.get(row["verdict"], "")
        table.add_row(*(escape(str(v)) for v in row.values()), style=style)
    return table


def main(
    run_a: Path,
    run_b: Path,
    *,
    threshold: float = comparison.THRESHOLD,
    alpha: float = comparison.ALPHA,
    fail_on_slower: bool = False,
    console: Console | None = None,
) -> int:
    """Print the comparison; 1 if `fail_on_slower` and a cell is slower (or stopped running), else 0."""
    console = console or Console(width=160)
    a, b, labels = load_pair(run_a, run_b)
    comp = comparison.compare(a, b, labels=(labels[0], labels[1]), threshold=threshold, alpha=alpha)
    lines = comparison.header(comp)
    for line in lines[:2]:
        console.print(escape(line), highlight=False)
    for line in lines[2:]:
        console.print(f"[yellow]{escape(line)}[/yellow]", highlight=False)
    if comparison.common(comp):
        console.print(f"every cell: {escape(comparison.common(comp))}", highlight=False)
    console.print(rich_table(comp))
    console.print(comparison.counts(comp) + ".", highlight=False)
    bad = comp.regressed
    if fail_on_slower and not bad.empty:
        names = ", ".join(comparison.labels(comp)[bad.index])
        console.print(
            f"[bold red]FAIL[/bold red]: slower in B or stopped running ({len(bad)}): {escape(names)}"
        )
        return 1
    return 0
