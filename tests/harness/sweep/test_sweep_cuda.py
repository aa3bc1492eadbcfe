"""What a sweep does on a CUDA machine, checked on CPU by simulating the device: the default
dtype (bfloat16 unless one is given) and the flag on speedups that compare kernels."""

from pathlib import Path

import pandas as pd
import pytest
import torch
from rich.console import Console

from harness import config, measure
from harness.measure import calibrate
from harness.records import read_rows
from harness.sweep import cell as sweep_cell
from harness.sweep import executors
from harness.sweep import runner as sweep
from harness.sweep import view as sweep_view

CUDA, CPU = torch.device("cuda"), torch.device("cpu")
REPO_TOML = Path(__file__).resolve().parents[3] / "bench.toml"


@pytest.mark.parametrize(
    "given, device, expected",
    [("auto", CUDA, "bfloat16"), ("auto", CPU, "float32"), ("float32", CUDA, "float32")]
    + [("float16", CUDA, "float16"), ("bfloat16", CPU, "bfloat16")],
)
def test_auto_dtype_is_bfloat16_on_cuda_and_a_given_dtype_is_kept(given, device, expected):
    assert sweep.resolve_dtype(given, device) == expected


def test_bench_toml_leaves_the_dtype_to_the_device_and_a_given_one_counts(tmp_path):
    for profile in (None, "quick"):  # the repo's defaults: nothing pins float32 on a GPU
        assert config.load(sweep.SweepConfig, "sweep", path=REPO_TOML, profile=profile).dtype == "auto"
    assert config.load(sweep.SweepConfig, "sweep", path=None).dtype == "auto"
    toml = tmp_path / "bench.toml"
    toml.write_text('[sweep]\ndtype = "float32"\n')
    from_file = config.load(sweep.SweepConfig, "sweep", path=toml)
    from_flag = config.load(sweep.SweepConfig, "sweep", path=None, overrides={"dtype": "float32"})
    for cfg in (from_file, from_flag):
        assert sweep.resolve_dtype(cfg.dtype, CUDA) == "float32"


def fake_cuda(monkeypatch):
    """The sweep sees a CUDA device; cells are recorded, not run (this machine has no GPU)."""
    env = {"git_commit": "x", "device": "cuda", "device_name": "NVIDIA H100 80GB HBM3", "host": "h"}
    env |= {"torch_version": torch.__version__, "threads": 1}
    monkeypatch.setattr(executors.LocalExecutor, "device", lambda self, name: CUDA)
    monkeypatch.setattr(measure, "environment", lambda device: env)
    monkeypatch.setattr(calibrate, "get", lambda device, dtype, **kw: None)  # no GPU to calibrate
    monkeypatch.setattr(measure, "warm_up_tools", lambda device: 0.0)  # nor to profile
    seen = []

    def measure_cell(cell, cfg, device, dtype, env, run_id):
        seen.append((device, dtype))
        return sweep_cell._row(cell, env, run_id, "ok", "", latency_ms_median=1.0)

    monkeypatch.setattr(sweep_cell, "measure_cell", measure_cell)
    return seen


@pytest.mark.parametrize("given, expected", [("auto", torch.bfloat16), ("float32", torch.float32)])
def test_a_cuda_sweep_runs_bfloat16_unless_a_dtype_is_given(tmp_path, monkeypatch, given, expected):
    seen = fake_cuda(monkeypatch)
    cfg = sweep.SweepConfig(
        variants=("gqa",), seq_len=(16,), heads=(4,), kv_heads=(2,), modes=("fwd",), dtype=given,
        device="auto", out=str(tmp_path),
    )  # fmt: skip
    df = sweep.run(cfg)
    assert seen == [(CUDA, expected)] * 2  # mha and gqa
    name = str(expected).removeprefix("torch.")
    assert set(df["dtype"]) == {name}
    run_dir = Path(df.attrs["run_dir"])
    assert {r["dtype"] for r in read_rows(run_dir / "sweep.csv")} == {name}
    assert sweep.resume_config(run_dir).dtype == name  # a resumed run keeps the dtype it started with


def frame(backends: dict[str, str]) -> pd.DataFrame:
    """ok rows at one shape, each variant with the SDPA kernel `backends` gives it."""
    rows = []
    for variant, backend in backends.items():
        g = {"mha": 8, "mqa": 1}.get(variant, 2)
        rows.append(
            dict(variant=variant, options="", device="cuda", dtype="float32", mode="fwd", batch=1,
                 seq_len=1024, n_heads=8, n_kv_heads=g, head_dim=64, status="ok",
                 latency_ms_median=1.0 if variant == "mha" else 2.0, peak_mem_bytes=1, sdpa_backend=backend)
        )  # fmt: skip
    return pd.DataFrame(rows)


def test_a_speedup_between_different_kernels_is_flagged():
    df = frame({"mha": "efficient", "gqa": "math", "mqa": "efficient"})
    sp = sweep.with_speedup(df).set_index("variant")
    assert sp["kernels_differ"].to_dict() == {"mha": False, "gqa": True, "mqa": False}
    assert sp.loc["gqa", "reference_sdpa_backend"] == "efficient"
    note = sweep_view.kernel_note(df, "mha")
    assert "compares kernels, not variants" in note and "gqa_g2 fwd (math vs efficient)" in note
    assert "mqa" not in note
    console = Console(width=200, record=True)
    console.print(sweep_view.summary_table(df, "mha"))
    lines = console.export_text().splitlines()
    assert next(line for line in lines if "gqa_g2" in line).rstrip(" │").endswith("*")
    assert not next(line for line in lines if "mqa_g1" in line).rstrip(" │").endswith("*")


def test_same_kernels_or_no_reference_are_not_flagged():
    assert sweep_view.kernel_note(frame({"mha": "flash_cpu", "gqa": "flash_cpu"}), "mha") == ""
    assert sweep_view.kernel_note(frame({"mha": "efficient", "gqa": "math"}), "none") == ""
    failed = frame({"mha": "efficient", "gqa": ""}).assign(status=["ok", "error"])
    assert not sweep.with_speedup(failed)["kernels_differ"].any()
