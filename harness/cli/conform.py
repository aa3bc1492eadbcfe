"""`attnbench conform`: does a variant honour the contract? (harness/conform has the checks.)

It registers itself on `harness.cli.app.app` when imported, as the other command modules do.
"""

from __future__ import annotations

from typing import Annotated

import typer

from .. import config as config_mod
from .app import ConfigOption, PluginOption, app, fail_cleanly, load_plugins, overrides, split_csv, terminal


@app.command("conform")
@fail_cleanly
def conform_command(
    ctx: typer.Context,
    variants: Annotated[
        list[str], typer.Argument(help="Variants: names, name:key=value:... (swa:sliding_window=3), or all.")
    ],
    device: Annotated[str | None, typer.Option(help="cpu or cuda.")] = None,
    dtype: Annotated[
        str | None,
        typer.Option(
            help="float64 (tolerance 1e-9, the default), float32 (1e-4), float16 (1e-2), bfloat16 (5e-2)."
        ),
    ] = None,
    plugins: PluginOption = None,
    config: ConfigOption = None,
) -> None:
    """Check the variant contract with no reference: shape, batch independence, causal leak,
    decode = one forward, cache bytes, fill, ragged batches, gradients, meta-device FLOPs and the
    multimodal rules. Exit 1 naming each failed property with what was measured."""
    from .. import measure
    from ..conform import ConformConfig, view
    from ..variant_choice import parse_variants

    given = overrides(ConformConfig, ctx.params)
    cfg = config_mod.load(ConformConfig, "conform", settings=config_mod.find(config), overrides=given)
    measure.resolve_device(cfg.device)  # cuda without a GPU: one line, exit 2
    load_plugins(cfg.plugins)
    choices = parse_variants([name for item in variants for name in split_csv(item) or []])
    raise typer.Exit(view.main(choices, cfg, terminal()))
