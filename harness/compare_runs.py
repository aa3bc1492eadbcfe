"""`attnbench compare RUN_A RUN_B`: two finished sweeps (or two folders of repeated sweeps), cell by
cell, in the terminal.

(Not harness/measure/interleave.py, which times callables interleaved in one process.) The statistics
are reports/comparison.py's, the same table the multi-run report shows; the decision is
reports.stats', the one `attnbench check` makes. This module only loads, prints and picks the
exit code.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from reports import comparison
from reports.load import SWEEP_CSV, load_run, unique_labels

STYLES = {"slower": "bold red", "faster": "green", "undecided": "yellow", "not run": "red"}


def load_pair(run_a: Path, run_b: Path) -> tuple[list[pd.DataFrame], list[pd.DataFrame], list[str]]:
    """Each side's sweep tables and the sides' labels. A side is a run folder (holding sweep.csv)
    or a folder of run folders (repeated runs of the same code); ValueError (one line) if a side
    holds no sweep."""
    labels = unique_labels([Path(run_a), Path(run_b)])
    return side_runs(Path(run_a)), side_runs(Path(run_b)), labels


def side_runs(path: Path) -> list[pd.DataFrame]:
    """The sweep tables of one side: `path` itself if it is a run, else its sub-folders that are."""
    folders = [path] if not path.is_dir() or (path / SWEEP_CSV).exists() else _run_folders(path)
    runs = [load_run(p) for p in folders]
    for run in runs:
        if run.sweep is None:
            raise ValueError(f"{run.path} holds no sweep.csv; compare needs two sweep runs")
    return [run.sweep for run in runs]


def _run_folders(path: Path) -> list[Path]:
    """The sub-folders of `path` holding a sweep.csv, sorted; [path] when there is none (so
    load_run names what is missing)."""
    return sorted(p for p in path.iterdir() if (p / SWEEP_CSV).exists()) or [path]


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
