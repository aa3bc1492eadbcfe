"""`attnbench list`'s table of the registry, as wide as the terminal allows."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.table import Table

import attn_variants as av

WIDE = 150  # columns below which `list` prints one block per variant, not one row


def variant_table(width: int = WIDE) -> Table:
    """The registry as a rich table: what `attnbench list` prints. Narrower than `WIDE`
    columns (an 80-column terminal), each variant is a block of lines beside its name."""
    if width < WIDE:
        return _variant_blocks()
    table = Table(title="attention variants", show_lines=False)
    columns = ("name", "description", "paper", "modes", "multimodal", "causal-safe", "uses g", "options")
    columns += ("from",)  # "built in", or the distribution, module or file of a plugin
    for column in columns:
        table.add_column(column, overflow="fold", no_wrap=column == "paper")
    for name in av.names():
        entry = av.info(name)
        cells = (
            name,
            entry.description,
            entry.paper,
            ",".join(entry.modes),
            "yes" if entry.multimodal else "no",
            _causal(entry),
            _uses_g(entry),
            _options(entry),
            entry.origin,
        )
        table.add_row(*map(escape, cells))  # registry text is plain: "[visual; text]" is not markup
    return table


def _variant_blocks() -> Table:
    """One row per variant: its name, then its description, paper, modes and flags, options and
    origin on lines of their own, folded to the terminal."""
    table = Table(title="attention variants", show_lines=True, show_header=False)
    table.add_column("name", no_wrap=True, style="bold")
    table.add_column("about", overflow="fold")
    for name in av.names():
        entry = av.info(name)
        flags = f"modes {','.join(entry.modes)} · multimodal {'yes' if entry.multimodal else 'no'}"
        flags += f" · causal-safe {_causal(entry)} · uses g {_uses_g(entry)}"
        about = [
            entry.description,
            entry.paper,
            flags,
            f"options: {_options(entry) or '-'}",
            f"from: {entry.origin}",
        ]
        table.add_row(escape(name), escape("\n".join(about)))
    return table


def _causal(entry: Any) -> str:
    return "yes" if entry.causal_safe else "NO (reads later tokens)"


def _uses_g(entry: Any) -> str:
    return "yes" if entry.uses_kv_heads else "no (latent)"


def _options(entry: Any) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in entry.options.items())
