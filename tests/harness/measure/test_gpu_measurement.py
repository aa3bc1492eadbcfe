"""Measurement controls for GPU sizes, on CPU where the logic allows and on CUDA where it must:
skipped_memory and oom rows, gradients in the fwd_bwd peak, the timing column, calibration."""

from __future__ import annotations

import weakref
from dataclasses import asdict, replace

import pandas as pd
import pytest
import torch

import attn_variants as av
from harness import measure
from harness.measure import calibrate, flops, timing, workload
from harness.measure import interleave as compare
from harness.records import Row
from harness.sweep import runner as sweep
from harness.variant_choice import VariantChoice

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(calibrate, "MATMUL_K", {"cpu": 128, "cuda": 2048})
    monkeypatch.setattr(calibrate, "COPY_BYTES", {"cpu": 2**22, "cuda": 2**26})
    monkeypatch.setattr(calibrate, "MIN_SECONDS", 0.01)


def _cfg(tmp_path, device="cpu", **kw) -> sweep.SweepConfig:
    base = dict(
        variants=("gqa",), reference="mha", seq_len=(32, 64), heads=(4,), kv_heads=(2,), modes=("fwd",),
        batch=1, head_dim=16, repeats=3, warmup=0, threads=1, device=device, out=str(tmp_path),
    )  # fmt: skip
    dtype = {"dtype": "bfloat16"} if device == "cuda" else {}
    return sweep.SweepConfig(**{**base, **dtype, **kw})


# --- memory safety -----------------------------------------------------------------------------


def test_cells_over_an_injected_limit_are_skipped_memory_rows(tmp_path):
    """A limit between the estimates of n = 32 and n = 64: n = 32 runs, n = 64 is skipped with
    its estimate named, and the sweep goes on."""
    spec = av.AttnSpec(dim=64, n_heads=4, n_kv_heads=2)
    small, large = (
        flops.peak_estimate(
            lambda d, n=n: workload.build("gqa", spec, "fwd", batch=1, seq_len=n, device=d).step, "cpu"
        )
        for n in (32, 64)
    )
    assert small < large
    limit_mb = (small + large) / 2 / 2**20
    df = sweep.run(_cfg(tmp_path, memory_limit_mb=limit_mb, reference="none"))
    by_n = df.set_index("seq_len")
    assert by_n.loc[32, "status"] == "ok" and by_n.loc[32, "peak_mem_estimate_bytes"] <= limit_mb * 2**20
    skipped = by_n.loc[64]
    assert skipped["status"] == "skipped_memory"
    assert skipped["peak_mem_estimate_bytes"] > limit_mb * 2**20
    assert f"{skipped['peak_mem_estimate_bytes'] / 2**30:.2f} GiB" in skipped["error"]


def test_a_real_oom_becomes_an_oom_row_frees_the_cell_and_the_sweep_goes_on(tmp_path, monkeypatch):
    """The first cell's timed calls raise CUDA's OOM error (injected on CPU): its row says oom,
    nothing of the cell stays alive, and the next cell is measured."""
    modules, real_sample = [], timing.sample
    real_build = workload.build

    def build(*args, **kwargs):
        w = real_build(*args, **kwargs)
        fake = isinstance(torch.empty(0), torch._subclasses.fake_tensor.FakeTensor)
        if not fake and next(w.module.parameters()).device.type != "meta":  # the real build
            modules.append(weakref.ref(w.module))
        return w

    def sample(fn, device, **kw):
        if len(modules) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 16.00 GiB")
        return real_sample(fn, device, **kw)

    monkeypatch.setattr(workload, "build", build)
    monkeypatch.setattr(timing, "sample", sample)
    df = sweep.run(_cfg(tmp_path, reference="none"))
    assert list(df["status"]) == ["oom", "ok"]
    assert "OutOfMemoryError" in df["error"].iloc[0]
    assert modules[0]() is None  # the failed cell's module was freed


def test_an_estimate_that_cannot_be_made_does_not_fail_the_cell(tmp_path, monkeypatch):
    def no_fake_kernel(make, device):
        raise NotImplementedError("no fake implementation of aten::some_op")

    monkeypatch.setattr(flops, "peak_estimate", no_fake_kernel)
    df = sweep.run(_cfg(tmp_path, memory_limit_mb=1000, seq_len=(32,), reference="none"))
    assert df["status"].tolist() == ["ok"] and df["peak_mem_estimate_bytes"].isna().all()


@pytest.mark.parametrize(
    "message",
    [
        "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
        "cuDNN error: CUDNN_STATUS_ALLOC_FAILED",
        "DefaultCPUAllocator: can't allocate memory: you tried to allocate 68719476736 bytes",
    ],
)
def test_library_allocation_failures_are_oom(message):
    assert measure.is_oom(RuntimeError(message))
    assert not measure.is_oom(RuntimeError("CUBLAS_STATUS_EXECUTION_FAILED"))


