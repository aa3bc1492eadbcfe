"""The `attnbench` command line: a thin Typer layer over plain functions.

Bad input (a ValueError from the library or the harness) prints one line on stderr and
exits with code 2, never a traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

import attn_variants as av

app = typer.Typer(
    name="attnbench",
    help="Benchmark and ablate attention variants: latency, memory, FLOPs and accuracy.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
F = TypeVar("F", bound=Callable[..., Any])


@app.callback()
def _root() -> None:
    """Benchmark and ablate attention variants: latency, memory, FLOPs and accuracy."""


def fail_cleanly(fn: F) -> F:
    """Turn a ValueError into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ValueError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]


def split_csv(value: str | None) -> list[str] | None:
    """'a, b,c' -> ['a', 'b', 'c']; None stays None (the flag was not given)."""
    if value is None:
        return None
    return [item.strip() for item in value.split(",") if item.strip()]


def variant_table() -> Table:
    """The registry as a rich table: what `attnbench list` prints."""
    table = Table(title="attention variants", show_lines=False)
    for column in ("name", "description", "paper", "modes", "multimodal", "causal-safe", "options"):
        table.add_column(column, overflow="fold")
    for name in av.names():
        entry = av.info(name)
        options = ", ".join(f"{k}={v!r}" for k, v in entry.options.items())
        table.add_row(
            name,
            entry.description,
            entry.paper,
            ",".join(entry.modes),
            "yes" if entry.multimodal else "no",
            "yes" if entry.causal_safe else "NO (reads later tokens)",
            options,
        )
    return table


@app.command("list")
def list_variants() -> None:
    """List the registered variants, their papers, modes and options."""
    Console(width=200).print(variant_table())


# --- report (issue 7): redraw figures and pages from run directories' CSVs -------------------


@app.command("report")
@fail_cleanly
def report(
    run_dirs: Annotated[
        list[Path],
        typer.Argument(help="Run directories holding sweep.csv and/or accuracy.csv (and run.json)."),
    ],
    out: Annotated[
        Path | None,
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
    import reports  # here, so other commands do not pay for matplotlib's import

    written = reports.render(run_dirs, out, seq_len=seq_len)
    typer.echo(f"wrote {len(written)} files; open {next(p for p in written if p.name == 'index.html')}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
