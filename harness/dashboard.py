"""benchmark.json: a run's CSV as records of the PyTorch OSS benchmark database ("v3").

The format is the `oss_ci_benchmark_v3` table of pytorch/test-infra
(clickhouse_db_schema/oss_ci_benchmark_v3/schema.sql), written the way pytorch's own writers
write it (benchmarks/dynamo/pr_time_benchmarks/benchmarks/benchmark_base.py, `_write_to_json`):
a JSON list with one record per measured cell and metric, each holding `benchmark`, `model`,
`metric`, `runners` and `dependencies`. The uploader fills the table's own columns (timestamp,
repo, head_sha, workflow and job ids). Every `extra_info` is Map(String, String) in the schema,
so its values are strings; `benchmark_values` is Array(Float32), so every sample is a float.

The CSV stays the primary output; this file is derived from it. Which columns are metrics is
read from the row dataclass (`metric_columns`), so a column added to a row flows through here.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import math
import os
import socket
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

import attn_variants as av

from . import __version__, measure

NAME = "attnbench"
FILE = "benchmark.json"
# The schema's `mode` is "training or inference"; attnbench's own mode stays in extra_info.
MODES = {"fwd": "inference", "decode": "inference", "fwd_bwd": "training"}
RENAMED = {"n_heads": "heads", "n_kv_heads": "kv_heads"}  # extra_info uses the CLI flags' names
# Columns about the run and the machine: they go to `runners` and `dependencies`.
MACHINE = (
    "run_id", "timestamp", "git_commit", "device_name", "host", "gpu_index", "accelerator", "torch_version",
    "status", "error",
)  # fmt: skip
# Numeric columns that count the harness's own work rather than measure the attention; left
# out, like every volatile value, since a dashboard groups series by benchmark.extra_info.
NOT_METRICS = ("repeats", "cell_s", "timed_s", "attempts")
ELSEWHERE = ("variant", "dtype", "sdpa_backend")  # model.name, benchmark.dtype, model.extra_info


def metric_columns(row_type: type) -> list[str]:
    """The measured columns of a row dataclass: numeric fields that stay None until measured."""
    hints = typing.get_type_hints(row_type)
    out = []
    for field in dataclasses.fields(row_type):
        kinds = set(typing.get_args(hints[field.name]))
        numeric = kinds & {int, float} and type(None) in kinds and field.default is None
        if numeric and field.name not in NOT_METRICS:
            out.append(field.name)
    return out


def read_csv(path: Path) -> list[dict[str, str]]:
    """The CSV's rows as strings ('' where empty); a line cut short by a hard kill is dropped."""
    with open(path, newline="") as f:
        return [row for row in csv.DictReader(f) if None not in row.values() and None not in row]


def write(path: Path, records: Sequence[Mapping[str, Any]]) -> Path:
    """`records` as a JSON list at `path` (the CSV's folder, `FILE`)."""
    path.write_text(json.dumps(list(records), indent=1, allow_nan=False) + "\n")  # strict JSON
    return path


def sweep_records(rows: Iterable[Mapping[str, str]], metrics: Sequence[str]) -> list[dict[str, Any]]:
    """One record per ok row and metric; `<base>_samples` gives metric `<base>` every sample,
    and that base's other columns (`latency_ms_median`, `_p10`, `_p90`) go to its extra_info."""
    out = []
    for row in rows:
        if row.get("status", "ok") != "ok":
            continue
        context = _context(row, set(metrics), command="sweep")
        out.extend({**context, "metric": m} for m in _metrics(row, metrics) if m["benchmark_values"])
    return out


def _metrics(row: Mapping[str, str], metrics: Sequence[str]) -> list[dict[str, Any]]:
    sampled = [c.removesuffix("_samples") for c in row if c.endswith("_samples") and row[c]]
    folded: dict[str, dict[str, str]] = {base: {} for base in sampled}
    plain = []
    for col in (c for c in metrics if row.get(c, "") != ""):
        base = next((b for b in sampled if col.startswith(b + "_")), None)
        if base is None:
            plain.append(metric(col, [row[col]]))
        else:
            folded[base][col.removeprefix(base + "_")] = row[col]
    with_samples = [metric(b, row[f"{b}_samples"].split(";"), stats) for b, stats in folded.items()]
    return with_samples + plain


def metric(name: str, values: Iterable[str | float], extra: Mapping[str, Any] | None = None, **kw) -> dict:
    """The schema's `metric`: name, every finite value as a float, extra_info as strings."""
    samples = [x for x in (float(v) for v in values if v != "") if math.isfinite(x)]
    return {"name": name, "benchmark_values": samples, **kw, "extra_info": _strings(extra or {})}


