"""What a person (or a CI log) sees during `attnbench check`: progress, a table, the verdict lines.

Exit codes: 0 no regression; 1 a cell regressed or failed to run; 2 (raised as ValueError, see
cli.fail_cleanly) no baseline, or a baseline from another device kind, thread count or reference.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from benchstats import Decision

from .. import dashboard, measure
from ..measure import machine
from ..measure.timing import summarize
from ..records import write_run_json
from ..sweep.grid import Cell, row_key
from ..sweep.runner import new_run_dir
from . import against, sidebyside
from . import baseline as baseline_mod
from . import ratios as check
from .ratios import CheckConfig, Result

STYLE = {"ok": "green", "REGRESSED": "bold red", "improved": "cyan", "new": "yellow"}


def main(
    cfg: CheckConfig, *, update: bool, console: Console, settings: dict | None = None, plan_only: bool = False
) -> int:
    """Measure, then compare with (or, with `update`, rewrite) the baseline; the exit code.

    The comparison (harness/check/against.py) is the baseline's figures for this machine model, or a
    commit measured here side by side (harness/check/sidebyside.py); it is printed first, and
    `plan_only` stops there. Every run also writes <out>/<run_id>/: run.json (with `settings`,
    which file the config came from), then check.csv (one row per cell) and benchmark.json."""
    todo = check.cells(cfg)  # unknown variants or options fail before the baseline is read
    if update and cfg.against:
        raise ValueError(f"--against {cfg.against} compares; --update-baseline writes figures: choose one")
    device = measure.resolve_device(cfg.device)
    env = {**measure.environment(device), "threads": _threads(cfg)}
    env["machine"] = machine.of(env)
    path = baseline_mod.path_for(cfg.baseline, env)  # per GPU model where it names {device_name}
    plan = None if update else _plan(path, env, cfg, console)
    if update:
        _read_if_any(path)  # the rows it keeps are read at the end: a bad file fails now, not then
    if plan_only:
        return 0
    check.preflight(cfg, todo)  # bad option values or --out fail before any timing
    run_dir = new_run_dir(cfg)
    run_dir.mkdir(parents=True)
    comparison = plan.describe() if plan else "none (--update-baseline)"
    write_run_json(run_dir, cfg, env, len(todo), command="check", update_baseline=update,
                   settings=settings, comparison=comparison)  # fmt: skip
    t0 = time.perf_counter()
    results, reference = _measure(cfg, todo, console, plan, run_dir, env)
    wall = time.perf_counter() - t0
    if update:
        _write_results(run_dir, [(r, None) for r in results], env, cfg, console)
        return _update(path, results, env, cfg, console, wall)
    decisions = list(check.compare_all(results, reference, cfg))
    _write_results(run_dir, decisions, env, cfg, console)
    console.print(table(decisions, cfg, base=plan.kind == "measure"))
    return verdict(decisions, plan, cfg, console, wall)


def _plan(path: Path, env: dict, cfg: CheckConfig, console: Console) -> against.Plan:
    """The comparison this check makes, printed; ValueError (exit 2) when there is none."""
    df = baseline_mod.read(path) if not cfg.against else _read_if_any(path)
    plan = against.choose(df, env, cfg, path)
    console.print(f"comparison: {escape(plan.describe())}")
    if plan.kind == "figures" and plan.commit.endswith("-dirty"):
        console.print("[yellow]warning:[/] those figures were taken with uncommitted changes")
    return plan


def _read_if_any(path: Path):
    return baseline_mod.read(path) if Path(path).is_file() else None


def _write_results(
    run_dir: Path, rows: list[tuple[Result, Decision | None]], env: dict, cfg: CheckConfig, console: Console
) -> None:
    """check.csv and, beside it, benchmark.json (harness/dashboard.py)."""
    df = baseline_mod.result_rows(rows, env, cfg)
    df.to_csv(run_dir / "check.csv", index=False)
    dashboard.write(run_dir / dashboard.FILE, dashboard.check_records(df.to_dict("records")))
    console.print(f"results: {escape(str(run_dir / 'check.csv'))} (and {dashboard.FILE} beside it)")


def _threads(cfg: CheckConfig) -> int:
    """The thread count the cells run with (what `measure.environment` would see inside the run)."""
    import torch

    return cfg.threads or torch.get_num_threads()


def _measure(
    cfg: CheckConfig, todo: list[Cell], console: Console, plan: against.Plan | None, run_dir: Path, env: dict
) -> tuple[list[Result], dict]:
    """This checkout's results, and the reference ratios per cell: the same-model figures, or
    the base commit's, measured side by side (its rows go to base.csv beside check.csv)."""
    columns = (TextColumn("{task.description:<40}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("check", total=len(todo) * cfg.passes)

        def advance(result: Result) -> None:
            progress.update(task, advance=1, description=escape(f"{result.name}: {result.status}"))

        if plan is None or plan.kind == "figures":
            reference = baseline_mod.samples(plan.rows) if plan else {}
            return check.measure_all(cfg, advance, todo), reference
        with against.checkout(plan.commit) as base_dir:
            pair = sidebyside.measure_pair(cfg, base_dir, progress=advance, todo=todo)
    base_env = {**env, "git_commit": plan.commit[:12]}
    base_rows = baseline_mod.result_rows([(r, None) for r in pair.base], base_env, cfg)
    base_rows.to_csv(run_dir / "base.csv", index=False)
    for r in (r for r in pair.base if r.status == "error"):
        console.print(f"[yellow]base {plan.commit[:12]} did not run[/] {escape(r.name)}: {escape(r.error)}")
    return pair.head, sidebyside.reference_ratios(pair.base)


def _update(
    path: Path, results: list[Result], env: dict, cfg: CheckConfig, console: Console, wall: float
) -> int:
    df = baseline_mod.write(path, results, env, cfg)
    console.print(table([(r, None) for r in results], cfg, title=f"new baseline {path}"))
    failed = [r for r in results if r.status == "error"]
    where = f"{env['device_name']}, {env['git_commit']}"
    console.print(f"wrote {len(df)} cell(s) to {path} ({where}); measured in {wall:.0f} s")
    for r in failed:
        console.print(f"[red]error[/] {escape(r.name)}: {escape(r.error)} (not in the baseline)")
    return 1 if failed else 0


def table(
    rows: list[tuple[Result, Decision | None]], cfg: CheckConfig, title: str = "", base: bool = False
) -> Table:
    """cell, baseline (or, `base`, the base commit's) ratio, new median ratio [p10, p90], change,
    p-value, verdict."""
    title = title or (
        f"attnbench check: ratio = variant / {cfg.reference} time per round; regression = median "
        f"> {'base' if base else 'baseline'} x {1 + cfg.tolerance:g} and Mann-Whitney p < {cfg.alpha:g}"
    )
    out = Table(title=escape(title))
    reference = "base" if base else "baseline"
    for col in ("cell", reference, "new median [p10, p90]", "change", "p-value", "verdict"):
        out.add_column(escape(col), justify="left" if col in ("cell", "verdict") else "right")
    for r, d in rows:
        if r.status != "ok":
            out.add_row(escape(r.name), "", "", "", "", escape(r.status))
            continue
        if d is None:  # --update-baseline: only the measured ratios
            s = summarize(r.ratios)
            out.add_row(escape(r.name), "", f"{s.median:.3f} [{s.p10:.3f}, {s.p90:.3f}]", "", "", "written")
            continue
        base = "" if d.baseline is None else f"{d.baseline:.3f}"
        change = "" if d.change is None else f"{d.change:+.1%}"
        p = "" if d.p_value is None else f"{d.p_value:.2g}"
        spread = f"{d.median:.3f} [{d.p10:.3f}, {d.p90:.3f}]"
        out.add_row(escape(r.name), base, spread, change, p, f"[{STYLE[d.verdict]}]{d.verdict}[/]")
    return out


def verdict(
    rows: list[tuple[Result, Decision | None]], plan: against.Plan, cfg: CheckConfig, console: Console,
    wall: float,
) -> int:  # fmt: skip
    """One line per regressed or failed cell, a summary line; 1 if any, else 0."""
    regressed = [(r, d) for r, d in rows if d is not None and d.verdict == "REGRESSED"]
    failed = [r for r, _ in rows if r.status == "error"]
    compared = [d for _, d in rows if d is not None and d.verdict != "new"]
    if not compared and not failed:
        where = f"baseline {cfg.baseline!r}" if plan.kind == "figures" else f"base {plan.commit[:12]}"
        raise ValueError(
            f"no measured cell is in {where} (other shapes, dtype or variants?): nothing was compared"
            + ("; rewrite it with --update-baseline" if plan.kind == "figures" else "")
        )
    word = "baseline" if plan.kind == "figures" else "base"
    for r, d in regressed:
        console.print(
            f"[bold red]REGRESSED[/] {escape(r.name)}: {word} ratio {d.baseline:.3f}, "
            f"new {d.median:.3f} ({d.change:+.0%}), p={d.p_value:.2g}"
        )
    for r in failed:
        console.print(f"[bold red]FAILED[/] {escape(r.name)} did not run: {escape(r.error)}")
    _notes(rows, plan.rows, console)
    counts = {v: sum(1 for _, d in rows if d is not None and d.verdict == v) for v in STYLE}
    counts["error"] = len(failed)
    summary = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
    console.print(f"{len(rows)} cell(s) in {wall:.0f} s against {escape(plan.describe())}: {summary}")
    return 1 if regressed or failed else 0


def _notes(rows: list[tuple[Result, Decision | None]], old: pd.DataFrame | None, console: Console) -> None:
    unsupported = [r.name for r, _ in rows if r.status == "unsupported"]
    if unsupported:
        why = "a mode not in the registry entry, or a backend this device lacks"
        console.print(f"not run (unsupported: {why}): {escape(', '.join(unsupported))}")
    if old is None:  # measured side by side: a cell the base ran and this checkout did not is not listed
        return
    measured = {r.cell.key() for r, _ in rows}
    gone = [row["cell"] for row in old.to_dict("records") if row_key(row) not in measured]
    if gone:
        console.print(f"in the baseline but not measured now: {escape(', '.join(gone))}")