@CUDA
def test_cuda_memory_fraction_skips_and_ooms(tmp_path, monkeypatch):
    """With the process capped at a small fraction of the GPU: a cell whose estimate exceeds the
    cap is skipped_memory; with the estimate check off, the allocator's OOM is an oom row, and
    the next (small) cell still runs."""
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(2**30 / total)  # 1 GiB
    try:
        big = _cfg(tmp_path, seq_len=(65536,), heads=(32,), kv_heads=(32,), head_dim=128, reference="none")
        assert sweep.run(big)["status"].tolist() == ["skipped_memory"]
        monkeypatch.setattr(measure, "check_fits", lambda estimate, limit: None)
        both = _cfg(
            tmp_path, seq_len=(65536, 64), heads=(32,), kv_heads=(32,), head_dim=128, reference="none"
        )
        assert sweep.run(both).set_index("seq_len")["status"].to_dict() == {65536: "oom", 64: "ok"}
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)


# --- fwd_bwd peak memory counts the gradients (issue 20, item 2) -------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_fwd_bwd_peak_counts_the_gradients_it_allocates(device):
    """After one call (gradients exist), the probed peak still includes the parameter and input
    gradients the next call allocates: the reset drops them before the baseline."""
    spec = av.AttnSpec(dim=256, n_heads=4, n_kv_heads=2)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    w = workload.build("gqa", spec, "fwd_bwd", batch=1, seq_len=8, dtype=dtype, device=device)
    x_grad = w.step()  # gradients now exist, as after the sweep's warm-up
    grads = sum(p.numel() * p.element_size() for p in w.module.parameters()) + x_grad.numel() * 4
    peak = measure.probe(w.step, torch.device(device), w.reset).peak_mem_bytes
    assert peak >= grads, (peak, grads)


def test_sweep_probes_fwd_bwd_after_dropping_the_last_gradients(tmp_path, monkeypatch):
    """The CPU profiler's peak happens to count the gradients either way (test above); on CUDA
    the baseline would hold the old ones. What makes both mean the same: the sweep hands the
    probe the workload's reset, and the reset leaves no gradient behind."""
    seen, real_probe = [], measure.probe

    def probe(step, device, reset=None):
        seen.append(reset)
        return real_probe(step, device, reset)

    monkeypatch.setattr(measure, "probe", probe)
    sweep.run(_cfg(tmp_path, modes=("fwd_bwd",), seq_len=(16,), reference="none"))
    assert len(seen) == 2 and seen[0] is None  # the tools' warm-up before the clock (no step to reset)
    assert seen[1] is not None  # the cell's probe
    w = workload.build("gqa", av.AttnSpec(dim=64, n_heads=4, n_kv_heads=2), "fwd_bwd", batch=1, seq_len=8)
    x_grad = w.step()
    assert x_grad is not None and all(p.grad is not None for p in w.module.parameters())
    w.reset()
    assert all(p.grad is None for p in w.module.parameters())


# --- timing ---------------------------------------------------------------------------------------


def test_cpu_timing_column_and_no_op_controls(tmp_path):
    """On CPU the flush and the graph change nothing and the column says so."""
    assert timing.L2Flush(torch.device("cpu")).buffer is None
    df = sweep.run(_cfg(tmp_path, cuda_graph=True, modes=("fwd", "decode"), seq_len=(32,)))
    assert set(df["timing"]) == {timing.CPU_TIMING}


@CUDA
def test_cuda_timing_methods(tmp_path):
    df = sweep.run(_cfg(tmp_path, cuda_graph=True, modes=("fwd", "decode"), seq_len=(64,), reference="none"))
    by_mode = df.set_index("mode")["timing"].to_dict()
    assert by_mode == {"fwd": "cuda_event+l2_flush", "decode": "cuda_graph"}


@CUDA
def test_cuda_graph_replays_the_decode_step():
    """A replay computes what an eager call computes (the graph holds the same decode step)."""
    spec = av.AttnSpec(dim=256, n_heads=4, n_kv_heads=2)
    w = workload.build("gqa", spec, "decode", batch=1, seq_len=64, dtype=torch.bfloat16, device="cuda")
    eager = w.step().clone()
    replay = timing.cuda_graph(w.step, torch.device("cuda"))
    replay()
    torch.cuda.synchronize()
    out = w.step()
    torch.testing.assert_close(out, eager)


@CUDA
def test_check_samples_one_call_each_on_cuda():
    """min_sample_s would repeat a call on CPU; on CUDA every sample is one synchronised call."""
    calls = []
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    compare.interleaved(fns, "cuda", rounds=4, warmup=0, min_sample_s=1.0)
    assert len(calls) == 8


def test_check_repeats_calls_on_cpu_to_reach_min_sample_s():
    calls = []
    compare.interleaved({"a": lambda: calls.append(1)}, "cpu", rounds=2, warmup=0, min_sample_s=1e-4)
    assert len(calls) > 2 + 3  # calls_for's three probes, then more than one call per sample


