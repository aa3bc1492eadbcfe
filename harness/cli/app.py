"""The `attnbench` command line: a thin Typer layer over plain functions.

Bad input (a ValueError from the library or the harness) prints one line on stderr and
exits with code 2, never a traceback.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

import attn_variants as av

from .. import __version__
from .. import config as config_mod
from ..config import load as load_config
from .listing import variant_table

app = typer.Typer(
    name="attnbench",
    help="Benchmark and ablate attention variants: latency, memory, FLOPs and accuracy.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
F = TypeVar("F", bound=Callable[..., Any])


def _print_version(value: bool) -> None:
    if value:
        import platform

        import torch

        typer.echo(f"attnbench {__version__} (torch {torch.__version__}, Python {platform.python_version()})")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Benchmark and ablate attention variants: latency, memory, FLOPs and accuracy."""


# Options that sweep and check share: the grid's kernel, compile and mode axes.
BackendOption = Annotated[str | None, typer.Option(help=f"Kernels: {', '.join(av.BACKENDS)}.")]
CompileOption = Annotated[
    str | None, typer.Option(help="torch.compile modes (fullgraph): off, default, max-autotune.")
]
ModesOption = Annotated[str | None, typer.Option(help=f"Modes: {', '.join(av.MODES)}.")]

# Every command that takes variants takes this option; bench.toml's top-level `plugins` add up with it.
PluginOption = Annotated[
    list[str] | None,
    typer.Option(
        "--plugin",
        help="A module or .py file that registers variants (repeatable); adds to bench.toml's `plugins`.",
    ),
]

# Every command that reads settings takes this option (harness/config.py `find`).
ConfigOption = Annotated[
    Path | None,
    typer.Option(
        help="Settings file (it must exist). Default: ./bench.toml if there is one, else the built-in "
        "defaults (write them out with `attnbench init`)."
    ),
]


