"""`--executor ray`: the same cells as local, failures in workers become rows, clear error without Ray."""

import json
import os
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from attn_variants import plugins
from harness import config, measure
from harness.cli import app
from harness.sweep import cell as sweep_cell
from harness.sweep import cluster, executors
from harness.sweep import runner as sweep
from harness.sweep.runner import grid

from .test_sweep_cli import read_csv, tiny

runner = CliRunner()
KEY = ("variant", "options", "mode", "seq_len", "n_heads", "n_kv_heads", "status")


@pytest.fixture(scope="module")
def ray():
    ray = pytest.importorskip("ray")
    # address="local": a Ray of its own, never one another process left running on this machine
    # (ray.init() with no address joins the latest cluster started here, and then refuses num_cpus).
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    # Test-module functions travel to the workers by value (they cannot import tests/).
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.shutdown()


def cells(rows):
    return sorted(tuple(r[k] for k in KEY) for r in rows)


def test_ray_runs_the_same_cells_as_local(tmp_path, ray):
    (tmp_path / "local").mkdir()
    (tmp_path / "ray").mkdir()
    local = runner.invoke(app, tiny(tmp_path / "local", "--variants", "gqa,mqa"))
    remote = runner.invoke(app, tiny(tmp_path / "ray", "--variants", "gqa,mqa", "--executor", "ray"))
    assert local.exit_code == 0, local.output
    assert remote.exit_code == 0, remote.output
    local_rows, ray_rows = read_csv(local), read_csv(remote)
    assert cells(ray_rows) == cells(local_rows)
    assert all(r["host"] and r["status"] == "ok" for r in ray_rows)
    assert all(float(r["latency_ms_median"]) > 0 for r in ray_rows)


PLUGIN = """
import attn_variants as av


@av.register("_ray_plugin", description="GQA from a plugin file", paper="-")
class RayPlugin(av.GroupedQueryAttention):
    pass
"""


def test_a_plugin_file_reaches_the_workers_with_the_drivers_code(tmp_path, ray, scratch_registry):
    """The --plugin file travels in the runtime_env (the workers load it by module name, not from
    the driver's path) and is part of the code hash the workers confirm."""
    plugin = tmp_path / "ray_plugin_variant.py"
    plugin.write_text(PLUGIN)
    cfg = sweep.SweepConfig(
        variants=("_ray_plugin",), reference="none", seq_len=(16,), heads=(4,), kv_heads=(2,), modes=("fwd",),
        batch=1, head_dim=8, device="cpu", repeats=2, warmup=0, threads=1, out=str(tmp_path / "out"),
        executor="ray", plugins=(str(plugin),),
    )  # fmt: skip
    plugins.load_all(cfg.plugins)
    df = sweep.run(cfg)
    assert list(df["status"]) == ["ok"], list(df["error"])
    env = json.loads((Path(df.attrs["run_dir"]) / "run.json").read_text())["environment"]
    assert env["code_hash"] == cluster.code_hash(cfg.plugins) != cluster.code_hash()


MEASURE_ON_HOST = sweep_cell.measure_on_host


def _failing_task(cell, **kwargs):
    """Raises in the worker for n=32 and kills the worker for fwd n=16; measures the rest."""
    if cell.seq_len == 32:
        raise RuntimeError("boom in the worker")
    if cell.seq_len == 16 and cell.mode == "fwd":
        os._exit(1)
    return MEASURE_ON_HOST(cell, **kwargs)


def test_a_cell_that_raises_or_kills_its_worker_is_an_error_row(tmp_path, ray, monkeypatch):
    monkeypatch.setattr(sweep_cell, "measure_on_host", _failing_task)
    cfg = sweep.SweepConfig(
        variants=("gqa",), reference="none", seq_len=(16, 32), heads=(4,), kv_heads=(2,),
        modes=("fwd", "decode"), batch=1, head_dim=8, device="cpu", repeats=2, warmup=0, threads=1,
        out=str(tmp_path), executor="ray",
    )  # fmt: skip
    df = sweep.run(cfg).set_index(["mode", "seq_len"])
    assert len(df) == 4
    assert df.loc[("decode", 16), "status"] == "ok"
    for mode in ("fwd", "decode"):
        assert df.loc[(mode, 32), "status"] == "error"
        # the worker's own exception, not Ray's wrapper (whose header, as long as the checkout's
        # path, once pushed the message past the 500-character cut)
        assert df.loc[(mode, 32), "error"] == "RuntimeError: boom in the worker"
    assert df.loc[("fwd", 16), "status"] == "error"
    # killed its worker on the first try and on both retries: an error row saying so
    assert df.loc[("fwd", 16), "attempts"] == 3
    assert "the worker died on each of 3 attempt(s)" in df.loc[("fwd", 16), "error"]
    # a cell that raised is never retried
    assert df.loc[("fwd", 32), "attempts"] == df.loc[("decode", 32), "attempts"] == 1
    assert df.loc[("decode", 16), "attempts"] == 1


