"""benchmark.json beside every sweep and check CSV: PyTorch OSS benchmark database "v3" records.

The field names below are copied from pytorch/test-infra
clickhouse_db_schema/oss_ci_benchmark_v3/schema.sql (the tuples `benchmark`, `model`, `metric`
and the `runners` array); every `extra_info` there is Map(String, String).
"""

import csv
import json
from dataclasses import dataclass

import pytest
from typer.testing import CliRunner

from harness import dashboard
from harness.cli import app
from harness.records import Row

runner = CliRunner()
SCHEMA = {
    "record": {"benchmark", "model", "inputs", "dependencies", "metric", "runners"},
    "benchmark": {"name", "mode", "dtype", "extra_info"},
    "model": {"name", "type", "backend", "origins", "extra_info"},
    "metric": {"name", "benchmark_values", "target_value", "extra_info"},
    "runner": {
        "name", "type", "cpu_info", "cpu_count", "mem_info", "avail_mem_in_gb", "gpu_info", "gpu_count",
        "gpu_mem_info", "avail_gpu_mem_in_gb", "extra_info",
    },
}  # fmt: skip
REQUIRED_EXTRA = {"seq_len", "heads", "kv_heads", "n_visual", "options", "device"}  # the list


def assert_v3(record: dict) -> None:
    """Only the schema's fields, the issue's required ones present, extra_info as strings."""
    assert set(record) <= SCHEMA["record"] and {"benchmark", "model", "metric", "runners"} <= set(record)
    for part in ("benchmark", "model", "metric"):
        assert set(record[part]) <= SCHEMA[part], part
        info = record[part].get("extra_info", {})
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in info.items()), (part, info)
    bench, model, metric = record["benchmark"], record["model"], record["metric"]
    assert bench["name"] == "attnbench" and bench["mode"] in ("inference", "training") and bench["dtype"]
    assert REQUIRED_EXTRA <= set(bench["extra_info"])
    assert model["type"] == "attention" and model["name"] and isinstance(model["backend"], str)
    assert metric["name"] and metric["benchmark_values"]
    assert all(isinstance(v, float) for v in metric["benchmark_values"])
    (run,) = record["runners"]
    assert set(run) == SCHEMA["runner"] and isinstance(run["cpu_count"], int) and run["type"]


def test_sweep_writes_v3_records_with_every_sample(tmp_path):
    args = [
        "sweep",
        "--profile",
        "ci",
        "--variants",
        "gqa,mmca:visual_attention=full",
        "--modes",
        "fwd,fwd_bwd",
    ]
    result = runner.invoke(app, [*args, "--seq-len", "32", "--out", str(tmp_path), "--no-report"])
    assert result.exit_code == 0, result.output
    (run_dir,) = tmp_path.iterdir()
    rows = list(csv.DictReader(open(run_dir / "sweep.csv")))
    records = json.loads((run_dir / "benchmark.json").read_text())
    for record in records:
        assert_v3(record)
    metrics = [c for c in dashboard.metric_columns(Row) if not c.startswith("latency_ms_")]
    assert {"peak_mem_bytes", "kv_cache_bytes", "flops", "tflops"} <= set(metrics)
    # one record per cell and filled metric column: latency_ms (the samples) and the rest
    assert len(records) == sum(1 + sum(row[m] != "" for m in metrics) for row in rows)
    by_key = {}
    for r in records:
        info = r["benchmark"]["extra_info"]
        key = (r["model"]["name"], info["options"], info["mode"], info["kv_heads"], r["metric"]["name"])
        by_key[key] = r
    for row in rows:
        key = (row["variant"], row["options"], row["mode"], row["n_kv_heads"])
        latency = by_key[(*key, "latency_ms")]
        assert latency["metric"]["benchmark_values"] == [
            float(x) for x in row["latency_ms_samples"].split(";")
        ]
        assert float(latency["metric"]["extra_info"]["median"]) == float(row["latency_ms_median"])
        assert by_key[(*key, "flops")]["metric"]["benchmark_values"] == [float(row["flops"])]
        info = latency["benchmark"]["extra_info"]
        assert (info["seq_len"], info["heads"], info["device"]) == ("32", row["n_heads"], "cpu")
        assert latency["benchmark"]["mode"] == {"fwd": "inference", "fwd_bwd": "training"}[row["mode"]]
    mmca = by_key[("mmca", "visual_attention=full", "fwd", "2", "latency_ms")]
    assert mmca["benchmark"]["extra_info"]["n_visual"] == "8" and mmca["model"]["backend"] == "sdpa"


def test_non_finite_values_are_left_out_so_the_json_stays_strict(tmp_path):
    row = dict(variant="gqa", mode="fwd", dtype="float32", status="ok", latency_ms_median="1.0")
    row.update(latency_ms_samples="1.0;nan;1.0", peak_mem_bytes="", tflops="inf", flops="10")
    records = dashboard.sweep_records([row], dashboard.metric_columns(Row))
    assert [(r["metric"]["name"], r["metric"]["benchmark_values"]) for r in records] == [
        ("latency_ms", [1.0, 1.0]),
        ("flops", [10.0]),
    ]
    json.loads(dashboard.write(tmp_path / "b.json", records).read_text())


