"""`attnbench generate`: each variant inside a small decoder that generates (harness/generate/)."""

from __future__ import annotations

from typing import Annotated

import typer

from .. import config as config_mod
from .app import ConfigOption, PluginOption, app, fail_cleanly, load_plugins, overrides, terminal


@app.command("generate")
@fail_cleanly
def generate_command(
    ctx: typer.Context,
    variants: Annotated[
        str | None,
        typer.Option(help="Comma-separated names, 'all', or name:key=value:... (mla:absorb=never)."),
    ] = None,
    reference: Annotated[
        str | None, typer.Option(help="Variant the speedups are over (added first); 'none' to leave out.")
    ] = None,
    context: Annotated[str | None, typer.Option(help="Prompt lengths P, e.g. 128,1024,8192.")] = None,
    new_tokens: Annotated[int | None, typer.Option(help="Tokens generated T (T - 1 decode steps).")] = None,
    batch: Annotated[int | None, typer.Option(help="Batch size b.")] = None,
    layers: Annotated[int | None, typer.Option(help="Decoder blocks L.")] = None,
    dim: Annotated[int | None, typer.Option(help="Model width d.")] = None,
    heads: Annotated[int | None, typer.Option(help="Query heads h.")] = None,
    kv_heads: Annotated[int | None, typer.Option(help="KV heads g for the variants that take one.")] = None,
    device: Annotated[str | None, typer.Option(help="auto (CUDA if available), cpu or cuda.")] = None,
    dtype: Annotated[
        str | None,
        typer.Option(help="auto (bfloat16 on CUDA, float32 on CPU), float32, float64, float16, bfloat16."),
    ] = None,
    compile: Annotated[
        str | None,
        typer.Option(
            help="torch.compile mode of the decode step outside attention: off, default, reduce-overhead "
            "(CUDA graphs on a GPU), max-autotune."
        ),
    ] = None,
    cache_layout: Annotated[
        str | None, typer.Option(help="KV caches: padded, or paged (pages in a random order, a block table).")
    ] = None,
    page_size: Annotated[int | None, typer.Option(help="Tokens per page of a paged cache.")] = None,
    warmup: Annotated[int | None, typer.Option(help="Untimed generations before the profiled one.")] = None,
    share_steps: Annotated[int | None, typer.Option(help="Decode steps timed for attn_share.")] = None,
    threads: Annotated[int | None, typer.Option(help="torch.set_num_threads (0: torch default).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for weights and prompts.")] = None,
    out: Annotated[str | None, typer.Option(help="Output folder; the run goes to <out>/<run_id>/.")] = None,
    profile: Annotated[str | None, typer.Option(help="Named profile from bench.toml: ci, gpu.")] = None,
    plugins: PluginOption = None,
    config: ConfigOption = None,
    no_report: Annotated[
        bool, typer.Option("--no-report", help="Skip drawing the figures at the end.")
    ] = False,
) -> None:
    """Each variant inside a small decoder that generates: TTFT, TPOT, tokens/s and attention's share."""
    from ..generate import run, view

    given = overrides(run.GenerateConfig, ctx.params)
    settings = config_mod.find(config)
    cfg = config_mod.load(run.GenerateConfig, "generate", settings=settings, profile=profile, overrides=given)
    load_plugins(cfg.plugins)
    console = terminal()
    raise typer.Exit(view.main(cfg, console=console, report=not no_report, settings=settings.record(profile)))