def fail_cleanly(fn: F) -> F:
    """Turn a ValueError into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ValueError as err:
            typer.echo("error: " + " ".join(str(err).splitlines()), err=True)  # one line, always
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]


def terminal() -> Console:
    """The console every command prints to: tables take the terminal's width (80 columns when
    piped, or $COLUMNS), folding cells to fit; plain lines are not broken, so a path printed
    stays whole for copying."""
    return Console(soft_wrap=True)


def load_plugins(targets: list[str] | tuple[str, ...] | None) -> None:
    """Import the plugins (attn_variants/plugins.py); a plugin that fails, given or installed,
    is a ValueError naming it (one line and exit 2 through `fail_cleanly`)."""
    from attn_variants import plugins

    plugins.load_all(targets or ())
    broken = plugins.errors()
    if broken:
        raise ValueError("; ".join(broken))


def split_csv(value: str | None) -> list[str] | None:
    """'a, b,c' -> ['a', 'b', 'c']; None stays None (the flag was not given)."""
    if value is None:
        return None
    return [item.strip() for item in value.split(",") if item.strip()]


@app.command("list")
@fail_cleanly
def list_variants(plugins: PluginOption = None, config: ConfigOption = None) -> None:
    """List the registered variants, their papers, modes, options and where each comes from."""
    from attn_variants.plugins import load_all

    load_all([*config_mod.find(config).plugins, *(plugins or [])])
    console = terminal()
    console.print(variant_table(console.width))
    load_plugins(())  # an installed plugin that failed: named after the table of what loaded, exit 2


# --- sweep (issue 5) -------------------------------------------------------------------------


def split_ints(flag: str, value: str | None) -> list[int] | None:
    """'128, 256' -> [128, 256]; a non-integer names the flag."""
    items = split_csv(value)
    if items is None:
        return None
    try:
        return [int(item) for item in items]
    except ValueError:
        raise ValueError(f"{flag} {value!r} must be a comma-separated list of integers") from None


def overrides(cls: type, params: Mapping[str, Any]) -> dict[str, Any]:
    """A command's parameters as overrides of `cls`, matched by field name: a parameter that is
    not a field of `cls` (--config, --resume, ...) is left out, an unset option stays None (it
    falls through to bench.toml; so does a repeatable one given no times), a path becomes text,
    and a tuple field's text is split at commas ('128,256'), into integers for a tuple of int (a
    bad item names its flag)."""
    hints = typing.get_type_hints(cls)
    out = {}
    for field in (f for f in dataclasses.fields(cls) if f.name in params):
        value, items = params[field.name], _tuple_items(hints[field.name])
        if field.name == "out" and value is not None and not str(value).strip():
            raise ValueError(f"--out {value!r} is empty: name a folder, e.g. results")
        if isinstance(value, (list, tuple)) and not value:
            value = None  # a repeatable option given no times (--plugin): unset, as any other
        if isinstance(value, str) and items is not None:
            flag = "--" + field.name.replace("_", "-")
            value = split_ints(flag, value) if items is int else split_csv(value)
        out[field.name] = str(value) if isinstance(value, Path) else value
    return out


def _tuple_items(tp: Any) -> Any:
    """The item type of a tuple field (`tuple[int, ...]`, or one of a union: `int | tuple[int, ...]`),
    else None."""
    for t in (tp, *typing.get_args(tp)):
        if typing.get_origin(t) is tuple:
            return typing.get_args(t)[0]
    return None


@app.command("sweep")
@fail_cleanly
def sweep_command(
    ctx: typer.Context,
    variants: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated names, 'all', or name:key=value:... (mmca:visual_attention=full)."
        ),
    ] = None,
    reference: Annotated[
        str | None,
        typer.Option(help="Variant added at every shape as the speedup baseline; 'none' to leave out."),
    ] = None,
    seq_len: Annotated[str | None, typer.Option(help="Sequence lengths n, e.g. 128,256,512.")] = None,
    heads: Annotated[str | None, typer.Option(help="Query head counts h.")] = None,
    kv_heads: Annotated[
        str | None, typer.Option(help="KV head counts g (pairs with h % g != 0 are skipped).")
    ] = None,
    modes: ModesOption = None,
    backend: BackendOption = None,
    compile: CompileOption = None,
    batch: Annotated[str | None, typer.Option(help="Batch size b, or several, e.g. 8,32.")] = None,
    head_dim: Annotated[int | None, typer.Option(help="Head dim e (d = h * e).")] = None,
    dtype: Annotated[
        str | None,
        typer.Option(help="auto (bfloat16 on CUDA, float32 on CPU), float32, float64, float16 or bfloat16."),
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto (CUDA if available), cpu or cuda.")] = None,
    repeats: Annotated[int | None, typer.Option(help="Timed calls per cell.")] = None,
    min_time_s: Annotated[
        float | None, typer.Option(help="Keep timing a cell until its timed calls add up to this.")
    ] = None,
    warmup: Annotated[int | None, typer.Option(help="Untimed warm-up calls per cell, at least.")] = None,
    warmup_s: Annotated[
        float | None, typer.Option(help="...and more until the warm-up calls add up to this many seconds.")
    ] = None,
    threads: Annotated[
        int | None, typer.Option(help="torch.set_num_threads for the run (0: torch default).")
    ] = None,
    visual_frac: Annotated[float | None, typer.Option(help="Multimodal variants: visual share of n.")] = None,
    layout: Annotated[
        str | None,
        typer.Option(
            help="Multimodal variants: prefix (one image first) or interleaved (images between text)."
        ),
    ] = None,
    images: Annotated[int | None, typer.Option(help="Images of the interleaved layout.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for weights and inputs.")] = None,
    lengths: Annotated[
        str | None,
        typer.Option(
            help="Decode: each request's cache length: fixed (seq_len), uniform:LO-HI, zipf:A:MAX, "
            "lognormal:MU:SIGMA:MAX or file:PATH (drawn with --seed)."
        ),
    ] = None,
    kv_layout: Annotated[str | None, typer.Option(help="Decode: KV cache layout, padded or paged.")] = None,
    page_size: Annotated[int | None, typer.Option(help="Decode, paged layout: tokens per page.")] = None,
    q_len: Annotated[
        int | None, typer.Option(help="Decode: query tokens per request per step (> 1: speculative).")
    ] = None,
    out: Annotated[str | None, typer.Option(help="Output folder; the run goes to <out>/<run_id>/.")] = None,
    executor: Annotated[
        str | None, typer.Option(help="local (this process) or ray (cells on Ray workers).")
    ] = None,
    ray_address: Annotated[
        str | None, typer.Option(help="Ray cluster to join: auto or HOST:PORT ('' starts a local one).")
    ] = None,
    retries: Annotated[
        int | None, typer.Option(help="Ray: reruns of a cell whose worker or node was lost (default 2).")
    ] = None,
    accelerator_type: Annotated[
        str | None, typer.Option(help="Ray: run only on nodes of this accelerator label, e.g. H100.")
    ] = None,
    l2_flush: Annotated[
        bool | None,
        typer.Option("--l2-flush/--no-l2-flush", help="CUDA: cool the L2 before each fwd/fwd_bwd call."),
    ] = None,
    cuda_graph: Annotated[
        bool | None, typer.Option("--cuda-graph/--no-cuda-graph", help="CUDA: time decode as graph replays.")
    ] = None,
    memory_limit_mb: Annotated[
        float | None,
        typer.Option(help="Skip cells whose estimated peak exceeds this (0: CUDA free memory; CPU none)."),
    ] = None,
    profile: Annotated[
        str | None, typer.Option(help="Named profile from bench.toml: quick, ci, gpu.")
    ] = None,
    config: ConfigOption = None,
    plugins: PluginOption = None,
    resume: Annotated[
        Path | None,
        typer.Option(help="Finish an interrupted run: its folder (settings come from its run.json)."),
    ] = None,
    no_report: Annotated[
        bool, typer.Option("--no-report", help="Skip drawing the figures and index.html at the end.")
    ] = False,
) -> None:
    """Measure latency, peak memory and FLOPs over a grid of variants and shapes, into CSV."""
    from ..sweep import runner as sweep
    from ..sweep import view as sweep_view

    given = overrides(sweep.SweepConfig, ctx.params)
    if resume is not None:
        given = sorted(k for k, v in given.items() if v is not None) + (["profile"] if profile else [])
        if given:
            raise ValueError(f"--resume takes its settings from run.json; drop {given}")
        cfg, record = sweep.resume_config(resume), None  # run.json keeps the first session's record
    else:
        settings = config_mod.find(config)
        cfg = load_config(sweep.SweepConfig, "sweep", settings=settings, profile=profile, overrides=given)
        record = settings.record(profile)
    load_plugins(cfg.plugins)
    console = terminal()
    code = sweep_view.main(cfg, resume=resume, console=console, report=not no_report, settings=record)
    raise typer.Exit(code)


# --- report (issue 7): redraw figures and pages from run directories' CSVs -------------------


@app.command("report")
@fail_cleanly
def report(
    run_dirs: Annotated[
        list[Path],
        typer.Argument(help="Run directories holding sweep.csv and/or accuracy.csv (and run.json)."),
    ],
    out: Annotated[
        str | None,
        typer.Option(
            help="Output directory (default: <run>/report; several runs: compare_<a>_vs_<b> beside "
            "the first)."
        ),
    ] = None,
    seq_len: Annotated[
        int | None,
        typer.Option(
            help="Sequence length of the speedup heatmap (default: the largest with an mha baseline)."
        ),
    ] = None,
) -> None:
    """Redraw every figure, index.html and summary.md from the runs' CSVs (several runs are compared)."""
    from reports.render import render  # here, so other commands do not pay for matplotlib's import

    if out is not None and not out.strip():
        raise ValueError(f"--out {out!r} is empty: name a folder, e.g. results")
    written = render(run_dirs, None if out is None else Path(out), seq_len=seq_len)
    typer.echo(f"wrote {len(written)} files; open {next(p for p in written if p.name == 'index.html')}")