def test_failed_cells_have_no_records():
    row = {"status": "error", "variant": "gqa", "mode": "fwd", "dtype": "float32", "latency_ms_samples": ""}
    assert dashboard.sweep_records([row], dashboard.metric_columns(Row)) == []


@dataclass(frozen=True)
class FutureRow:
    """A row with columns another change might add: they must flow into benchmark.json."""

    variant: str
    mode: str
    dtype: str
    compile: str  # an identity column: benchmark extra_info
    status: str = "ok"
    latency_ms_median: float | None = None
    latency_ms_samples: str = ""
    bw_util: float | None = None  # a new measured column: a metric
    repeats: int | None = None  # harness bookkeeping: neither


def test_new_columns_flow_through_without_changes_here():
    assert dashboard.metric_columns(FutureRow) == ["latency_ms_median", "bw_util"]
    row = dict(variant="gqa", mode="decode", dtype="bfloat16", compile="max-autotune", status="ok")
    row.update(latency_ms_median="2.0", latency_ms_samples="1.0;2.0;3.0", bw_util="0.5", repeats="3")
    records = dashboard.sweep_records([row], dashboard.metric_columns(FutureRow))
    assert [(r["metric"]["name"], r["metric"]["benchmark_values"]) for r in records] == [
        ("latency_ms", [1.0, 2.0, 3.0]),
        ("bw_util", [0.5]),
    ]
    info = records[0]["benchmark"]["extra_info"]
    assert info["compile"] == "max-autotune" and "repeats" not in info and "bw_util" not in info


TINY_CHECK = """
[check]
seq_len = [32]
heads = [4]
kv_heads = [2]
modes = ["fwd"]
head_dim = 8
rounds = 10
passes = 1
warmup = 1
min_sample_s = 0.002
"""


@pytest.mark.parametrize("update", [True, False])
def test_check_writes_check_csv_and_v3_records(tmp_path, update):
    (tmp_path / "bench.toml").write_text(TINY_CHECK)
    base = ["check", "--config", str(tmp_path / "bench.toml"), "--baseline", str(tmp_path / "base.csv")]
    args = [*base, "--variants", "gqa,mqa", "--out", str(tmp_path / "out")]
    first = runner.invoke(app, [*args, "--update-baseline"])
    assert first.exit_code == 0, first.output
    if not update:
        (tmp_path / "out").rename(tmp_path / "first")
        result = runner.invoke(app, args)
        assert result.exit_code in (0, 1), result.output  # 1 only for a real regression on a noisy box
    (run_dir,) = (tmp_path / "out").iterdir()
    rows = list(csv.DictReader(open(run_dir / "check.csv")))
    records = json.loads((run_dir / "benchmark.json").read_text())
    assert json.loads((run_dir / "run.json").read_text())["command"] == "check"
    assert len(records) == 3 * len(rows) == 6
    for record in records:
        assert_v3(record)
        assert record["benchmark"]["extra_info"]["reference"] == "mha"
    for row in rows:
        mine = [r for r in records if r["model"]["name"] == row["variant"]]
        metric = {r["metric"]["name"]: r["metric"] for r in mine}
        assert metric["latency_ratio"]["benchmark_values"] == [
            float(x) for x in row["ratio_samples"].split(";")
        ]
        assert len(metric["latency_ms"]["benchmark_values"]) == 10
        assert len(metric["reference_latency_ms"]["benchmark_values"]) == 10
        if update:
            assert row["verdict"] == "" and "target_value" not in metric["latency_ratio"]
        else:
            assert metric["latency_ratio"]["target_value"] == float(row["baseline_ratio"])
            assert metric["latency_ratio"]["extra_info"]["verdict"] == row["verdict"] != ""


def test_where_a_ray_cell_ran_goes_to_its_runner_and_attempts_is_no_metric():
    """gpu_index and accelerator name the runner (not the benchmark's series); attempts counts
    the harness's tries, not anything about the attention."""
    assert "attempts" not in dashboard.metric_columns(Row)
    row = dict(variant="gqa", mode="fwd", dtype="bfloat16", status="ok", latency_ms_median="1.0", n_heads="8")
    row |= dict(latency_ms_samples="1.0;1.1", device="cuda", device_name="NVIDIA H100", host="node-7")
    row |= dict(gpu_index="3", accelerator="H100", attempts="2")
    (record,) = dashboard.sweep_records([row], dashboard.metric_columns(Row))
    assert not {"gpu_index", "accelerator", "attempts"} & set(record["benchmark"]["extra_info"])
    (run,) = record["runners"]
    assert run["name"] == "node-7" and run["gpu_info"] == "NVIDIA H100"
    assert set(run) == SCHEMA["runner"]
    assert run["extra_info"].items() >= {"gpu_index": "3", "accelerator": "H100"}.items()
