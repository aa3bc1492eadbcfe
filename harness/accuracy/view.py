"""What a person sees during `attnbench accuracy`: a progress bar, a summary table, the CSV path."""

from __future__ import annotations

import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from reports.marks import MARK, MARK_NOTE, leaky, spread

from ..sweep.view import draw_report
from ..variant_choice import VariantChoice
from . import runner as accuracy


class ProgressBar:
    """`accuracy.Observer` drawing a rich progress bar over the (task, variant, seed) runs."""

    def __init__(self, progress: Progress) -> None:
        self.progress, self.task = progress, None

    def start(self, total: int) -> None:
        self.task = self.progress.add_task("accuracy", total=total)

    def cell(self, cell: accuracy.Cell, row: accuracy.AccuracyRow) -> None:
        result = f"{row.accuracy:.3f}" if row.accuracy is not None else row.status
        self.progress.update(self.task, advance=1, description=escape(f"{cell.label}: {result}"))


def main(
    cfg: accuracy.AccuracyConfig, *, console: Console, report: bool = True, settings: dict | None = None
) -> int:
    """Run with a progress bar, print the summary, the report and the CSV path; the exit code.
    `settings` (which file the config came from) is recorded in run.json."""
    run_dir = accuracy.new_run_dir(cfg)
    columns = (TextColumn("{task.description:<52}"), BarColumn(), MofNCompleteColumn())
    progress = Progress(*columns, TimeElapsedColumn(), TimeRemainingColumn(), console=console)
    try:
        with progress:
            df = accuracy.run(cfg, run_dir=run_dir, observer=ProgressBar(progress), settings=settings)
    except KeyboardInterrupt:
        console.print(f"interrupted: finished rows are kept in {run_dir / 'accuracy.csv'}")
        return 130
    console.print(summary_table(df))
    console.print(f"{len(df)} run(s) in {df.attrs['wall_s']:.1f} s, threads={cfg.threads or 'torch default'}")
    if report:
        draw_report(run_dir, console)
    console.print(f"CSV: {df.attrs['csv']}")
    return 0


def summary_table(df: pd.DataFrame) -> Table:
    """Per task and variant (with g, options and init): accuracy mean ± std over seeds."""
    ablate = set(df["ablate"]) - {"none", ""}
    title = "accuracy summary (held-out; mean ± std over n seeds)"
    table = Table(title=title + (f" — ABLATION: {', '.join(sorted(ablate))}" if ablate else ""))
    for col in (
        "task",
        "variant",
        "init",
        "ok/runs",
        "accuracy",
        "chance",
        "final loss",
        "KV cache",
        "wall s",
    ):
        table.add_column(col, justify="left" if col in ("task", "variant", "init") else "right")
    for row in accuracy.summary(df).itertuples():
        options = tuple(p.split("=", 1) for p in row.options.split(";") if p)
        label = VariantChoice(row.variant, options).label(int(row.n_kv_heads))
        ok = f"{row.seeds}/{row.runs}" + (f" ({row.statuses})" if row.statuses else "")
        acc = spread(row.mean, row.std, row.seeds) if row.seeds else "-"
        label += MARK if row.leak else ""
        loss = f"{row.loss:.3f}" if row.seeds else "-"
        kv = f"{row.kv_cache_bytes / 1024:.1f} KiB" if row.seeds else "-"
        wall = f"{row.wall_s:.1f}" if row.seeds else "-"
        chance = f"{row.chance:.3f}" if row.seeds else "-"
        table.add_row(row.task, escape(label), row.init, ok, acc, chance, loss, kv, wall)
    if df.pipe(leaky).any():
        table.caption = MARK_NOTE + " (its tests re-run only what a causal model may see)"
    return table
