"""Two runs (or two sets of runs) cell by cell: B/A of the median latency and a verdict.

`compare(a, b)` takes two sweep tables (as read from sweep.csv), or two lists of them (several
runs per side), and matches their cells on the key columns both hold (KEY_COLUMNS, one list: a
key column another change adds to sweep.csv joins the key by being named there). Per matched
cell:

- ratio: B/A of the geometric mean of each side's run medians (`latency_ms_median`); with one
  run per side, median(B) / median(A). < 1: B is faster.
- verdict, p_value, ratio_p10, ratio_p90: reports/run_drift.py. The run is the unit of drift:
  each run gives one median per cell, never its calls pooled with another run's. With one run
  per side the drift cannot be estimated and the verdict is the threshold alone (no p, no
  interval); with several, a t-test against the between-run spread of log run medians pooled
  over the cells compared.
- peak_mem_ratio, flops_ratio: B/A where both runs recorded the figure and it differs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .load import device_key
from .run_drift import Drift, judge, pooled_drift

# The device a latency belongs to: its model, and the Ray accelerator label of its node (blank
# off Ray). Latencies are never compared across them: they are part of every cell's key (a run
# spread over several GPU models is compared model by model), and two runs with no device in
# common are refused (`one_device`).
DEVICE_COLUMNS = ("device_name", "accelerator")
# Columns that name a cell. Extend this one list when sweep.csv gains a key column.
KEY_COLUMNS = (
    "variant", "options", "mode", "batch", "seq_len", "n_visual", "dim", "n_heads", "n_kv_heads",
    "head_dim", "dtype", "device", "backend", "compile", "layout", *DEVICE_COLUMNS,
)  # fmt: skip
# Key columns two runs may be compared across: when one holds a single value in each run and
# the values differ (a float32 run against a bfloat16 one, compile off against on, cpu against
# cuda), it leaves the key and the header names it. Shape columns never do: n=128 in A and
# n=256 in B are different cells, listed as in one run only.
SETTING_COLUMNS = ("device", "dtype", "backend", "compile", "layout")
# The machine and software: a difference is one line of the header, the ratios are still shown.
ENV_COLUMNS = ("torch_version", "threads")
MEASURED = ("status", "latency_ms_median", "peak_mem_bytes", "flops", "sdpa_backend")  # per run
THRESHOLD, ALPHA = 0.05, 0.01  # defaults of `attnbench compare` and of the multi-run report
VERDICTS = ("slower", "faster", "same", "undecided", "not run", "only in A", "only in B")


@dataclass(frozen=True)
class Comparison:
    """Run B against run A: one row per cell in `cells` (matched or in one run only)."""

    a: str  # labels of the runs
    b: str
    threshold: float
    alpha: float
    key: list[str]  # the columns cells were matched on
    cells: pd.DataFrame  # key columns, then the COMPARED columns
    settings: dict[str, tuple[str, str]] = field(default_factory=dict)  # key columns compared across
    environment: dict[str, tuple[str, str]] = field(default_factory=dict)  # ENV_COLUMNS that differ
    one_sided: dict[str, str] = field(default_factory=dict)  # key column -> the run that alone has it
    drift: Drift = Drift(float("nan"), 0)  # between-run spread of log run medians (df 0: one run a side)
    runs: tuple[int, int] = (1, 1)  # runs on each side

    def verdicts(self, verdict: str) -> pd.DataFrame:
        return self.cells[self.cells["verdict"] == verdict]

    @property
    def regressed(self) -> pd.DataFrame:
        """Cells significantly slower in B, or that ran in A and failed in B: what --fail-on-slower
        fails on (a cell that stopped running is worse than a slower one)."""
        broke = (self.cells["verdict"] == "not run") & (self.cells["status_a"] == "ok")
        return self.cells[(self.cells["verdict"] == "slower") | broke]


def compare(
    a: pd.DataFrame | Sequence[pd.DataFrame],
    b: pd.DataFrame | Sequence[pd.DataFrame],
    *,
    labels: tuple[str, str] = ("A", "B"),
    threshold: float = THRESHOLD,
    alpha: float = ALPHA,
) -> Comparison:
    """Runs `b` against runs `a` (a sweep table, or a list of them per side); ValueError on bad
    settings or ambiguous keys."""
    if not 0 < threshold < 1 or not 0 < alpha < 1:
        raise ValueError(f"threshold={threshold} and alpha={alpha} must both be in (0, 1)")
    sides = [_runs(side) for side in (a, b)]
    key = [c for c in KEY_COLUMNS if all(c in df.columns for side in sides for df in side)]
    a, b = (pd.concat(side, ignore_index=True) for side in sides)
    for df in (a, b):
        df[key] = df[key].map(_text)
    one_device(a, b, labels)
    settings = {c: (a[c].iloc[0], b[c].iloc[0]) for c in key if c in SETTING_COLUMNS and _differs(a, b, c)}
    key = [c for c in key if c not in settings]
    settings |= _image_counts(a, b)
    for df, label in ((a, labels[0]), (b, labels[1])):
        _refuse_duplicates(df, [*key, RUN], label)
    merged = _per_side(a, key).merge(
        _per_side(b, key), on=key, how="outer", suffixes=("_a", "_b"), indicator=True
    )
    records = merged.to_dict("records")
    drift = pooled_drift([(r["medians_a"], r["medians_b"]) for r in records if _both_ran(r)])
    rows = [_cell(row, drift, threshold, alpha) for row in records]
    cells = pd.concat([merged[key].reset_index(drop=True), pd.DataFrame(rows, columns=COMPARED)], axis=1)
    has = [{c for df in side for c in df.columns} for side in sides]
    one_sided = {c: labels[c in has[1]] for c in KEY_COLUMNS if (c in has[0]) != (c in has[1])}
    runs = (len(sides[0]), len(sides[1]))
    return Comparison(
        labels[0], labels[1], threshold, alpha, key, _sorted(cells), settings, _environment(a, b), one_sided,
        drift, runs,
    )  # fmt: skip


RUN = "_run"  # the run's index within its side, while the runs of a side are stacked


def _runs(side: pd.DataFrame | Sequence[pd.DataFrame]) -> list[pd.DataFrame]:
    """A side's runs, each with the MEASURED columns (blank where a run lacks them) and RUN."""
    frames = [side] if isinstance(side, pd.DataFrame) else list(side)
    if not frames:
        raise ValueError("a side of the comparison holds no run")
    extra = (*MEASURED, *DEVICE_COLUMNS)  # a run from before `accelerator`: blank, as off Ray
    return [
        df.reindex(columns=[*df.columns, *(c for c in extra if c not in df)]).assign(**{RUN: i})
        for i, df in enumerate(frames)
    ]