def test_executor_ray_without_ray_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails
    result = runner.invoke(app, tiny(tmp_path, "--variants", "gqa", "--executor", "ray"))
    assert result.exit_code == 2
    assert 'pip install "attnbench[ray]"' in result.output


def test_retries_and_accelerator_type_come_from_the_settings_file_or_flags(tmp_path):
    assert sweep.SweepConfig().retries == 2 and sweep.SweepConfig().accelerator_type == ""
    path = tmp_path / "bench.toml"
    path.write_text('[sweep]\nretries = 5\naccelerator_type = "H100"\n')
    cfg = config.load(sweep.SweepConfig, "sweep", path=path)
    assert (cfg.retries, cfg.accelerator_type) == (5, "H100")
    flagged = config.load(sweep.SweepConfig, "sweep", path=path, overrides={"retries": 0})
    assert flagged.retries == 0
    result = runner.invoke(app, tiny(tmp_path, "--variants", "gqa", "--retries", "-1"))
    assert result.exit_code == 2 and "retries=-1 must be >= 0" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_speedup_divides_latencies_of_one_device_only():
    """A Ray sweep over two GPU models: each variant row's speedup uses mha on its own model."""
    base = dict(device="cuda", dtype="bfloat16", mode="fwd", batch=1, seq_len=64, n_heads=8, head_dim=64,
                status="ok", options="", compile="off", sdpa_backend="flash", device_name="gpu")  # fmt: skip
    cells = [("mha", "A100", 4.0), ("gqa", "A100", 2.0), ("mha", "H100", 1.0), ("gqa", "H100", 0.8)]
    rows = [{**base, "variant": v, "accelerator": a, "latency_ms_median": ms} for v, a, ms in cells]
    out = sweep.with_speedup(pd.DataFrame(rows)).set_index(["variant", "accelerator"])
    assert out.loc[("gqa", "A100"), "speedup"] == pytest.approx(2.0)
    assert out.loc[("gqa", "H100"), "speedup"] == pytest.approx(1.25)


