"""What a person sees during `attnbench sweep`: a progress bar with ETA, a summary, the CSV path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
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

from ..records import Row
from ..variant_choice import VariantChoice
from . import runner as sweep
from .grid import Cell


class ProgressBar:
    """`sweep.Observer` drawing a rich progress bar over the cells (ETA from cells done)."""

    def __init__(self, progress: Progress) -> None:
        self.progress, self.task = progress, None

    def start(self, total: int, done: int) -> None:
        self.task = self.progress.add_task("sweep", total=total, completed=done)

    def cell(self, cell: Cell, row: Row) -> None:
        compiled = "" if cell.compile == "off" else f" compile={cell.compile}"
        what = f"{cell.choice.label_for(cell.spec)}{compiled} {cell.mode} n={cell.seq_len}: {row.status}"
        self.progress.update(self.task, advance=1, description=escape(what))


def main(
    cfg: sweep.SweepConfig,
    *,
    resume: Path | None,
    console: Console,
    report: bool = True,
    settings: dict | None = None,
) -> int:
    """Run the sweep with a progress bar, print the summary, CSV path and report; the exit code.
    `settings` (which file the config came from) is recorded in run.json."""
    sweep.preflight(cfg, resume)  # bad options or --out: one line and exit 2, before the progress bar
    run_dir = Path(resume) if resume is not None else sweep.new_run_dir(cfg)
    columns = (TextColumn("{task.description:<44}"), BarColumn(), MofNCompleteColumn())
    progress = Progress(*columns, TimeElapsedColumn(), TimeRemainingColumn(), console=console)
    try:
        with progress:
            df = sweep.run(cfg, run_dir=run_dir, observer=ProgressBar(progress), settings=settings)
    except KeyboardInterrupt:
        console.print(f"interrupted: finished rows are kept in {run_dir / 'sweep.csv'}")
        console.print(f"finish the missing cells with: attnbench sweep --resume {run_dir}")
        return 130
    console.print(summary_table(df, cfg.reference))
    note = kernel_note(df, cfg.reference)
    if note:
        console.print(f"[yellow]{escape(note)}[/]")
    console.print(footer(df))
    roof = roof_note(df)
    if roof:
        console.print(f"[yellow]{escape(roof)}[/]")
    if report:
        draw_report(run_dir, console)
    console.print(f"CSV: {df.attrs['csv']}")
    return 0


def draw_report(run_dir: Path, console: Console) -> None:
    """Draw the run's figures and index page (reports/); a drawing problem never loses the rows."""
    from reports.render import render  # here: matplotlib's import is paid only when a report is drawn

    try:
        written = render([run_dir])
    except ValueError as err:
        console.print(f"report not drawn: {err} (redraw with: attnbench report {run_dir})")
        return
    index = next(p for p in written if p.name == "index.html")
    console.print(f"report: {index}")


def summary_table(df: pd.DataFrame, reference: str) -> Table:
    """Per variant (with g and options) and mode: cells ok, latency at the largest n, speedup."""
    df = sweep.with_speedup(df, reference) if reference != "none" else df.assign(speedup=np.nan)
    n_max = int(df["seq_len"].max())
    table = Table(title=f"sweep summary (speedup = {reference} latency / variant latency, same shape)")
    for col in ("variant", "h", "mode", "ok/cells", f"ms @ n={n_max}", f"transient peak MiB @ n={n_max}"):
        table.add_column(col, justify="left" if col in ("variant", "mode") else "right")
    table.add_column(escape(f"speedup vs {reference}: geo-mean [min, max] over n"), justify="right")
    df = df.assign(compile=df["compile"] if "compile" in df else "off")
    keys = ["variant", "options", "compile", "n_heads", "n_kv_heads", "mode"]
    for (variant, options, comp, h, g, mode), rows in df.groupby(keys, sort=False):
        choice = VariantChoice(variant, tuple(p.split("=", 1) for p in options.split(";") if p))
        ok = rows[rows["status"] == "ok"]
        at_max = ok[ok["seq_len"] == n_max]
        ms = f"{at_max['latency_ms_median'].iloc[0]:.3f}" if len(at_max) else "-"
        mib = f"{at_max['peak_mem_bytes'].iloc[0] / 2**20:.1f}" if len(at_max) else "-"
        statuses = "" if len(ok) == len(rows) else " (" + ",".join(sorted(set(rows["status"]) - {"ok"})) + ")"
        equiv = rows["kv_heads_equiv"].dropna() if "kv_heads_equiv" in rows else rows["seq_len"][:0]
        label = choice.label(int(g), float(equiv.iloc[0]) if len(equiv) else None)
        label += "" if comp in ("off", "") else f" compile={comp}"
        table.add_row(escape(label), str(h), mode, f"{len(ok)}/{len(rows)}{statuses}", ms, mib, _speedup(ok))
    return table


