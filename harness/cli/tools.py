"""The measurement-tooling commands of `attnbench`: check, init, calibrate, selftest, compare.

They register themselves on `app` (harness/cli/app.py) when this module is imported; the package
(harness/cli/__init__.py) imports it, so `import harness.cli` (the console script, `python -m
harness.cli`, the tests) always sees every command. Options, `fail_cleanly` and the list helpers
come from app.py, so these commands read and fail exactly as sweep and accuracy do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from .. import config as config_mod
from ..config import load as load_config
from .app import (
    BackendOption,
    CompileOption,
    ConfigOption,
    ModesOption,
    PluginOption,
    app,
    fail_cleanly,
    load_plugins,
    split_csv,
)

# --- check (issue 8): CI performance regression check against a committed baseline of ratios ----


@app.command("check")
@fail_cleanly
def check_command(
    baseline: Annotated[
        str | None, typer.Option(help="Baseline CSV (bench.toml's, e.g. benchmarks/baselines/ci-cpu.csv).")
    ] = None,
    profile: Annotated[str | None, typer.Option(help="Named profile from bench.toml, e.g. ci.")] = None,
    tolerance: Annotated[
        float | None, typer.Option(help="Allowed growth of a cell's ratio before it counts (0.15 = 15%).")
    ] = None,
    alpha: Annotated[float | None, typer.Option(help="Significance level of the per-cell test.")] = None,
    rounds: Annotated[int | None, typer.Option(help="Interleaved rounds (ratio samples) per cell.")] = None,
    variants: Annotated[
        str | None, typer.Option(help="Comma-separated names, 'all', or name:key=value (not the reference).")
    ] = None,
    modes: ModesOption = None,
    backend: BackendOption = None,
    compile: CompileOption = None,
    out: Annotated[
        str | None, typer.Option(help="Output folder; check.csv and benchmark.json go to <out>/<run_id>/.")
    ] = None,
    metric: Annotated[
        str | None,
        typer.Option(help="time (ratios to mha) or instructions (counts under callgrind; needs valgrind)."),
    ] = None,
    against: Annotated[
        str | None,
        typer.Option(help="A commit (git revision) to measure here side by side, instead of the baseline."),
    ] = None,
    prefer: Annotated[
        str | None,
        typer.Option(help="figures (this model's in the baseline) or commit (its commit, measured here)."),
    ] = None,
    plan: Annotated[
        bool, typer.Option("--plan", help="Print which comparison the check would make, then exit (0, or 2).")
    ] = False,
    update_baseline: Annotated[
        bool, typer.Option("--update-baseline", help="Measure and rewrite the baseline instead of checking.")
    ] = False,
    config: ConfigOption = None,
    plugin: PluginOption = None,
) -> None:
    """Time each variant against mha interleaved; exit 1 if a ratio grew beyond the baseline's
    figures for this machine model (or, where it has none, its commit's, measured here)."""
    from ..check import instructions_view
    from ..check import ratios as check
    from ..check import view as check_view

    overrides = dict(
        baseline=baseline,
        tolerance=tolerance,
        alpha=alpha,
        rounds=rounds,
        variants=split_csv(variants),
        modes=split_csv(modes),
        backend=split_csv(backend),
        compile=split_csv(compile),
        out=out,
        metric=metric,
        plugins=plugin,
        against=against,
        prefer=prefer,
    )
    settings = config_mod.find(config)
    cfg = load_config(check.CheckConfig, "check", settings=settings, profile=profile, overrides=overrides)
    load_plugins(cfg.plugins)
    console, record = Console(width=160), settings.record(profile)
    view = instructions_view if cfg.metric == "instructions" else check_view
    raise typer.Exit(view.main(cfg, update=update_baseline, console=console, settings=record, plan_only=plan))


# --- init (issue 14): the built-in defaults as an editable bench.toml -------------------------


@app.command("init")
@fail_cleanly
def init_command(
    path: Annotated[
        Path, typer.Argument(help="File to write; a folder gets FOLDER/bench.toml.")
    ] = config_mod.DEFAULT_PATH,
    force: Annotated[bool, typer.Option("--force", help="Overwrite the file if it exists.")] = False,
) -> None:
    """Write the built-in defaults, with their comments, as an editable bench.toml."""
    written = config_mod.write_defaults(path, force=force)
    here = written.resolve() == config_mod.DEFAULT_PATH.resolve()
    use = "commands run in this folder read it" if here else f"commands read it with --config {written}"
    typer.echo(f"wrote {written}: the built-in defaults and profiles, with their comments; {use}")


# --- calibrate, selftest (issue 13): this machine's roofs, and what to run first on a new box ---


@app.command("calibrate")
@fail_cleanly
def calibrate_command(
    device: Annotated[str, typer.Option(help="auto (CUDA if available), cpu or cuda.")] = "auto",
    dtype: Annotated[str, typer.Option(help="float32, float64, float16 or bfloat16.")] = "float32",
    threads: Annotated[int, typer.Option(help="CPU: torch threads (0: torch default).")] = 0,
    refresh: Annotated[bool, typer.Option("--refresh", help="Measure again even if cached.")] = False,
) -> None:
    """Measure dense matmul FLOP/s and copy bandwidth on the device (cached per device and dtype)."""
    from .. import measure
    from ..measure import calibrate, timing

    if dtype not in measure.DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; valid dtypes: {sorted(measure.DTYPES)}")
    with timing.threads(threads):
        c = calibrate.get(measure.resolve_device(device), dtype, refresh=refresh)
    typer.echo(
        f"{c.device_name} {c.dtype} threads={c.threads}: matmul {c.peak_flops / 1e12:.3f} TFLOP/s "
        f"(k={c.matmul_k}), copy {c.peak_bytes_per_s / 1e9:.1f} GB/s; measured {c.measured}, "
        f"cached in {calibrate.cache_dir() / 'calibration.json'}"
    )


@app.command("selftest")
@fail_cleanly
def selftest_command(
    device: Annotated[str, typer.Option(help="auto (CUDA if available), cpu or cuda.")] = "auto",
    out: Annotated[Path, typer.Option(help="Folder for the tiny sweep's run and selftest.csv.")] = Path(
        "results/selftest"
    ),
    plugin: PluginOption = None,
    config: ConfigOption = None,
) -> None:
    """Check every variant x mode against its reference on the device, then a tiny sweep and
    one check round; print one table, exit 1 on any failure."""
    from .. import measure, selftest

    load_plugins([*config_mod.find(config).plugins, *(plugin or [])])
    dev = measure.resolve_device(device)
    outcomes = selftest.run(dev, out)
    raise typer.Exit(selftest.report(outcomes, out, Console(width=200)))


# --- compare (issue 19): two finished runs, cell by cell: ratio, interval, significance --------


@app.command("compare")
@fail_cleanly
def compare_command(
    run_a: Annotated[
        Path,
        typer.Argument(
            help="The run compared against: its folder (sweep.csv), or a folder of repeated runs."
        ),
    ],
    run_b: Annotated[Path, typer.Argument(help="The run(s) compared, the same way (B/A < 1: B is faster).")],
    threshold: Annotated[
        float, typer.Option(help="A change smaller than this share is 'same' however significant.")
    ] = 0.05,
    alpha: Annotated[
        float,
        typer.Option(
            help="Significance level of the per-cell test against between-run drift (several runs a side)."
        ),
    ] = 0.01,
    fail_on_slower: Annotated[
        bool,
        typer.Option(
            "--fail-on-slower", help="Exit 1 if a cell is significantly slower in B or stopped running."
        ),
    ] = False,
) -> None:
    """B/A of the median latency per matched cell and a verdict; with several runs a side, p and p10-p90
    against the drift between runs."""
    from .. import compare_runs

    code = compare_runs.main(
        run_a,
        run_b,
        threshold=threshold,
        alpha=alpha,
        fail_on_slower=fail_on_slower,
        console=Console(width=160),
    )
    raise typer.Exit(code)