@pytest.mark.parametrize(
    "visible, device, expected",
    [("4,6", "cuda:1", "6"), ("GPU-1a,GPU-3c", "cuda:0", "GPU-1a"), ("", "cuda:2", "2"), ("4", "cpu", "")],
)
def test_gpu_index_is_the_physical_gpu_ray_granted(monkeypatch, visible, device, expected):
    """Ray sets CUDA_VISIBLE_DEVICES to the GPU it gives a worker, whose torch then sees cuda:0."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert cluster.gpu_index(torch.device(device)) == expected


def test_a_worker_with_other_code_measures_nothing(tmp_path):
    """The driver's code hash travels with each cell; a worker whose own differs (the runtime_env
    did not take: another attnbench on its path) writes an error row naming both, unmeasured."""
    cfg = sweep.SweepConfig(
        variants=("gqa",), reference="none", seq_len=(16,), heads=(4,), kv_heads=(2,), modes=("fwd",),
        batch=1, head_dim=8, device="cpu", repeats=2, warmup=0, out=str(tmp_path), executor="ray",
    )  # fmt: skip
    (cell,), _ = grid(cfg)
    device = torch.device("cpu")
    env = executors.LocalExecutor().environment(device)
    kw = dict(cfg=cfg, env=env, device=device, dtype=torch.float32, run_id="r")
    row = sweep_cell.measure_on_host(cell, code="0123456789ab", **kw)
    assert row.status == "error" and row.latency_ms_median is None
    assert f"runs code {cluster.code_hash()}, not the driver's 0123456789ab" in row.error
    assert sweep_cell.measure_on_host(cell, code=cluster.code_hash(), **kw).status == "ok"


def test_the_summary_counts_the_cells_rerun_after_a_lost_worker():
    from harness.sweep.view import footer

    df = pd.DataFrame({"attempts": [1, 2, 1, 3, None]})
    assert "2 cell(s) ran again after their Ray worker or node was lost" in footer(df)
    assert "ran again" not in footer(pd.DataFrame({"attempts": [1, 1]}))


def test_unknown_executor_is_rejected(tmp_path):
    result = runner.invoke(app, tiny(tmp_path, "--variants", "gqa", "--executor", "slurm"))
    assert result.exit_code == 2
    assert "executor='slurm' is not one of ['local', 'ray']" in result.output


def test_a_driver_without_a_gpu_takes_the_device_facts_from_the_workers(tmp_path, ray, monkeypatch):
    """The driver's torch is never asked about the device (a CPU-only head node or laptop
    driving a GPU cluster would raise); run.json and every row describe a worker."""

    def no_device_here(device):
        raise AssertionError("Torch not compiled with CUDA enabled")

    monkeypatch.setattr(measure, "host_environment", no_device_here)
    cfg = sweep.SweepConfig(
        variants=("gqa",), seq_len=(16,), heads=(4,), kv_heads=(2,), modes=("fwd", "decode"), batch=1,
        head_dim=8, device="cpu", repeats=2, warmup=0, threads=0, out=str(tmp_path), executor="ray",
    )  # fmt: skip
    df = sweep.run(cfg)
    assert set(df["status"]) == {"ok"} and len(df) == 4
    env = json.loads((Path(df.attrs["run_dir"]) / "run.json").read_text())["environment"]
    assert env["host"] and env["device_name"]
    # threads=0 keeps each worker's own count: Ray gives a one-CPU worker one thread, and that,
    # not the driver's count, is what the rows and run.json say.
    assert set(df["threads"]) == {env["threads"]}


def _pid_and_threads(item):
    return os.getpid(), torch.get_num_threads()


def test_workers_live_across_cells_and_hold_their_thread_count(ray):
    pool = executors.RayExecutor(threads=1)
    out = list(pool.map(_pid_and_threads, list(range(8)), device=torch.device("cpu")))
    assert sorted(item for item, _, _ in out) == list(range(8))
    pids = {pid for _, (pid, _), _ in out}
    assert 1 <= len(pids) <= 2  # two one-CPU workers on a two-CPU cluster, each runs many cells
    assert {threads for _, (_, threads), _ in out} == {1}
    assert {attempts for _, _, attempts in out} == {1}
    assert pool.workers == []  # the devices went back to the cluster


def node(alive=True, **resources):
    return {"Alive": alive, "Resources": resources}


@pytest.mark.parametrize(
    "nodes, device, threads, label, expected",
    [
        ([node(GPU=4.0, CPU=64.0)], "cuda", 0, "", 4),  # one worker per GPU, whatever the host's cores
        ([node(GPU=4.0, CPU=64.0)], "cpu", 8, "", 8),
        ([node(CPU=2.0)], "cpu", 0, "", 2),
        ([node(CPU=1.0)], "cpu", 4, "", 0),
        ([node(CPU=3.0), node(CPU=3.0)], "cpu", 2, "", 2),  # node by node: a worker cannot span two
        ([node(CPU=2.0), node(False, CPU=8.0)], "cpu", 1, "", 2),  # a dead node holds none
        ([node(GPU=8.0, **{"accelerator_type:A100": 1}), node(GPU=2.0, **{"accelerator_type:H100": 1})],
         "cuda", 0, "H100", 2),
    ],
)  # fmt: skip
def test_capacity(nodes, device, threads, label, expected):
    assert cluster.capacity(nodes, torch.device(device), threads, label) == expected


def test_an_accelerator_type_no_node_carries_is_named_with_the_ones_there():
    nodes = [node(GPU=1.0, **{"accelerator_type:A100": 1}), node(CPU=4.0)]
    with pytest.raises(ValueError, match=r"accelerator_type='H100': .* labels there: \['A100'\]"):
        cluster.check_label(nodes, "H100")
    cluster.check_label(nodes, "A100")
