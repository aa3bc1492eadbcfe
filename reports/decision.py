"""The decision page: decision.csv (written by `attnbench decide`) as a Markdown table, an HTML
section and a figure. Reads only the CSV: reports/ never imports harness.

The figure puts each design at (cache bytes per token, decode latency), its p10-p90 as error
bars, accuracy as colour (hollow: no accuracy), the Pareto front as a line through the designs
on it, and dominated designs greyed; every point carries its name.
"""

from __future__ import annotations

import html
import math
import re
from pathlib import Path

import matplotlib
import matplotlib.ticker
import pandas as pd
from matplotlib.figure import Figure

from .page import CSS, markdown_table

DOMINATED = "#b0b0b0"
DPI = 150


def load(path: Path) -> pd.DataFrame:
    """decision.csv; ValueError naming the file if it cannot be read."""
    try:
        return pd.read_csv(path, keep_default_na=True)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read {path}: {err}") from None


def _num(value: object, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "missing"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def _spread(row: pd.Series, col: str) -> str:
    if pd.isna(row.get(col)):
        return "missing"
    return f"{_num(row[col])} [{_num(row.get(col + '_p10'))}–{_num(row.get(col + '_p90'))}]"


def _accuracy(row: pd.Series, task: str) -> str:
    col = f"acc_{task}"
    if pd.isna(row.get(col)):
        return "missing"
    std = row.get(col + "_std")
    spread = "" if pd.isna(std) else f" ± {std:.3f}"
    return f"{row[col]:.3f}{spread} (n={int(row[col + '_n'])})"


def tasks(df: pd.DataFrame) -> list[str]:
    """The accuracy tasks present: acc_<task> columns (not _std, _n)."""
    return [c[4:] for c in df.columns if re.fullmatch(r"acc_\w+", c) and not re.search(r"_(std|n)$", c)]


def readable(df: pd.DataFrame) -> pd.DataFrame:
    """The table people read: spreads as [p10–p90], accuracy as mean ± std (n), missing spelled out."""
    cache = [c for c in df.columns if c.startswith(("kv_bytes_per_token_tp", "requests_fit_tp"))]
    out = df[["design", *cache]].astype(object).where(df[["design", *cache]].notna(), "missing")
    out["decode ms [p10–p90]"] = [_spread(r, "decode_ms") for _, r in df.iterrows()]
    out["decode tok/s"] = [_spread(r, "decode_tokens_per_s") for _, r in df.iterrows()]
    out["FLOP/byte (ridge)"] = [
        f"{_num(r.get('decode_intensity'))} ({_num(r.get('ridge_point'))})" for _, r in df.iterrows()
    ]
    out["prefill ms [p10–p90]"] = [_spread(r, "prefill_ms") for _, r in df.iterrows()]
    out["prefill TFLOP/s"] = [_spread(r, "prefill_tflops") for _, r in df.iterrows()]
    for task in tasks(df):
        out[task] = [_accuracy(r, task) for _, r in df.iterrows()]
    for col in ("causal_safe", "pareto", "dominated_by"):
        out[col] = df[col].fillna("")
    sources = ("decode_source", "prefill_source", "accuracy_source")
    out["source"] = [
        "; ".join(f"{s.split('_')[0]}: {r[s]}" for s in sources if s in df.columns and pd.notna(r[s]))
        for _, r in df.iterrows()
    ]
    return out


def figure(df: pd.DataFrame) -> Figure:
    """Cache bytes per token (TP=1) against decode latency; accuracy as colour; the front drawn."""
    fig = Figure(figsize=(7.5, 5.2), layout="constrained")
    ax = fig.add_subplot()
    placed = df.dropna(subset=["kv_bytes_per_token_tp1", "decode_ms"])
    cmap, acc = matplotlib.colormaps["viridis"], placed.get("accuracy", pd.Series(dtype=float))
    lo, hi = (acc.min(), acc.max()) if acc.notna().any() else (0.0, 1.0)
    norm = matplotlib.colors.Normalize(lo, hi if hi > lo else lo + 1e-9)
    for _, r in placed.iterrows():
        on_front = bool(r["pareto"])
        has_acc = pd.notna(r.get("accuracy"))
        color = cmap(norm(r["accuracy"])) if on_front and has_acc else DOMINATED
        yerr = [[r["decode_ms"] - r["decode_ms_p10"]], [r["decode_ms_p90"] - r["decode_ms"]]]
        ax.errorbar(r["kv_bytes_per_token_tp1"], r["decode_ms"], yerr=yerr, fmt="none", ecolor=color, lw=1)
        xy = (r["kv_bytes_per_token_tp1"], r["decode_ms"])
        edge = "black" if on_front else DOMINATED
        ax.scatter(
            *xy, s=90, zorder=3, linewidths=1.5, facecolors=color if has_acc else "white", edgecolors=edge
        )
        text_color = "black" if on_front else "#777777"
        ax.annotate(r["design"], xy, xytext=(6, 5), textcoords="offset points", fontsize=8, color=text_color)
    front = placed[placed["pareto"].astype(bool)].sort_values("kv_bytes_per_token_tp1")
    ax.plot(front["kv_bytes_per_token_tp1"], front["decode_ms"], "--", color="black", lw=0.8, zorder=2,
            label="Pareto front (all objectives)")  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")  # one noisy p90 (a loaded machine) must not flatten every other point
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("KV cache bytes per token, one layer, TP=1")
    ax.set_ylabel("decode latency, ms (median, p10–p90; log)")
    missing = sorted(set(df["design"]) - set(placed["design"]))
    title = "Which attention to ship: cache against decode latency"
    ax.set_title(title + (f"\nnot placed (missing cache or decode): {', '.join(missing)}" if missing else ""),
                 fontsize=10)  # fmt: skip
    ax.legend(loc="best", fontsize=8, title="grey: dominated; hollow: no accuracy", title_fontsize=8)
    if acc.notna().any():
        fig.colorbar(
            matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="accuracy (mean over tasks)"
        )
    return fig


CAPTION = (
    "One row per design. Cache bytes are the registry's, per layer and token, per device at each "
    "tensor-parallel degree; latency is the median with its p10–p90 at the one shape every design ran; "
    "accuracy is the mean ± std over seeds. A design dominates another only where their p10–p90 "
    "intervals do not overlap; missing numbers are never imputed. The source column names each run."
)


def section_html(df: pd.DataFrame, figure_name: str = "decision") -> str:
    """The HTML section: figure first, then the table."""
    table = readable(df).to_html(index=False, escape=True, border=0, na_rep="missing")
    return (
        f'<h2 id="decision">Which attention to ship</h2><figure><img src="{figure_name}.png" '
        f'alt="cache against decode latency"></figure><p class="muted">{html.escape(CAPTION)}</p>{table}'
    )


def write(out: Path) -> list[Path]:
    """decision.md, decision.png/.svg and index.html beside out/decision.csv."""
    df = load(out / "decision.csv")
    fig = figure(df)
    paths = [out / "decision.png", out / "decision.svg"]
    for path in paths:
        fig.savefig(path, dpi=DPI, bbox_inches="tight")
    md = f"## Which attention to ship\n\n{CAPTION}\n\n![decision](decision.png)\n\n"
    md += markdown_table(readable(df)) + "\n"
    (out / "decision.md").write_text(md, encoding="utf-8")
    page = "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>attnbench decide</title>"
    page += f"<style>{CSS}</style></head><body><h1>attnbench decide</h1>{section_html(df)}</body></html>\n"
    (out / "index.html").write_text(page, encoding="utf-8")
    return [out / "decision.csv", out / "decision.md", *paths, out / "index.html"]
