"""`attnbench check --metric instructions`: the committed baseline of counts, the verdict, the table.

Exit codes: 0 no regression; 1 a cell REGRESSED or failed to run; 2 (ValueError, see
cli.fail_cleanly) no valgrind, no baseline, or a baseline from another environment.

A count is comparable only with one made by the same torch, Python and CPU instruction set
(the kernels torch dispatches to), and, per cell, through the same SDPA kernel: across any of
those the check refuses (exit 2) rather than report a difference it cannot attribute.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table

import runfiles as files

from .. import dashboard, measure
from ..records import write_run_json
from ..sweep.grid import Cell, row_key
from ..sweep.runner import new_run_dir
from . import against, instructions
from . import baseline as time_baseline
from . import ratios as check
from .instructions import Count
from .ratios import CheckConfig
from .view import STYLE

KEY = time_baseline.KEY  # the cell's key columns, as in the time baseline
ENVIRONMENT = ("torch_version", "python_version", "cpu_capability")  # refused across
INFO = ("valgrind_version", "device_name", "git_commit", "host", "date")  # recorded, not compared
COLUMNS = ("cell", *KEY, "compile", "instructions", "calls", "spread", "sdpa_backend", *ENVIRONMENT, *INFO)
RESULT_EXTRA = ("status", "error", "baseline", "ratio", "verdict")  # instructions.csv of every run


def main(
    cfg: CheckConfig, *, update: bool, console: Console, settings: dict | None = None, plan_only: bool = False
) -> int:
    """Count every cell, then compare with (or, with `update`, rewrite) the baseline; the exit code.
    With `cfg.against` the counts are compared with that commit's, counted here once as well.
    Every run also writes <out>/<run_id>/: run.json, instructions.csv and benchmark.json."""
    path = Path(cfg.instructions_baseline)
    instructions.valgrind()  # no valgrind: exit 2 before anything else
    if update and cfg.against:
        raise ValueError(f"--against {cfg.against} compares; --update-baseline writes counts: choose one")
    commit = _base_commit(cfg) if cfg.against else None
    old = None if update or commit else read(path)
    comparison = f"measured base {commit[:12]} here (both commits counted once)" if commit else ""
    comparison = comparison or f"the counts in {path} (same torch, Python and CPU capability only)"
    console.print(f"comparison: {escape(comparison)}")
    if plan_only:
        return 0
    todo = check.preflight(cfg)  # bad option values or --out fail before valgrind starts
    run_dir = new_run_dir(cfg)
    run_dir.mkdir(parents=True)
    env = _host()
    write_run_json(run_dir, cfg, env, len(todo), command="check", update_baseline=update, settings=settings,
                   comparison=comparison)  # fmt: skip
    t0 = time.perf_counter()
    with console.status(f"counting instructions of {len(todo)} cell(s) under callgrind"):
        if commit:
            counts, counted_env, old = _count_both(cfg, commit, env, todo)
        else:
            counts, counted_env = instructions.measure_all(cfg, todo=todo)
    env, wall = {**counted_env, **env}, time.perf_counter() - t0
    if not update and not commit:
        refuse_if_incomparable(old, env, counts, path)
    _write_results(run_dir, counts, old, env, cfg, console)
    console.print(table(counts, old, cfg))
    if update:
        write(path, counts, env)
        console.print(f"wrote {sum(c.status == 'ok' for c in counts)} cell(s) to {path}; {wall:.0f} s")
        return 1 if any(c.status == "error" for c in counts) else 0
    return verdict(counts, old, cfg, console, wall)


def _base_commit(cfg: CheckConfig) -> str:
    """The full hash of `--against`; ValueError (exit 2) if this checkout does not have it."""
    repo = against.repo_root()
    commit = against.resolve(cfg.against, repo)
    if commit is None:
        raise ValueError(f"--against {cfg.against}: {cfg.against} {against.unreachable(cfg.against, repo)}")
    return commit


def _count_both(
    cfg: CheckConfig, commit: str, env: Mapping[str, str], todo: list[Cell]
) -> tuple[list[Count], dict[str, str], pd.DataFrame]:
    """This checkout's counts and environment, and the base commit's counts as a baseline frame
    (cells it cannot run are left out), both counted here at once."""
    with against.checkout(commit) as base_dir:
        (counts, counted_env), (base, base_env) = instructions.measure_sides(cfg, [None, base_dir], todo)
    return counts, counted_env, frame(base, {**base_env, **env, "git_commit": commit[:12]})


def _write_results(
    run_dir: Path, counts: Sequence[Count], old: pd.DataFrame | None, env: Mapping[str, str],
    cfg: CheckConfig, console: Console,
) -> None:  # fmt: skip
    """instructions.csv (every cell, its status, count, baseline and verdict) and benchmark.json."""
    base, date = _baseline_counts(old), datetime.now(timezone.utc).isoformat(timespec="seconds")
    rows = []
    for c in counts:
        row = _row(c, {**env, "date": date}) if c.status == "ok" else _key(c, {**env, "date": date})
        word, ratio = decide(c, base, cfg) if c.status == "ok" and old is not None else ("", None)
        shown = "" if ratio is None else f"{ratio:.5f}"
        row.update(status=c.status, error=c.error, verdict=word, ratio=shown)
        row["baseline"] = str(base.get(c.cell.key(), ""))
        rows.append(row)
    df = pd.DataFrame(rows, columns=[*COLUMNS, *RESULT_EXTRA], dtype=str).fillna("")
    df.to_csv(run_dir / "instructions.csv", index=False)
    dashboard.write(run_dir / dashboard.FILE, dashboard.instruction_records(df.to_dict("records")))
    console.print(f"results: {escape(str(run_dir / 'instructions.csv'))} (and {dashboard.FILE} beside it)")


def _host() -> dict[str, str]:
    env = measure.environment(measure.resolve_device("cpu"))
    return {k: str(env[k]) for k in ("device", "device_name", "torch_version", "git_commit", "host")}


def read(path: Path) -> pd.DataFrame:
    """The baseline rows as text; a missing file says how to create one."""
    if not Path(path).is_file():
        raise ValueError(
            f"no instruction-count baseline at {str(path)!r}: count one with "
            "`attnbench check --metric instructions --update-baseline` (same flags/profile), commit it"
        )
    spec = files.Spec(
        "instruction-count baseline",
        required=COLUMNS,
        integers=frozenset(("batch", "seq_len", "n_visual", "n_heads", "n_kv_heads", "head_dim")),
        floats=frozenset(("instructions", "spread")),
        samples=frozenset(("calls",)),  # each call's count, ';'-separated
        filled=frozenset(("instructions", "variant", "mode")),
        key=(*KEY, "compile", "cpu_capability"),
    )
    return files.read_table(path, spec).frame(dtype=str, keep_default_na=False)


def write(path: Path, counts: Sequence[Count], env: Mapping[str, str]) -> pd.DataFrame:
    """The ok counts as the baseline (a whole rewrite: counts from two environments never mix)."""
    df = frame(counts, env)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)
    return df


def frame(counts: Sequence[Count], env: Mapping[str, str]) -> pd.DataFrame:
    """The ok counts as baseline rows (text), dated now."""
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    rows = [_row(c, {**env, "date": date}) for c in counts if c.status == "ok"]
    return pd.DataFrame(rows, columns=list(COLUMNS), dtype=str)


def _key(c: Count, env: Mapping[str, str]) -> dict[str, str]:
    """A cell's identity columns (its key, as the time baseline names them) and the environment."""
    key = dict(zip(KEY, c.cell.key(), strict=False))  # a compiled cell's key has one more part
    values = dict(cell=c.name, **key, compile=c.cell.compile)
    values.update({k: env.get(k, "") for k in ENVIRONMENT + INFO})
    return {k: str(v) for k, v in values.items()}