# --- calibration and the roofline columns ------------------------------------------------------------


def test_calibration_is_cached_per_device_and_dtype(tmp_path, monkeypatch):
    cpu = torch.device("cpu")
    first = calibrate.get(cpu, "float32")
    assert first.peak_flops > 0 and first.peak_bytes_per_s > 0

    def measure_again(*args):
        raise RuntimeError("measured again")

    monkeypatch.setattr(calibrate, "measure_peaks", measure_again)
    assert calibrate.get(cpu, "float32") == first
    with pytest.raises(RuntimeError, match="measured again"):
        calibrate.get(cpu, "bfloat16")


def test_roofline_columns_are_in_range_on_cpu(tmp_path, monkeypatch):
    """flops_util and bw_util in (0, 1.2], the calibration recorded in run.json, tflops from
    flops_effective. The roof is taken with the real sizes (the fixture's small ones would
    understate it)."""
    monkeypatch.setattr(calibrate, "MATMUL_K", {"cpu": 512})
    monkeypatch.setattr(calibrate, "COPY_BYTES", {"cpu": 2**26})
    monkeypatch.setattr(calibrate, "MIN_SECONDS", 0.1)
    cfg = _cfg(tmp_path, modes=("fwd", "fwd_bwd", "decode"), seq_len=(256,), head_dim=32, repeats=5)
    df = sweep.run(cfg)
    ok = df[df["status"] == "ok"]
    assert len(ok) == 6
    for column in ("flops_util", "bw_util"):
        assert ((ok[column] > 0) & (ok[column] <= 1.2)).all(), ok[column].tolist()
    pd.testing.assert_series_equal(
        ok["tflops"], ok["flops_effective"] / (ok["latency_ms_median"] / 1e3) / 1e12, check_names=False
    )
    run = pd.read_json(f"{df.attrs['run_dir']}/run.json", typ="series")
    assert run["calibration"]["peak_flops"] > 0


def test_row_has_the_new_columns():
    names = set(Row.__dataclass_fields__)
    assert {"flops_effective", "bytes_moved", "flops_util", "bw_util", "timing"} <= names
    from harness.records import STATUSES

    assert {"skipped_memory", "oom"} <= set(STATUSES)


def test_choice_label_still_works():  # the sweep view labels rows the same way
    assert VariantChoice("gqa").label(2) == "gqa_g2"
    assert flops.AttentionCall(1, 1, 4, 4, 1, True, False).pairs() == 10


def test_rows_above_the_calibrated_roof_are_flagged():
    """A calibration cached from a loaded machine is too low: every utilisation of the run is
    inflated by the same factor, and the sweep's summary says so instead of plotting points
    above the roof silently."""
    import pandas as pd

    from harness.sweep.view import roof_note

    high = pd.DataFrame({"flops_util": [0.5, 4.5], "bw_util": [0.1, 0.2]})
    assert "flops_util up to 4.50" in roof_note(high)
    assert "calibrate --refresh" in roof_note(pd.DataFrame({"flops_util": [0.5], "bw_util": [1.3]}))
    assert roof_note(pd.DataFrame({"flops_util": [0.5, 1.1], "bw_util": [0.1, None]})) == ""
    assert roof_note(pd.DataFrame({"status": ["oom"]})) == ""


def _calibration(peak_flops, peak_bytes_per_s, load_avg):
    args = ("cpu-x", "float32", 1, peak_flops, peak_bytes_per_s, 4, 8, "2.13", "now", load_avg)
    return calibrate.Calibration(*args)


@pytest.mark.parametrize(
    ("cached_load", "now", "retaken"), [(6.0, 1.0, True), (1.5, 1.0, False), (-1.0, 0.0, False)]
)
def test_a_calibration_taken_under_load_is_retaken_when_quieter(monkeypatch, cached_load, now, retaken):
    """Busier than now by a core or more: measured again, each peak the better of the two."""
    old, new = _calibration(1e9, 5e10, cached_load), _calibration(4e9, 3e10, now)
    monkeypatch.setattr(calibrate, "measure_peaks", lambda *args: new)
    monkeypatch.setattr(calibrate, "load_avg", lambda: now)
    monkeypatch.setattr(calibrate, "_read", lambda path: {calibrate.key("cpu-x", "float32", 1): asdict(old)})
    monkeypatch.setattr(calibrate.measure, "host_environment", lambda device: {"device_name": "cpu-x"})
    monkeypatch.setattr(calibrate.torch, "get_num_threads", lambda: 1)
    monkeypatch.setattr(calibrate, "_SEEN", {})  # nothing from this process's earlier calls
    got = calibrate.get(torch.device("cpu"), "float32")
    assert got == (replace(new, peak_flops=4e9, peak_bytes_per_s=5e10) if retaken else old)