def _per_side(df: pd.DataFrame, key: list[str]) -> pd.DataFrame:
    """One row per cell of a side: its status (ok only if it ran in every run of the side), the
    ok runs' medians, and the first run's memory, FLOPs and SDPA kernel."""
    grouped = df.groupby(key, sort=False, dropna=False)
    out = grouped.agg(
        status=("status", _side_status), peak_mem_bytes=("peak_mem_bytes", "first"),
        flops=("flops", "first"), sdpa_backend=("sdpa_backend", "first"),
    )  # fmt: skip
    ok = df[(df["status"].astype(str) == "ok") & df["latency_ms_median"].notna()]
    medians = ok.groupby(key, sort=False, dropna=False)["latency_ms_median"].agg(list)
    out["medians"] = medians.reindex(out.index).map(lambda m: m if isinstance(m, list) else [])
    return out.reset_index()


def _side_status(statuses: pd.Series) -> str:
    """ok if the cell ran in every run of the side, else the first other status."""
    return next((str(s) for s in statuses if str(s) != "ok"), "ok")


def _both_ran(row: dict) -> bool:
    return row["_merge"] == "both" and bool(row["medians_a"]) and bool(row["medians_b"])


COMPARED = [
    "median_a", "median_b", "runs_a", "runs_b", "ratio", "ratio_p10", "ratio_p90", "p_value", "verdict",
    "note", "status_a", "status_b", "peak_mem_ratio", "flops_ratio",
]  # fmt: skip