def _row(c: Count, env: Mapping[str, str]) -> dict[str, str]:
    calls = ";".join(str(x) for x in c.calls)
    values = dict(instructions=c.instructions, calls=calls, spread=f"{c.spread:.6f}")
    values.update(sdpa_backend=c.sdpa_backend)
    return {**_key(c, env), **{k: str(v) for k, v in values.items()}}


def refuse_if_incomparable(
    df: pd.DataFrame, env: Mapping[str, str], counts: Sequence[Count], path: Path
) -> None:
    """ValueError (exit 2) when the baseline's environment or a cell's SDPA kernel differs."""
    for column in ENVIRONMENT:
        seen = sorted(set(df[column]))
        if seen != [env[column]]:
            raise ValueError(
                f"refusing baseline {str(path)!r}: its {column} is {','.join(seen)}, this run's is "
                f"{env[column]}; counts do not carry over, take one here with --update-baseline"
            )
    kernels = dict(zip(map(row_key, df.to_dict("records")), df["sdpa_backend"], strict=True))
    changed = [
        f"{c.name}: {kernels[c.cell.key()]} -> {c.sdpa_backend}"
        for c in counts
        if c.status == "ok" and c.cell.key() in kernels and kernels[c.cell.key()] != c.sdpa_backend
    ]
    if changed:
        raise ValueError(f"refusing baseline {str(path)!r}: the SDPA kernel changed in {'; '.join(changed)}")