# --- accuracy (issue 6): train the tiny transformer per variant on mqar, digits, captions -----


@app.command("accuracy")
@fail_cleanly
def accuracy_command(
    ctx: typer.Context,
    variants: Annotated[
        str | None,
        typer.Option(help="Comma-separated names, 'all', or name:key=value:... (gqa:backend=eager)."),
    ] = None,
    tasks: Annotated[str | None, typer.Option(help="Tasks: mqar, digits, captions, pairs.")] = None,
    seeds: Annotated[
        str | None, typer.Option(help="Seeds, e.g. 0,1,2 (summary: mean ± std over them).")
    ] = None,
    heads: Annotated[int | None, typer.Option(help="Query heads h.")] = None,
    kv_heads: Annotated[
        str | None, typer.Option(help="KV head counts g for variants that take one (divisors of h).")
    ] = None,
    dim: Annotated[int | None, typer.Option(help="Model width d.")] = None,
    layers: Annotated[int | None, typer.Option(help="Transformer blocks L.")] = None,
    batch: Annotated[int | None, typer.Option(help="Training batch size.")] = None,
    ablate: Annotated[
        str | None,
        typer.Option(help="none, or zero-attention: attention outputs replaced by zeros (a control run)."),
    ] = None,
    threads: Annotated[
        int | None, typer.Option(help="torch.set_num_threads for the run (0: torch default).")
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto (CUDA if available), cpu or cuda.")] = None,
    out: Annotated[str | None, typer.Option(help="Output folder; the run goes to <out>/<run_id>/.")] = None,
    profile: Annotated[str | None, typer.Option(help="Named profile from bench.toml: quick, ci.")] = None,
    config: ConfigOption = None,
    plugins: PluginOption = None,
    no_report: Annotated[
        bool, typer.Option("--no-report", help="Skip drawing the figures and index.html at the end.")
    ] = False,
) -> None:
    """Train and test a tiny transformer per variant on small real tasks; accuracy into CSV."""
    from ..accuracy import runner as accuracy
    from ..accuracy import view as accuracy_view

    given = overrides(accuracy.AccuracyConfig, ctx.params)
    settings = config_mod.find(config)
    cfg = load_config(
        accuracy.AccuracyConfig, "accuracy", settings=settings, profile=profile, overrides=given
    )
    load_plugins(cfg.plugins)
    accuracy.preflight(cfg)  # unknown variants, bad options or an unwritable --out fail here, before any run
    console, record = terminal(), settings.record(profile)
    raise typer.Exit(accuracy_view.main(cfg, console=console, report=not no_report, settings=record))