def _text(value: object) -> str:
    """A key value as text, so 128 and 128.0 (an int column widened by a blank) match; NaN is ''."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def one_device(a: pd.DataFrame, b: pd.DataFrame, labels: tuple[str, str]) -> None:
    """ValueError, one line naming both, when runs A and B share no device: latencies of two
    GPU models (or CPU models) are never compared."""
    da, db = sorted(set(device_key(a))), sorted(set(device_key(b)))
    if da and db and not set(da) & set(db):
        raise ValueError(
            f"run {labels[0]} ran on {' + '.join(da)!r} and run {labels[1]} on {' + '.join(db)!r}: "
            "latencies are not compared across devices"
        )


def _differs(a: pd.DataFrame, b: pd.DataFrame, column: str) -> bool:
    return a[column].nunique() == 1 and b[column].nunique() == 1 and a[column].iloc[0] != b[column].iloc[0]


def _image_counts(a: pd.DataFrame, b: pd.DataFrame) -> dict[str, tuple[str, str]]:
    """`n_images` is not matched on: cells are compared across the layout (one image first
    against K interleaved), as across any setting. A difference in the multimodal rows' image
    counts is still named in the header; unimodal rows hold 0 and say nothing of it, and a run
    with no multimodal row has no count to compare."""
    if "n_images" not in a or "n_images" not in b:
        return {}
    counts = [",".join(sorted(set(df["n_images"].map(_text)) - {"0", ""})) for df in (a, b)]
    return {"n_images": (counts[0], counts[1])} if all(counts) and counts[0] != counts[1] else {}


def _refuse_duplicates(df: pd.DataFrame, key: list[str], label: str) -> None:
    """Two rows of one run under one key cannot be matched: name the columns that tell them apart."""
    dup = df[df.duplicated(key, keep=False)]
    if dup.empty:
        return
    first = dup[dup[key].eq(dup[key].iloc[0]).all(axis=1)]
    apart = [c for c in first.columns if first[c].astype(str).nunique() > 1 and c not in key]
    where = ", ".join(f"{c}={first[c].iloc[0]}" for c in key)
    raise ValueError(
        f"run {label} has {len(dup)} rows sharing a cell key ({where}); they differ in {apart[:6]}; "
        "add the column that names the cell to reports.comparison.KEY_COLUMNS"
    )


def _cell(row: dict, drift: Drift, threshold: float, alpha: float) -> dict:
    """The COMPARED fields of one outer-merged row."""
    side = row["_merge"]
    out = dict.fromkeys(COMPARED, np.nan) | dict(note="", status_a="", status_b="")
    if side != "both":
        return out | dict(verdict="only in A" if side == "left_only" else "only in B")
    out |= dict(status_a=str(row["status_a"]), status_b=str(row["status_b"]))
    out |= dict(peak_mem_ratio=_changed(row, "peak_mem_bytes"), flops_ratio=_changed(row, "flops"))
    if out["status_a"] != "ok" or out["status_b"] != "ok":
        return out | dict(verdict="not run", note=f"A {out['status_a']}, B {out['status_b']}")
    ma, mb = row["medians_a"], row["medians_b"]
    out |= dict(runs_a=len(ma), runs_b=len(mb), note=_kernels(row))
    if not ma or not mb:
        return out | dict(verdict="undecided", note="; ".join(filter(None, ["no median", out["note"]])))
    v = judge(ma, mb, drift, threshold=threshold, alpha=alpha)
    median_a, median_b = _geomean(ma), _geomean(mb)
    return out | dict(
        median_a=median_a, median_b=median_b, ratio=v.ratio, ratio_p10=v.p10, ratio_p90=v.p90,
        p_value=v.p_value, verdict=v.verdict,
    )  # fmt: skip


def _geomean(values: list[float]) -> float:
    return float(np.exp(np.mean(np.log(values))))


def _kernels(row: dict) -> str:
    """'SDPA kernel flash_cpu vs math' where the runs recorded different kernels for the cell: the
    ratio then compares kernels as much as code (as the speedup table's star says)."""
    a, b = (row.get(f"sdpa_backend_{side}") for side in ("a", "b"))
    if pd.isna(a) or pd.isna(b) or str(a) == str(b):
        return ""
    return f"SDPA kernel {a} vs {b}"


def _changed(row: dict, column: str) -> float:
    """B/A of `column` where both runs recorded it and it differs; NaN otherwise."""
    a, b = row.get(f"{column}_a"), row.get(f"{column}_b")
    if a is None or b is None or pd.isna(a) or pd.isna(b) or a == b or a == 0:
        return np.nan
    return float(b) / float(a)


def _sorted(cells: pd.DataFrame) -> pd.DataFrame:
    """Biggest change first (|log ratio|, so 2x slower and 2x faster rank alike); rows with no ratio
    (not run in one or both, in one run only) after, by verdict."""
    size = np.abs(np.log(cells["ratio"].astype(float)))
    rank = cells["verdict"].map({v: i for i, v in enumerate(VERDICTS)})
    order = pd.DataFrame({"nan": size.isna(), "size": -size.fillna(0), "rank": rank})
    return cells.loc[order.sort_values(["nan", "size", "rank"], kind="stable").index].reset_index(drop=True)


def _environment(a: pd.DataFrame, b: pd.DataFrame) -> dict[str, tuple[str, str]]:
    """ENV_COLUMNS whose values differ between the runs: column -> (A's, B's), values joined by '/'."""
    out = {}
    for column in (c for c in ENV_COLUMNS if c in a.columns and c in b.columns):
        va, vb = ("/".join(sorted({_text(v) for v in df[column].dropna()})) for df in (a, b))
        if va != vb:
            out[column] = (va, vb)
    return out


# --- display: the same table for the terminal, index.html and summary.md -----------------------


def header(comp: Comparison) -> list[str]:
    """The lines above the table: what A and B are, the rule, and what differs besides the code."""
    lines = [
        f"A = {comp.a}, B = {comp.b}.",
        _rule(comp),
    ]
    if comp.settings:
        across = "; ".join(f"{c} {a} vs {b}" for c, (a, b) in comp.settings.items())
        lines.append(f"compared across runs (not matched on): {across}.")
    if comp.environment:
        env = "; ".join(f"{c} {a} vs {b}" for c, (a, b) in comp.environment.items())
        lines.append(f"environments differ: {env}; the ratios include that, not only the code.")
    if comp.one_sided:
        only = ", ".join(f"{c} (only {run})" for c, run in comp.one_sided.items())
        lines.append(f"key columns in one run only, not matched on: {only}.")
    return lines


def _rule(comp: Comparison) -> str:
    """How the verdicts were reached: by the threshold alone with one run per side, else by a
    t-test against the between-run spread."""
    if comp.drift.df == 0:
        return (
            f"B/A: median latency ratio (<1: B faster). One run per side: the drift between runs "
            f"cannot be estimated, so slower/faster is B/A beyond ±{comp.threshold:g} alone (no p, no "
            f"interval); give several runs a side to test against it."
        )
    runs_a, runs_b = comp.runs
    return (
        f"B/A: ratio of the geometric means of each run's median latency ({runs_a} vs {runs_b} runs; "
        f"<1: B faster); "
        f"p10-p90 and p: t-test against the between-run spread of log medians (sd {comp.drift.sd:.3g}, "
        f"df {comp.drift.df}, pooled over the cells); slower/faster: beyond ±{comp.threshold:g} and "
        f"p < {comp.alpha:g}."
    )


def counts(comp: Comparison) -> str:
    """'1 slower, 1 faster, 30 same, 4 not run': the verdicts, in VERDICTS order."""
    verdicts = comp.cells["verdict"].value_counts()
    return ", ".join(f"{verdicts[v]} {v}" for v in VERDICTS if v in verdicts)


def table(comp: Comparison) -> pd.DataFrame:
    """The cells as display strings: cell, A and B medians, B/A, its interval and p (several runs a
    side), verdict, note;
    peak memory and FLOPs B/A only if some cell's differ; key values shared by all cells left out."""
    cells = comp.cells
    out = pd.DataFrame({"cell": labels(comp)})
    out["A ms"], out["B ms"] = cells["median_a"].map(_num), cells["median_b"].map(_num)
    out["B/A"] = cells["ratio"].map(lambda r: _num(r) + "×" if pd.notna(r) else "")
    out["p10-p90"] = [
        f"{_num(lo)}-{_num(hi)}" if pd.notna(lo) else ""
        for lo, hi in zip(cells["ratio_p10"], cells["ratio_p90"], strict=True)
    ]
    out["p"] = cells["p_value"].map(lambda p: "" if pd.isna(p) else f"{p:.2g}")
    out["verdict"], out["note"] = cells["verdict"], cells["note"]
    for column, title in (("peak_mem_ratio", "peak mem B/A"), ("flops_ratio", "FLOPs B/A")):
        if cells[column].notna().any():
            out[title] = cells[column].map(lambda r: _num(r) + "×" if pd.notna(r) else "")
    if not out["note"].astype(bool).any():
        out = out.drop(columns="note")
    if comp.drift.df == 0:  # one run a side: no interval, no p (the header says why)
        out = out.drop(columns=["p10-p90", "p"])
    return out


def common(comp: Comparison) -> str:
    """'b=2 d=512 e=64 dtype=float32 device=cpu': the key values every cell shares (left out of labels)."""
    shared = [
        c for c in comp.key if c not in _varying(comp.cells, comp.key) and c not in ("variant", "options")
    ]
    return " ".join(f"{_symbol(c)}={comp.cells[c].iloc[0]}" for c in shared if comp.cells[c].iloc[0] != "")


def labels(comp: Comparison) -> pd.Series:
    """cell_labels of every cell of `comp`, indexed as `comp.cells` (select rows after, not before:
    which key columns vary is a property of the whole comparison)."""
    return pd.Series(cell_labels(comp.cells, comp.key), index=comp.cells.index)


def cell_labels(cells: pd.DataFrame, key: list[str]) -> list[str]:
    """'gqa(kind=ema) fwd n=128 g=2' per row: variant, options, then the key columns that vary."""
    varying = [c for c in _varying(cells, key) if c not in ("variant", "options")]
    labels = []
    for row in cells.to_dict("records"):
        name = row["variant"] + (f"({row['options']})" if row.get("options") else "")
        parts = [row[c] if c == "mode" else f"{_symbol(c)}={row[c]}" for c in varying]
        labels.append(" ".join([name, *parts]))
    return labels


def _varying(cells: pd.DataFrame, key: list[str]) -> list[str]:
    return [c for c in key if cells[c].nunique() > 1]


SYMBOLS = {"batch": "b", "seq_len": "n", "n_visual": "m", "dim": "d", "n_heads": "h", "n_kv_heads": "g"}
SYMBOLS |= {"head_dim": "e"}


def _symbol(column: str) -> str:
    return SYMBOLS.get(column, column)


def _num(value: object) -> str:
    """3 significant digits, but 1810 rather than 1.81e+03."""
    if pd.isna(value):
        return ""
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.3g}"
