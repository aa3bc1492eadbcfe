"""Read and validate run directories: sweep.csv, accuracy.csv and run.json.

A run directory holds either CSV or both. Extra columns are tolerated (old and new runs must
both load); each figure asks only for the columns it needs through `require`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

SWEEP_CSV, ACCURACY_CSV, GENERATE_CSV, RUN_JSON = "sweep.csv", "accuracy.csv", "generate.csv", "run.json"
# Columns without which a file cannot be read as a sweep or accuracy table at all.
SWEEP_CORE = ("variant", "mode", "seq_len", "status", "latency_ms_median")
ACCURACY_CORE = ("task", "variant", "accuracy", "status")
GENERATE_CORE = ("variant", "context", "status", "tpot_s")
# Shape columns that may vary across a sweep; a series is named by the ones that do.
# A sweep gives multimodal variants m = visual_frac * n visual tokens, so m grows with n: a
# series is named by the fraction m/n (`visual_frac`, derived on load), not by m.
SHAPE_COLUMNS = ("batch", "dim", "n_heads", "n_kv_heads", "head_dim", "visual_frac", "dtype", "compile")
SHAPE_SYMBOLS = {"batch": "b", "dim": "d", "n_heads": "h", "n_kv_heads": "g", "head_dim": "e"}
SHAPE_SYMBOLS |= {
    "n_visual": "m",
    "visual_frac": "m/n",
    "dtype": "dtype",
    "init": "init",
    "compile": "compile",
    "threads": "threads",
}


@dataclass(frozen=True)
class Run:
    """One run directory: its label in legends, and whichever tables it holds."""

    path: Path
    label: str
    sweep: pd.DataFrame | None = None
    accuracy: pd.DataFrame | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    generate: pd.DataFrame | None = None


def require(df: pd.DataFrame, columns: tuple[str, ...] | list[str], what: str) -> None:
    """Raise ValueError naming the required columns `df` lacks."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} is missing required columns {missing}; it has {list(df.columns)}")


def format_options(raw: Any) -> str:
    """The options cell as 'k=v, k2=v2' ('' for none); JSON objects are unpacked, others kept."""
    if raw is None or (isinstance(raw, float) and pd.isna(raw)):
        return ""
    text = str(raw).strip()
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        return "" if text in ("{}", "-", "none", "None") else text
    if isinstance(parsed, dict):
        return ", ".join(f"{k}={v}" for k, v in parsed.items())
    return text


def _read_csv(path: Path, core: tuple[str, ...]) -> pd.DataFrame:
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path} is empty (no header, no rows)") from None
    if df.empty:
        raise ValueError(f"{path} has a header but no rows")
    require(df, core, str(path))
    df["status"] = df["status"].fillna("error").astype(str)
    df["options"] = df["options"].map(format_options) if "options" in df.columns else ""
    return df


def _with_visual_frac(df: pd.DataFrame) -> pd.DataFrame:
    """Add `visual_frac` = n_visual / seq_len (3 decimals) where the sweep recorded n_visual."""
    if {"n_visual", "seq_len"} <= set(df.columns):
        return df.assign(visual_frac=(df["n_visual"].fillna(0) / df["seq_len"]).round(3))
    return df


def _read_meta(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(meta).__name__}")
    return meta


def load_run(path: Path, label: str | None = None) -> Run:
    """Read one run directory; ValueError if it is not a directory or holds no CSV."""
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"run directory {path} does not exist or is not a directory")
    sweep_path, accuracy_path, generate_path = path / SWEEP_CSV, path / ACCURACY_CSV, path / GENERATE_CSV
    if not any(p.exists() for p in (sweep_path, accuracy_path, generate_path)):
        # generate.csv named last: the message older runs and their tests know stays a prefix
        raise ValueError(
            f"{path} holds no {SWEEP_CSV} or {ACCURACY_CSV} (or {GENERATE_CSV}); is it a run directory?"
        )
    label = label or path.resolve().name
    sweep = _with_visual_frac(_read_csv(sweep_path, SWEEP_CORE)) if sweep_path.exists() else None
    accuracy = _read_csv(accuracy_path, ACCURACY_CORE) if accuracy_path.exists() else None
    generate = _read_csv(generate_path, GENERATE_CORE) if generate_path.exists() else None
    return Run(path, label, sweep, accuracy, _read_meta(path / RUN_JSON), generate)