def _speedup(ok: pd.DataFrame) -> str:
    s = ok["speedup"].dropna()
    if s.empty:
        return "-"
    geo = float(np.exp(np.log(s).mean()))
    mark = " *" if ok.get("kernels_differ", pd.Series(dtype=bool)).any() else ""
    return f"{geo:.2f}x [{s.min():.2f}, {s.max():.2f}]{mark}"


def kernel_note(df: pd.DataFrame, reference: str) -> str:
    """The footnote of the summary's '*': the rows whose SDPA kernel is not the reference's at
    the same shape, so that their speedup compares kernels, not variants ('' if none)."""
    if reference == "none" or df.empty:
        return ""
    odd = sweep.with_speedup(df, reference)
    odd = odd[odd["kernels_differ"]]
    if odd.empty:
        return ""
    keys = ["variant", "options", "n_kv_heads", "mode", "sdpa_backend", "reference_sdpa_backend"]
    parts = []
    for (variant, options, g, mode, mine, theirs), _ in odd.groupby(keys, sort=False):
        choice = VariantChoice(variant, tuple(p.split("=", 1) for p in options.split(";") if p))
        parts.append(f"{choice.label(int(g))} {mode} ({mine} vs {theirs})")
    return (
        f"* that speedup compares kernels, not variants: sdpa_backend differs from {reference}'s "
        f"at the same shape in {len(odd)} row(s): {', '.join(parts)}"
    )


def roof_note(df: pd.DataFrame, slack: float = 1.2) -> str:
    """A warning when rows beat the calibrated peaks by more than noise: the cached calibration
    (harness/measure/calibrate.py) was then measured low, e.g. on a loaded machine, and every
    `flops_util`/`bw_util` of the run is inflated by the same factor."""
    worst = {c: pd.to_numeric(df.get(c), errors="coerce").max() for c in ("flops_util", "bw_util")}
    over = {c: v for c, v in worst.items() if v == v and v > slack}  # v == v: not NaN
    if not over:
        return ""
    shown = ", ".join(f"{c} up to {v:.2f}" for c, v in over.items())
    return (
        f"rows exceed the calibrated peaks ({shown}): the cached calibration is too low (measured "
        "under load?); run `attnbench calibrate --refresh` on a quiet machine, then sweep again"
    )


def footer(df: pd.DataFrame) -> str:
    """Skipped grid points and the harness's own share of the wall time."""
    lines = []
    skipped = df.attrs.get("skipped", [])
    if skipped:
        pairs = ", ".join(f"(h={h}, g={g})" for h, g in skipped)
        lines.append(f"skipped {len(skipped)} (n_heads, n_kv_heads) pair(s), h % g != 0 or g > h: {pairs}")
    wall, timed = df.attrs.get("wall_s", 0.0), df.attrs.get("timed_s", 0.0)
    if wall > 0 and df.attrs.get("measured"):
        overhead = 1 - timed / wall
        startup = df.attrs.get("startup_s", 0.0)
        lines.append(
            f"measured {df.attrs['measured']} cell(s) in {wall:.1f} s, timed {timed:.1f} s: harness "
            f"overhead {overhead:.1%} (builds, FLOP and memory passes, warm-up, CSV), plus {startup:.1f} s "
            "of start-up before the clock"
        )
    tries = pd.to_numeric(df["attempts"], errors="coerce") if "attempts" in df else pd.Series(dtype=float)
    if (tries > 1).any():
        lines.append(f"{int((tries > 1).sum())} cell(s) ran again after their Ray worker or node was lost")
    return "\n".join(lines)
