"""The decision table: one row per design (variant, options, h, g, d) from sweep and accuracy rows.

Timing comes from one shape per mode that every design with rows in that mode ran (the largest
such n), so no design is compared at a shape another never ran. Cache bytes come from the
registry (its replication rule per tensor-parallel degree). Every group of numbers names the run
it came from; a missing measurement stays empty.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch

import attn_variants as av

from ..variant_choice import parse_one
from .config import DecideConfig
from .pareto import Objective

# Older runs lack some columns: they read as missing.
OPTIONAL = [
    "backend",
    "compile",
    "flops_effective",
    "bytes_moved",
    "device_name",
    "dtype",
    "dim",
    "latency_ms_p10",
    "latency_ms_p90",
]
DESIGN = ["variant", "options", "n_heads", "n_kv_heads", "dim"]
SHAPE = ["batch", "seq_len", "dtype", "device_name"]
# The p10-p90 intervals of pareto.py: decode and prefill latency from the timed samples,
# accuracy from the per-seed means over the tasks every design ran.
OBJECTIVES = {
    "cache": Objective("cache", "kv_bytes_per_token_tp1", "min"),
    "decode": Objective("decode", "decode_ms", "min", "decode_ms_p10", "decode_ms_p90"),
    "prefill": Objective("prefill", "prefill_ms", "min", "prefill_ms_p10", "prefill_ms_p90"),
    "accuracy": Objective("accuracy", "accuracy", "max", "accuracy_p10", "accuracy_p90"),
}


def design_label(key: Mapping) -> str:
    """'gqa g=2', 'mla', 'gqa[backend=eager] g=2': the variant, its options, and g where it has one."""
    options = f"[{key['options']}]" if key["options"] else ""
    g = f" g={int(key['n_kv_heads'])}" if av.info(key["variant"]).uses_kv_heads else ""
    return f"{key['variant']}{options}{g}"


def sweep_rows(sweep: pd.DataFrame | None, variants: tuple[str, ...]) -> pd.DataFrame:
    """The ok, uncompiled, sdpa-backend rows of the chosen variants (other kernels are other runs)."""
    if sweep is None or sweep.empty:
        return pd.DataFrame(columns=[*DESIGN, *SHAPE, "mode", "source"])
    sweep = sweep.reindex(columns=[*sweep.columns, *(c for c in OPTIONAL if c not in sweep.columns)])
    # NaN never equals NaN in a shape; runs from before the kernel and compile axes ran sdpa, eager.
    sweep = sweep.assign(device_name=sweep["device_name"].fillna(""), backend=sweep["backend"].fillna("sdpa"))
    sweep = sweep.assign(compile=sweep["compile"].fillna("off"))
    ok = sweep[(sweep["status"] == "ok") & (sweep["compile"] == "off") & (sweep["backend"] == "sdpa")]
    return ok if "all" in variants else ok[ok["variant"].isin(variants)]


def common_shape(rows: pd.DataFrame, mode: str) -> dict | None:
    """The largest (n, b) shape of `mode` that every design with rows in that mode ran."""
    moded = rows[rows["mode"] == mode]
    if moded.empty:
        return None
    per_design = [set(map(tuple, g[SHAPE].values)) for _, g in moded.groupby(DESIGN, dropna=False)]
    shared = set.intersection(*per_design)
    if not shared:
        return None
    best = max(shared, key=lambda s: (s[1], s[0]))
    return dict(zip(SHAPE, best, strict=True))


def timing_columns(rows: pd.DataFrame, mode: str, shape: dict | None) -> pd.DataFrame:
    """Per design: latency median/p10/p90 at `shape`, throughput and its spread, the source run."""
    prefix = "decode" if mode == "decode" else "prefill"
    if shape is None:
        return pd.DataFrame(columns=DESIGN)
    at = rows[(rows["mode"] == mode)]
    for k, v in shape.items():
        at = at[at[k] == v]
    at = at.drop_duplicates(DESIGN, keep="first")  # the first run given wins where two measured it
    ms, p10, p90 = at["latency_ms_median"], at["latency_ms_p10"], at["latency_ms_p90"]
    out = at[DESIGN].assign(**{
        f"{prefix}_seq_len": at["seq_len"], f"{prefix}_batch": at["batch"],
        f"{prefix}_ms": ms, f"{prefix}_ms_p10": p10, f"{prefix}_ms_p90": p90,
    })  # fmt: skip
    if mode == "decode":  # one new token per sequence per step
        tokens = at["batch"] * 1e3
        out = out.assign(decode_tokens_per_s=tokens / ms, decode_tokens_per_s_p10=tokens / p90,
                         decode_tokens_per_s_p90=tokens / p10,
                         decode_intensity=at["flops_effective"] / at["bytes_moved"])  # fmt: skip
    else:
        work = at["flops_effective"] / 1e9  # FLOPs per ms -> TFLOP/s
        out = out.assign(
            prefill_tflops=work / ms, prefill_tflops_p10=work / p90, prefill_tflops_p90=work / p10
        )
    return out.assign(**{f"{prefix}_source": at["source"]})


def accuracy_columns(accuracy: pd.DataFrame | None, variants: tuple[str, ...]) -> pd.DataFrame:
    """Per design: each task's mean, std and n over seeds; the overall accuracy (mean over the
    tasks every design ran) with the p10-p90 of its per-seed values; the source run(s)."""
    if accuracy is None or accuracy.empty:
        return pd.DataFrame(columns=DESIGN)
    accuracy = accuracy.reindex(
        columns=[*accuracy.columns, *(c for c in DESIGN if c not in accuracy.columns)]
    )
    ok = accuracy[(accuracy["status"] == "ok") & (accuracy.get("ablate", "none") == "none")]
    ok = ok.assign(init=ok.get("init", "scratch"))  # runs from before uptraining trained from scratch
    ok = ok if "all" in variants else ok[ok["variant"].isin(variants)]
    ok = ok.assign(task=np.where(ok["init"] == "scratch", ok["task"], ok["task"] + "_" + ok["init"]))
    ok = ok.drop_duplicates([*DESIGN, "task", "seed"], keep="first")
    stats = ok.groupby([*DESIGN, "task"], dropna=False)["accuracy"].agg(["mean", "std", "count"])
    wide = stats.unstack("task")
    wide.columns = [f"acc_{task}" + {"mean": "", "std": "_std", "count": "_n"}[s] for s, task in wide.columns]
    shared = set.intersection(*(set(g["task"]) for _, g in ok.groupby(DESIGN, dropna=False)))
    per_seed = ok[ok["task"].isin(shared)].groupby([*DESIGN, "seed"], dropna=False)["accuracy"].mean()
    overall = per_seed.groupby(level=DESIGN, dropna=False).agg(
        accuracy="mean", accuracy_n="count",
        accuracy_p10=lambda s: s.quantile(0.1) if len(s) > 1 else math.nan,
        accuracy_p90=lambda s: s.quantile(0.9) if len(s) > 1 else math.nan,
    )  # fmt: skip
    sources = ok.groupby(DESIGN, dropna=False)["source"].agg(lambda s: ";".join(sorted(set(s))))
    return wide.join(overall).join(sources.rename("accuracy_source")).reset_index()


def cache_columns(key: Mapping, dtype: str, cfg: DecideConfig) -> dict:
    """kv_bytes_per_token_tp{N} (one layer, per device) and requests_fit_tp{N} from the registry;
    a tp that does not divide h is left empty."""
    entry, choice = (
        av.info(key["variant"]),
        parse_one(f"{key['variant']}:{key['options']}".rstrip(":").replace(";", ":")),
    )
    out: dict = {"dtype": dtype, "causal_safe": entry.causal_safe, "cache_source": "registry"}
    known = isinstance(dtype, str) and not any(pd.isna(key[c]) for c in ("dim", "n_heads", "n_kv_heads"))
    if known:
        spec = av.AttnSpec(int(key["dim"]), int(key["n_heads"]), int(key["n_kv_heads"]))
    for tp in cfg.tp:
        if not known:  # a run that did not record its dtype or shape: no cache figure
            out[f"kv_bytes_per_token_tp{tp}"] = out[f"requests_fit_tp{tp}"] = math.nan
            continue
        try:
            per_token = entry.kv_cache_bytes(spec, dict(choice.options), 1, 1, getattr(torch, dtype), tp=tp)
        except ValueError:
            per_token = math.nan  # tp does not split this h
        out[f"kv_bytes_per_token_tp{tp}"] = per_token
        per_request = per_token * cfg.context * cfg.layers
        out[f"requests_fit_tp{tp}"] = (
            math.floor(cfg.memory_gb * 1e9 / per_request) if per_token == per_token else math.nan
        )
    return out


def designs(sweep: pd.DataFrame, accuracy: pd.DataFrame) -> pd.DataFrame:
    """Every design either frame holds, with the dtype its timing ran in (accuracy: float32)."""
    timed = sweep[DESIGN + ["dtype"]].drop_duplicates(DESIGN) if not sweep.empty else None
    trained = accuracy[DESIGN].assign(dtype="float32") if "variant" in accuracy.columns else None
    keys = pd.concat([f for f in (timed, trained) if f is not None and not f.empty])
    return keys.drop_duplicates(DESIGN, keep="first").reset_index(drop=True)


def build(
    sweep: pd.DataFrame | None, accuracy: pd.DataFrame | None, cfg: DecideConfig, ridge: Mapping[str, float]
) -> pd.DataFrame:
    """The decision table (before the Pareto columns): one row per design; `ridge` maps a run's
    name to its calibrated FLOP/s over bytes/s."""
    rows = sweep_rows(sweep, cfg.variants)
    acc = accuracy_columns(accuracy, cfg.variants)
    if rows.empty and acc.empty:
        raise ValueError(f"the runs hold no ok sweep or accuracy rows of variants {list(cfg.variants)}")
    table = designs(rows, acc)
    table = table.join(
        pd.DataFrame([cache_columns(k, k["dtype"], cfg) for _, k in table.iterrows()]).drop(columns="dtype")
    )
    table.insert(0, "design", [design_label(k) for _, k in table.iterrows()])
    for mode in ("decode", "fwd"):
        table = table.merge(timing_columns(rows, mode, common_shape(rows, mode)), on=DESIGN, how="left")
    if "decode_source" in table.columns:
        table["ridge_point"] = table["decode_source"].map(ridge)
    return table.merge(acc, on=DESIGN, how="left")