def decide(count: Count, baseline: Mapping[tuple, int], cfg: CheckConfig) -> tuple[str, float | None]:
    """'REGRESSED' above the baseline by more than the tolerance, 'improved' below it, else 'ok';
    'new' without a baseline count. The ratio count / baseline, or None."""
    old = baseline.get(count.cell.key())
    if old is None:
        return "new", None
    ratio = count.instructions / old
    if ratio > 1 + cfg.instructions_tolerance:
        return "REGRESSED", ratio
    return ("improved" if ratio < 1 - cfg.instructions_tolerance else "ok"), ratio


def _baseline_counts(df: pd.DataFrame | None) -> dict[tuple, int]:
    if df is None:
        return {}
    return {row_key(r): int(r["instructions"]) for r in df.to_dict("records")}


def table(counts: Sequence[Count], df: pd.DataFrame | None, cfg: CheckConfig) -> Table:
    old = _baseline_counts(df)
    t = Table(title=f"instruction counts (median of {cfg.instructions_calls} calls, callgrind)")
    for name in ("cell", "instructions", "baseline", "ratio", "spread", "sdpa", "verdict"):
        t.add_column(name, justify="left" if name in ("cell", "sdpa", "verdict") else "right")
    for c in counts:
        if c.status != "ok":
            t.add_row(escape(c.name), "", "", "", "", "", f"[red]{c.status}[/]")
            continue
        word, ratio = decide(c, old, cfg) if df is not None else ("", None)
        base = f"{old[c.cell.key()]:,}" if c.cell.key() in old else ""
        shown = f"{ratio:.4f}" if ratio is not None else ""
        style = STYLE.get(word, "")
        verdict_cell = f"[{style}]{word}[/]" if style else word
        t.add_row(
            escape(c.name),
            f"{c.instructions:,}",
            base,
            shown,
            f"{c.spread:.2%}",
            c.sdpa_backend,
            verdict_cell,
        )
    return t


def verdict(
    counts: Sequence[Count], df: pd.DataFrame, cfg: CheckConfig, console: Console, wall: float
) -> int:
    """Name every regressed and failed cell; 1 if there is any."""
    old = _baseline_counts(df)
    bad = []
    for c in counts:
        if c.status == "error":
            bad.append(f"[red]error[/] {escape(c.name)}: {escape(c.error)}")
        elif c.status == "ok":
            word, ratio = decide(c, old, cfg)
            if word == "REGRESSED":
                bad.append(
                    f"[bold red]REGRESSED[/] {escape(c.name)}: {ratio:.4f}x the baseline's instructions"
                )
    for line in bad:
        console.print(line)
    tol = f"{cfg.instructions_tolerance:.1%}"
    ok = sum(c.status == "ok" for c in counts)
    console.print(f"{ok} cell(s) counted in {wall:.0f} s; {len(bad)} over the {tol} tolerance or failed")
    return 1 if bad else 0