def _context(row: Mapping[str, str], metrics: set[str], command: str) -> dict[str, Any]:
    """benchmark, model, runners and dependencies of one row (everything but the metric)."""
    skip = metrics | {*MACHINE, *NOT_METRICS, *ELSEWHERE}
    shape = {RENAMED.get(k, k): v for k, v in row.items() if k not in skip and not k.endswith("_samples")}
    return {
        "benchmark": {
            "name": NAME,
            "mode": MODES.get(row["mode"], row["mode"]),
            "dtype": row["dtype"],
            "extra_info": _strings({"command": command, **shape}),
        },
        "model": {
            "name": row["variant"],
            "type": "attention",
            "backend": row.get("backend") or _backend(row["variant"], row.get("options", "")),
            "origins": [NAME],
            "extra_info": _strings({k: row.get(k, "") for k in ("options", "sdpa_backend")}),
        },
        "runners": [runner(row)],
        "dependencies": {
            "pytorch": {"repo": "pytorch/pytorch", "version": row.get("torch_version", torch.__version__)},
            NAME: {"sha": row.get("git_commit", ""), "version": __version__},
        },
    }


def _backend(variant: str, options: str) -> str:
    """The variant's `backend` option as given, else its registry default ('' if it has none)."""
    given = dict(p.split("=", 1) for p in options.split(";") if p)
    if "backend" in given:
        return given["backend"]
    try:
        return str(av.info(variant).options.get("backend", ""))
    except ValueError:  # a variant registered by another process (a test, a plugin) is unknown here
        return ""


def runner(row: Mapping[str, str]) -> dict[str, Any]:
    """The schema's runner: the row's host and device; counts and memory where it is this host."""
    device, name, host = row.get("device", "cpu"), row.get("device_name", ""), row.get("host", "")
    local = _machine(device) if host in ("", socket.gethostname()) else {}
    gpu = device != "cpu"
    return {
        "name": host,
        "type": name,
        "cpu_info": local.get("cpu_info", "" if gpu else name),
        "cpu_count": local.get("cpu_count", 0),
        "mem_info": "",
        "avail_mem_in_gb": local.get("mem_gb", 0),
        "gpu_info": name if gpu else "",
        "gpu_count": local.get("gpu_count", 0) if gpu else 0,
        "gpu_mem_info": "",
        "avail_gpu_mem_in_gb": local.get("gpu_mem_gb", 0) if gpu else 0,
        "extra_info": _strings(
            {"device": device, "threads": row.get("threads", "")}
            | {k: row[k] for k in ("gpu_index", "accelerator") if row.get(k)}
        ),
    }


@functools.cache
def _machine(device: str) -> dict[str, Any]:
    """This host's CPU model and counts, memory in GB (whole GB, as the schema's UInt32)."""
    facts: dict[str, Any] = {"cpu_info": measure.cpu_name(), "cpu_count": os.cpu_count() or 0}
    try:
        facts["mem_gb"] = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**30
    except (ValueError, OSError, AttributeError):  # not POSIX: leave it out
        pass
    if device == "cuda" and torch.cuda.is_available():
        facts["gpu_count"] = torch.cuda.device_count()
        facts["gpu_mem_gb"] = torch.cuda.get_device_properties(0).total_memory // 2**30
    return facts


def _strings(info: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): "" if v is None else str(v) for k, v in info.items()}


def check_records(rows: Iterable[Mapping[str, str]]) -> list[dict[str, Any]]:
    """One record per measured check cell and metric: the per-round ratio to the reference
    (`latency_ratio`, target_value the baseline's median ratio), and both per-call latencies."""
    out = []
    for row in rows:
        if row.get("status", "ok") != "ok":
            continue
        context = _context(row, set(CHECK_VALUES), command="check")
        verdict = {k: row[k] for k in ("verdict", "p_value", "change", "reference") if row.get(k)}
        ratio_stats = {k: row[f"ratio_{k}"] for k in ("median", "p10", "p90")}
        target = {"target_value": float(row["baseline_ratio"])} if row.get("baseline_ratio") else {}
        metrics = [
            metric("latency_ratio", row["ratio_samples"].split(";"), {**ratio_stats, **verdict}, **target),
            metric("latency_ms", row["variant_ms_samples"].split(";"), {"median": row["variant_ms"]}),
            metric(
                "reference_latency_ms",
                row["reference_ms_samples"].split(";"),
                {"median": row["reference_ms"], "reference": row["reference"]},
            ),
        ]
        out.extend({**context, "metric": m} for m in metrics)
    return out


def instruction_records(rows: Iterable[Mapping[str, str]]) -> list[dict[str, Any]]:
    """One record per counted cell of `check --metric instructions`: every counted call's
    instruction count (`instructions`), target_value the baseline's count."""
    out = []
    for row in rows:
        if row.get("status", "ok") != "ok":
            continue
        context = _context(row, set(INSTRUCTION_VALUES), command="check")
        target = {"target_value": float(row["baseline"])} if row.get("baseline") else {}
        extra = {k: row.get(k, "") for k in ("instructions", "spread", "ratio", "verdict")}
        out.append({**context, "metric": metric("instructions", row["calls"].split(";"), extra, **target)})
    return out


# The instruction-count run's measured columns (harness/check/instructions_view.py).
INSTRUCTION_VALUES = ("cell", "instructions", "calls", "spread", "baseline", "ratio", "verdict", "date")

# check.csv's measured columns (harness/check/baseline.py): metrics above, never benchmark extra_info.
CHECK_VALUES = (
    "cell", "rounds", "ratio_median", "ratio_p10", "ratio_p90", "variant_ms", "reference_ms",
    "baseline_ratio", "change", "p_value", "verdict", "date",
)  # fmt: skip
