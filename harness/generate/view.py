"""What a person sees during `attnbench generate`: a line per finished cell, a summary table at the
largest context, the report and the CSV path."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from reports.generate_figures import with_speedup

from . import run
from .cell import GenerateRow


def main(
    cfg: run.GenerateConfig, *, console: Console, report: bool = True, settings: dict | None = None
) -> int:
    """Run, print each cell as it finishes and the summary, draw the report; the exit code."""
    run.preflight(cfg)  # bad options or --out: one line and exit 2 before any cell
    run_dir = run.new_run_dir(cfg)
    try:
        df = run.run(
            cfg, run_dir=run_dir, on_row=lambda row: console.print(escape(cell_line(row))), settings=settings
        )
    except KeyboardInterrupt:
        console.print(f"interrupted: finished rows are kept in {run_dir / run.CSV}")
        return 130
    console.print(summary_table(df, cfg.reference))
    if report:
        draw_report(run_dir, console)
    console.print(f"CSV: {df.attrs['csv']}")
    return 0


def cell_line(row: GenerateRow) -> str:
    """'gqa P=1024: tpot 1.23 ms, ttft 0.456 s, attn_share 0.31' or the status and error."""
    where = f"{row.variant}{f'[{row.options}]' if row.options else ''} P={row.context}"
    if row.status != "ok":
        return f"{where}: {row.status}: {row.error}"
    return (
        f"{where}: tpot {row.tpot_s * 1e3:.3g} ms, ttft {row.ttft_s:.3g} s, "
        f"{row.tokens_per_s:.4g} tokens/s, attn_share {row.attn_share:.2f}"
    )


def summary_table(df: pd.DataFrame, reference: str) -> Table:
    """Per variant at the largest context: tpot, attn_share and both speedups over the reference."""
    df = with_speedup(df, reference if reference != "none" else "mha")
    p_max = int(df["context"].max())
    title = f"generate at P={p_max} (speedup = {reference} time / variant time, same context)"
    table = Table(title=title)
    for col in (
        "variant",
        "g",
        "ok/cells",
        "tpot ms",
        "tokens/s",
        "ttft s",
        "attn_share",
        "speedup",
        "attn alone",
    ):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for (variant, options), rows in df.groupby(["variant", "options"], sort=False):
        ok = rows[rows["status"] == "ok"]
        at = ok[ok["context"] == p_max]
        name = variant + (f"[{options}]" if options else "")
        counts = f"{len(ok)}/{len(rows)}" + ("" if len(ok) == len(rows) else f" ({rows['status'].iloc[0]})")
        if at.empty:
            table.add_row(escape(name), str(rows["n_kv_heads"].iloc[0]), counts, *["-"] * 6)
            continue
        r = at.iloc[0]
        cells = (f"{r.tpot_s * 1e3:.3g}", f"{r.tokens_per_s:.4g}", f"{r.ttft_s:.3g}", f"{r.attn_share:.2f}")
        speed = [f"{v:.2f}x" if pd.notna(v) else "-" for v in (r.speedup, r.attn_speedup)]
        table.add_row(escape(name), f"{r.kv_heads_equiv:.3g}", counts, *cells, *speed)
    return table


def draw_report(run_dir: Path, console: Console) -> None:
    """The run's figures and index page; a drawing problem never loses the rows."""
    from reports.render import render  # here: matplotlib's import is paid only when a report is drawn

    try:
        written = render([run_dir])
    except ValueError as err:
        console.print(f"report not drawn: {err} (redraw with: attnbench report {run_dir})")
        return
    console.print(f"report: {next(p for p in written if p.name == 'index.html')}")
