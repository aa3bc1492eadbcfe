"""Two runs cell by cell: B/A of the median latency, its bootstrap interval, a verdict.

`compare(a, b)` takes two sweep tables (as read from sweep.csv) and matches their cells on
the key columns both hold (KEY_COLUMNS, one list: a key column another change adds to
sweep.csv joins the key by being named there). Per matched cell:

- ratio: median(B) / median(A) of the stored per-call samples (`latency_ms_samples`), or of
  the rows' `latency_ms_median` where a run kept no samples. < 1: B is faster.
- ratio_p10, ratio_p90: the p10-p90 interval of that ratio, by a seeded bootstrap. The two
  runs' samples are not paired: they come from different processes at different times and
  usually in different numbers (min_time_s adds calls), so `check`'s per-round ratios (one
  interleaved round gives one A and one B time) do not exist here. Each resample draws A's
  and B's samples apart, with replacement, and takes the ratio of their medians; the interval
  is how well the ratio is known, and narrows as samples are added.
- verdict: reports.stats.decide, the very decision `attnbench check` makes, with B's samples as
  the new ones and A's as the baseline: slower iff median(B) > median(A) * (1 + threshold)
  AND a one-sided Mann-Whitney U of B against A * (1 + threshold) gives p < alpha; faster is
  the mirror image; otherwise same. `p_value` is that test's.
- peak_mem_ratio, flops_ratio: B/A where both runs recorded the figure and it differs.

What the test cannot see: drift between the two runs that moves every call of a run alike
(the machine was busier during B). The threshold is the budget for that, as check's tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .load import device_key
from .stats import decide, smallest_p

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
SAMPLES = "latency_ms_samples"
MEASURED = ("status", "latency_ms_median", SAMPLES, "peak_mem_bytes", "flops", "sdpa_backend")  # per run
THRESHOLD, ALPHA = 0.05, 0.01  # defaults of `attnbench compare` and of the multi-run report
RESAMPLES, SEED = 2000, 0
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

    def verdicts(self, verdict: str) -> pd.DataFrame:
        return self.cells[self.cells["verdict"] == verdict]

    @property
    def regressed(self) -> pd.DataFrame:
        """Cells significantly slower in B, or that ran in A and failed in B: what --fail-on-slower
        fails on (a cell that stopped running is worse than a slower one)."""
        broke = (self.cells["verdict"] == "not run") & (self.cells["status_a"] == "ok")
        return self.cells[(self.cells["verdict"] == "slower") | broke]


def compare(
    a: pd.DataFrame,
    b: pd.DataFrame,
    *,
    labels: tuple[str, str] = ("A", "B"),
    threshold: float = THRESHOLD,
    alpha: float = ALPHA,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> Comparison:
    """Run `b` against run `a` (two sweep tables); ValueError on bad settings or ambiguous keys."""
    if not 0 < threshold < 1 or not 0 < alpha < 1:
        raise ValueError(f"threshold={threshold} and alpha={alpha} must both be in (0, 1)")
    if resamples < 10:
        raise ValueError(f"resamples={resamples} must be >= 10")
    extra = (*MEASURED, *DEVICE_COLUMNS)  # a run from before `accelerator`: blank, as off Ray
    a, b = (df.reindex(columns=[*df.columns, *(c for c in extra if c not in df)]) for df in (a, b))
    key = [c for c in KEY_COLUMNS if c in a.columns and c in b.columns]
    for df in (a, b):
        df[key] = df[key].map(_text)
    one_device(a, b, labels)
    settings = {c: (a[c].iloc[0], b[c].iloc[0]) for c in key if c in SETTING_COLUMNS and _differs(a, b, c)}
    key = [c for c in key if c not in settings]
    settings |= _image_counts(a, b)
    for df, label in ((a, labels[0]), (b, labels[1])):
        _refuse_duplicates(df, key, label)
    merged = a.merge(b, on=key, how="outer", suffixes=("_a", "_b"), indicator=True)
    rows = [_cell(row, threshold, alpha, resamples, seed) for row in merged.to_dict("records")]
    cells = pd.concat([merged[key].reset_index(drop=True), pd.DataFrame(rows, columns=COMPARED)], axis=1)
    one_sided = {c: labels[c in b.columns] for c in KEY_COLUMNS if (c in a.columns) != (c in b.columns)}
    return Comparison(
        labels[0], labels[1], threshold, alpha, key, _sorted(cells), settings, _environment(a, b), one_sided
    )


COMPARED = [
    "median_a", "median_b", "n_a", "n_b", "ratio", "ratio_p10", "ratio_p90", "p_value", "verdict",
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


def _cell(row: dict, threshold: float, alpha: float, resamples: int, seed: int) -> dict:
    """The COMPARED fields of one outer-merged row."""
    side = row["_merge"]
    out = dict.fromkeys(COMPARED, np.nan) | dict(note="", status_a="", status_b="")
    if side != "both":
        return out | dict(verdict="only in A" if side == "left_only" else "only in B")
    out |= dict(status_a=str(row["status_a"]), status_b=str(row["status_b"]))
    out |= dict(median_a=row["latency_ms_median_a"], median_b=row["latency_ms_median_b"])
    out |= dict(peak_mem_ratio=_changed(row, "peak_mem_bytes"), flops_ratio=_changed(row, "flops"))
    if out["status_a"] != "ok" or out["status_b"] != "ok":
        return out | dict(verdict="not run", note=f"A {out['status_a']}, B {out['status_b']}")
    sa, sb = parse_samples(row.get(f"{SAMPLES}_a")), parse_samples(row.get(f"{SAMPLES}_b"))
    out |= dict(n_a=len(sa), n_b=len(sb), ratio=out["median_b"] / out["median_a"], note=_kernels(row))
    if min(len(sa), len(sb)) == 0 or smallest_p(len(sb), len(sa)) >= alpha:
        why = "no stored samples" if min(len(sa), len(sb)) == 0 else f"{len(sa)} and {len(sb)} samples"
        note = "; ".join(filter(None, [f"{why} cannot reach alpha={alpha}", out["note"]]))
        return out | dict(verdict="undecided", note=note)
    d = decide(sb.tolist(), sa.tolist(), tolerance=threshold, alpha=alpha)
    p10, p90 = bootstrap_ratio(sa, sb, resamples=resamples, seed=seed)
    verdict = {"REGRESSED": "slower", "improved": "faster"}.get(d.verdict, "same")
    return out | dict(
        ratio=d.median / d.baseline, ratio_p10=p10, ratio_p90=p90, p_value=d.p_value, verdict=verdict
    )


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


def parse_samples(raw: object) -> np.ndarray:
    """'0.51;0.49;...' (ms) -> array; blank or NaN -> empty."""
    if raw is None or (isinstance(raw, float) and np.isnan(raw)) or not str(raw).strip():
        return np.empty(0)
    try:
        return np.array([float(x) for x in str(raw).split(";") if x.strip()])
    except ValueError:
        raise ValueError(f"{SAMPLES} holds a non-number: {str(raw)[:80]!r}") from None


def bootstrap_ratio(
    a: np.ndarray, b: np.ndarray, *, resamples: int = RESAMPLES, seed: int = SEED
) -> tuple[float, float]:
    """p10 and p90 of median(B*) / median(A*) over `resamples` independent resamples of each.

    Seeded per call, so a cell's interval does not depend on which other cells are compared."""
    rng = np.random.default_rng(seed)
    ratio = _resampled_medians(b, resamples, rng) / _resampled_medians(a, resamples, rng)
    p10, p90 = np.quantile(ratio, [0.1, 0.9])
    return float(p10), float(p90)


def _resampled_medians(x: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Medians of `resamples` draws of len(x) with replacement, in blocks of ~4M values (a decode
    cell under min_time_s can hold thousands of samples)."""
    x = np.asarray(x, dtype=np.float64)
    block = max(1, 4_000_000 // len(x))
    parts = [
        np.median(x[rng.integers(0, len(x), (min(block, resamples - i), len(x)))], axis=1)
        for i in range(0, resamples, block)
    ]
    return np.concatenate(parts)


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
        f"B/A: median latency ratio (<1: B faster), p10-p90 by bootstrap; "
        f"slower/faster: beyond ±{comp.threshold:g} and Mann-Whitney U p < {comp.alpha:g}.",
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


def counts(comp: Comparison) -> str:
    """'1 slower, 1 faster, 30 same, 4 not run': the verdicts, in VERDICTS order."""
    verdicts = comp.cells["verdict"].value_counts()
    return ", ".join(f"{verdicts[v]} {v}" for v in VERDICTS if v in verdicts)


def table(comp: Comparison) -> pd.DataFrame:
    """The cells as display strings: cell, A and B medians, B/A, its interval, p, verdict, note;
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
