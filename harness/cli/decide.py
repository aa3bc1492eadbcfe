"""`attnbench decide`: registers itself on `app` (harness/cli/app.py) when imported."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .. import config as config_mod
from ..config import load as load_config
from .app import ConfigOption, PluginOption, app, fail_cleanly, load_plugins, overrides


@app.command("decide")
@fail_cleanly
def decide_command(
    ctx: typer.Context,
    run_dirs: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Sweep and accuracy run folders (none: run the decide profile's sweep and accuracy)."
        ),
    ] = None,
    variants: Annotated[
        str | None, typer.Option(help="Variants to keep (comma-separated, or 'all').")
    ] = None,
    profile: Annotated[
        str | None, typer.Option(help="Profile of the sweep and accuracy run when no folder is given.")
    ] = None,
    tp: Annotated[str | None, typer.Option(help="Tensor-parallel degrees, e.g. 1,2,8.")] = None,
    memory_gb: Annotated[float | None, typer.Option(help="Cache memory per device, GB (1e9 bytes).")] = None,
    context: Annotated[
        int | None, typer.Option(help="Tokens per request, for the requests that fit.")
    ] = None,
    layers: Annotated[int | None, typer.Option(help="Attention layers holding a cache.")] = None,
    objectives: Annotated[
        str | None, typer.Option(help="Pareto objectives: cache, decode, prefill, accuracy.")
    ] = None,
    out: Annotated[str | None, typer.Option(help="Output folder (default: <first run>/decide).")] = None,
    plugins: PluginOption = None,
    config: ConfigOption = None,
) -> None:
    """One row per design: cache per device, decode and prefill latency, accuracy, Pareto front."""
    from ..decide import DecideConfig, runner

    given = overrides(DecideConfig, ctx.params)
    settings = config_mod.find(config)
    cfg = load_config(DecideConfig, "decide", settings=settings, overrides=given)
    load_plugins(cfg.plugins)  # the runs read may hold their variants; a run of the profile needs them
    for path in run_dirs or []:
        if not path.is_dir():
            raise ValueError(f"run folder {str(path)!r} does not exist or is not a folder")
    written = runner.main(run_dirs or [], cfg, settings)
    typer.echo(f"wrote {len(written)} files; open {next(p for p in written if p.name == 'index.html')}")