def unique_labels(paths: list[Path]) -> list[str]:
    """Directory names, widened with their parents where two runs share a name."""
    names = [p.resolve().name for p in paths]
    if len(set(names)) == len(names):
        return names
    labels = ["/".join(p.resolve().parts[-2:]) for p in paths]
    if len(set(labels)) == len(labels):
        return labels
    return [f"{name}#{i}" for i, name in enumerate(names)]


def load_runs(paths: list[Path]) -> list[Run]:
    """Read several run directories, labelled so legends can tell them apart."""
    if not paths:
        raise ValueError("no run directory given")
    return [load_run(p, label) for p, label in zip(paths, unique_labels(paths), strict=True)]


def device_key(df: pd.DataFrame) -> pd.Series:
    """The device each row ran on: its `device_name`, with ' [label]' where a Ray node carried an
    accelerator label (a stand-in for a GPU model, or the model as Ray names it). Latencies
    are only ever compared within one device."""
    names = df.reindex(columns=["device_name", "accelerator"]).astype(object).fillna("").astype(str)
    return names["device_name"] + names["accelerator"].map(lambda v: f" [{v}]" if v else "")


def by_device(runs: list[Run]) -> list[Run]:
    """Each run whose sweep spans several devices (a Ray cluster of mixed GPU models) as one run
    per device, labelled 'run · device', so no figure or table puts two devices in one series."""
    out = []
    for run in runs:
        keys = device_key(run.sweep) if run.sweep is not None else pd.Series(dtype=str)
        if keys.nunique() <= 1:
            out.append(run)
            continue
        for name in sorted(set(keys)):
            out.append(replace(run, label=f"{run.label} · {name}", sweep=run.sweep[keys == name]))
    return out


def combined(runs: list[Run], table: str) -> pd.DataFrame | None:
    """The runs' `table` ('sweep', 'accuracy' or 'generate') stacked, with a `run` column; None if
    none has it."""
    frames = [getattr(r, table).assign(run=r.label) for r in runs if getattr(r, table) is not None]
    return pd.concat(frames, ignore_index=True) if frames else None


def series_columns(
    df: pd.DataFrame, candidates: tuple[str, ...] = SHAPE_COLUMNS, run: bool = True
) -> list[str]:
    """The columns that name a series: variant, options, then any shape column (or run) that varies."""
    candidates = (*candidates, "run") if run else candidates
    varying = [c for c in candidates if c in df.columns and df[c].nunique(dropna=True) > 1]
    return ["variant", "options", *varying]


def series_label(key: dict[str, Any]) -> str:
    """'gqa(kind=ema) h=8 g=2 · run-a' from a series key."""
    label = str(key["variant"]) + (f"({key['options']})" if key.get("options") else "")
    # m/n=0 (text only) is every unimodal variant's case: not worth a word in the legend.
    shape = [
        f"{SHAPE_SYMBOLS.get(c, c)}={_fmt(v)}"
        for c, v in key.items()
        if c in SHAPE_SYMBOLS and not (c == "visual_frac" and v == 0)
    ]
    label = " ".join([label, *shape])
    return f"{label} · {key['run']}" if "run" in key else label


def _fmt(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def with_labels(
    df: pd.DataFrame, candidates: tuple[str, ...] = SHAPE_COLUMNS, run: bool = True
) -> pd.DataFrame:
    """A copy of `df` with a `label` column naming each row's series (and its run, if `run`)."""
    cols = series_columns(df, candidates, run)
    out = df.copy()
    out["label"] = [series_label(dict(zip(cols, row, strict=True))) for row in df[cols].itertuples(False)]
    if {"kv_heads_equiv", "n_kv_heads"} <= set(df.columns):
        # A variant whose g means nothing (mla) names its cache as GQA heads instead of g.
        latent = df["kv_heads_equiv"].notna() & (df["kv_heads_equiv"] != df["n_kv_heads"])
        picked = df.loc[latent, ["n_kv_heads", "kv_heads_equiv"]].itertuples(index=False)
        labels = out.loc[latent, "label"]
        out.loc[latent, "label"] = [
            cache_label(lab, g, x) for lab, (g, x) in zip(labels, picked, strict=True)
        ]
    return out


def cache_label(label: str, n_kv_heads: Any, kv_heads_equiv: float) -> str:
    """'mla h=8 g=8' -> 'mla h=8 (≡2.25 KV heads)'; without a g part the tag follows the name."""
    tag = f"(≡{kv_heads_equiv:.3g} KV heads)"
    g_part = f" g={_fmt(n_kv_heads)}"
    if g_part in label:
        return label.replace(g_part, f" {tag}", 1)
    head, _, rest = label.partition(" ")
    return " ".join(part for part in (head, tag, rest) if part)
