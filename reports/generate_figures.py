"""Figures from generate.csv: attention's share of a decode step, time per output token, and each
variant's speedup over mha end to end beside its speedup on attention alone, against context.

Every function takes the combined generate table (load.combined adds the `run` column) and
returns a matplotlib Figure. Cells that did not run (unsupported: not causal-safe; oom; error)
are drawn as x marks at the bottom of their panel, never dropped.
"""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from .load import require, with_labels
from .style import colors, empty_note, figure_legend, mark_failures, panels, plain_log_x

GENERATE_COLUMNS = ("variant", "context", "status", "tpot_s", "attn_share", "attn_s", "share_step_s")
CONTEXT_AXIS = "context P (prompt tokens)"
# Rows compare with the reference's at the same cell of the same run.
SAME_CELL = (
    "run",
    "device",
    "dtype",
    "compile",
    "batch",
    "context",
    "new_tokens",
    "layers",
    "dim",
    "n_heads",
)


def with_speedup(df: pd.DataFrame, reference: str = "mha") -> pd.DataFrame:
    """`df` plus `speedup` (the reference's share_step_s over this row's: a whole decode step) and
    `attn_speedup` (the reference's attn_s over this row's: the attention calls alone). Both come
    from the share pass, so they are on one clock at one context (on one CPU thread that clock is
    CPU time, which a busy machine does not inflate; tpot_s is wall time)."""
    key = [c for c in SAME_CELL if c in df.columns]
    ref = df[(df["status"] == "ok") & (df["variant"] == reference) & (df["options"].fillna("") == "")]
    ref = ref.groupby(key, as_index=False).agg(_step=("share_step_s", "median"), _attn=("attn_s", "median"))
    out = df.merge(ref, on=key, how="left")
    out["speedup"] = out["_step"] / out["share_step_s"]
    out["attn_speedup"] = out["_attn"] / out["attn_s"]
    return out.drop(columns=["_step", "_attn"])


def _panel(ax, df: pd.DataFrame, column: str, palette: dict, *, scale: float = 1.0, style: str = "-",
           band: tuple[str, str] | None = None, failures: bool = True, suffix: str = "") -> None:  # fmt: skip
    """One line per series of `column` against context, failures marked."""
    failing = 0
    for label, group in df.groupby("label", sort=True):
        ok = group[(group["status"] == "ok") & group[column].notna()].sort_values("context")
        if not ok.empty:
            ax.plot(ok["context"], ok[column] / scale, style, marker="o", ms=4, color=palette[label],
                    label=label + suffix)  # fmt: skip
        if band and not ok.empty:
            ax.fill_between(ok["context"], ok[band[0]] / scale, ok[band[1]] / scale, color=palette[label],
                            alpha=0.18, linewidth=0)  # fmt: skip
        failed = group[group["status"] != "ok"]
        if failures and not failed.empty:
            mark_failures(ax, failed, "context", palette[label], failing, label)
            failing += 1
    plain_log_x(ax)
    ax.set_xticks(sorted(df["context"].unique()))
    ax.set_xlabel(CONTEXT_AXIS)
    ax.grid(True, which="both", alpha=0.25)


def generate_figure(generate: pd.DataFrame, reference: str = "mha") -> Figure:
    """Three panels against context: attn_share, tpot_s (p10-p90 band), speedups over `reference`."""
    require(generate, GENERATE_COLUMNS, "generate.csv (generate figure)")
    df = with_labels(with_speedup(generate, reference))
    palette = colors(df["label"])
    fig, (share, tpot, speed) = panels(3)
    _panel(share, df, "attn_share", palette)
    share.set_ylim(0, 1)
    share.set_ylabel("attention's share of a decode step")
    share.set_title("attn_share (timers around the attention calls)")
    _panel(tpot, df, "tpot_s", palette, scale=1e-3, band=("tpot_p10_s", "tpot_p90_s"))
    tpot.set_yscale("log")
    tpot.set_ylabel("time per output token, median (ms); band p10-p90")
    tpot.set_title("tpot_s")
    others = df[df["variant"] != reference]
    _panel(speed, others, "speedup", palette, failures=False, suffix=": end to end")
    _panel(speed, others, "attn_speedup", palette, style="--", failures=False, suffix=": attention alone")
    speed.axhline(1.0, color="grey", lw=0.8)
    speed.set_yscale("log")
    speed.set_ylabel(f"{reference} time / variant time")
    speed.set_title(f"speedup over {reference}: decode step (solid), attention calls (dashed)")
    for ax in (share, tpot, speed):
        if not ax.lines:
            empty_note(ax)
    figure_legend(fig, (share, tpot, speed))
    fig.suptitle("Each variant inside a decoder that generates, against context")
    return fig


def generate_table(generate: pd.DataFrame, reference: str = "mha") -> pd.DataFrame:
    """One row per series and context: tpot, tokens/s, ttft, attn_share and the two speedups as
    display strings; a cell that did not run shows its status."""
    df = with_labels(with_speedup(generate, reference)).sort_values(["label", "context"], kind="stable")
    rows = []
    for r in df.itertuples(index=False):
        ok = r.status == "ok"
        cells = [
            f"{r.tpot_s * 1e3:.3g}" if ok else r.status,
            _num(getattr(r, "tokens_per_s", None)) if ok else "",
            _num(getattr(r, "ttft_s", None)) if ok else "",
            _num(r.attn_share, 2) if ok else "",
            _num(r.speedup) + "×" if ok and pd.notna(r.speedup) else "",
            _num(r.attn_speedup) + "×" if ok and pd.notna(r.attn_speedup) else "",
        ]
        rows.append([r.label, r.context, *cells])
    columns = ["series", "context", "tpot (ms)", "tokens/s", "ttft (s)", "attn_share"]
    return pd.DataFrame(rows, columns=columns + [f"speedup vs {reference}", "attention alone"])


def _num(value, digits: int = 3) -> str:
    return "" if value is None or pd.isna(value) else f"{value:.{digits}g}"
