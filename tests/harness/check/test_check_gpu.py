"""GPU check baselines, checked on CPU by simulating the device: one file per GPU model, and the
host's thread count compared only on CPU."""

from pathlib import Path

import pandas as pd
import torch
from rich.console import Console

from harness import config, measure
from harness.check import against, baseline
from harness.check import ratios as check
from harness.check import view as check_view

H100, H200 = "NVIDIA H100 80GB HBM3", "NVIDIA H200"
REPO_TOML = Path(__file__).resolve().parents[3] / "bench.toml"


def env(device="cuda", name=H100, threads=16):
    return {
        "git_commit": "abc",
        "device": device,
        "device_name": name,
        "host": "h",
        "torch_version": "2.13",
    } | {"threads": threads}


def cfg(tmp_path, **kw):
    values = dict(variants=("gqa",), seq_len=(32,), heads=(4,), kv_heads=(2,), modes=("fwd",), rounds=20)
    values |= dict(passes=1, device="cuda", threads=0, baseline=str(tmp_path / "gpu-{device_name}.csv"))
    values |= dict(out=str(tmp_path / "results"))  # run folders under the test's own folder
    return check.CheckConfig(**values | kw)


def results(c: check.CheckConfig, ratio: float) -> list[check.Result]:
    """Fabricated per-round ratios (this machine has no GPU to measure them)."""
    times = tuple(1e-3 * (1 + i / 100) for i in range(c.rounds))
    return [
        check.Result(cell, "ok", "", tuple(ratio for _ in times), tuple(t * ratio for t in times), times)
        for cell in check.cells(c)
    ]


def fake_gpu(monkeypatch, here: dict, ratio: float = 0.8):
    monkeypatch.setattr(measure, "resolve_device", lambda name: torch.device(here["device"]))
    monkeypatch.setattr(measure, "environment", lambda device: here)
    monkeypatch.setattr(check, "measure_all", lambda c, progress=None, todo=None: results(c, ratio))
    monkeypatch.setattr(check_view, "_threads", lambda c: here["threads"])


def test_the_baseline_path_is_keyed_by_the_device_name():
    path = baseline.path_for("benchmarks/baselines/gpu-{device_name}.csv", env())
    assert path == Path("benchmarks/baselines/gpu-nvidia-h100-80gb-hbm3.csv")
    assert baseline.path_for("ci-cpu.csv", env(device="cpu", name="AMD EPYC")) == Path("ci-cpu.csv")
    gpu = config.load(check.CheckConfig, "check", path=REPO_TOML, profile="gpu")
    assert "{device_name}" in gpu.baseline


def test_update_on_an_h200_keeps_the_h100_baseline(tmp_path, monkeypatch):
    c = cfg(tmp_path)
    fake_gpu(monkeypatch, env(name=H100))
    assert check_view.main(c, update=True, console=Console()) == 0
    h100 = tmp_path / "gpu-nvidia-h100-80gb-hbm3.csv"
    before = h100.read_bytes()
    fake_gpu(monkeypatch, env(name=H200))
    assert check_view.main(c, update=True, console=Console()) == 0
    assert h100.read_bytes() == before
    h200 = pd.read_csv(tmp_path / "gpu-nvidia-h200.csv", dtype=str)
    assert set(h200["device_name"]) == {H200} and list(h200["variant"]) == ["gqa"]


def test_a_same_gpu_baseline_from_a_host_with_other_cpu_cores_is_compared(tmp_path, monkeypatch):
    c = cfg(tmp_path)
    fake_gpu(monkeypatch, env(threads=16))
    assert check_view.main(c, update=True, console=Console()) == 0
    fake_gpu(monkeypatch, env(threads=64))  # the same GPU in a bigger host
    console = Console(record=True, width=200)
    assert check_view.main(c, update=False, console=console) == 0
    assert "1 ok" in console.export_text()


def test_threads_are_still_compared_on_cpu():
    amd = "cpu AMD EPYC (AuthenticAMD 25/1; avx avx2 fma)"
    row = {"machine": amd, "device": "cpu", "threads": "1", "reference": "mha", "torch_version": "2.13"}
    df, c = pd.DataFrame([row]), check.CheckConfig()
    here = env("cpu", "AMD EPYC", threads=1) | {"machine": amd}
    assert len(against.same_model(df, here, c)) == 1
    assert len(against.same_model(df, here | {"threads": 2}, c)) == 0
    gpu = df.assign(machine=f"cuda {H100}", device="cuda", threads="16")
    assert len(against.same_model(gpu, env(threads=64) | {"machine": f"cuda {H100}"}, c)) == 1
    assert len(against.same_model(gpu, env(name=H200) | {"machine": f"cuda {H200}"}, c)) == 0
