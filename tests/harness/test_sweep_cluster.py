"""`--executor ray` on a real multi-node Ray cluster on this machine (ray.cluster_utils.Cluster):
a head that runs no cells and three one-CPU worker nodes, each labelled with its own Ray
accelerator type (A, B, C) standing in for a GPU model. A node removed in the middle of a sweep
loses no cell and duplicates none; a driver killed with SIGKILL finishes with --resume;
--accelerator-type pins the cells to one label; a run over mixed labels is reported label by
label.

Needs `attnbench[ray]` (skipped without it). Marked `cluster`, out of the default run (about 80 s
on two busy cores): `python -m pytest -q -m cluster`. The cluster starts once for the module
(about 15 s); each sweep starts its own workers."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import torch

from harness.records import read_rows
from harness.sweep import cell as sweep_cell
from harness.sweep import cluster as cluster_mod
from harness.sweep import executors
from harness.sweep import runner as sweep
from harness.sweep.grid import row_key
from reports.render import render

pytestmark = pytest.mark.cluster  # out of the default run: `pytest -m cluster` (.ci/run runs it)
ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

LABELS = ("A", "B", "C")
REPO = Path(__file__).resolve().parents[2]
# The GCS notices a node gone within about a second, not the default 15 s.
FAST_FAILURE = {"health_check_period_ms": 500, "health_check_failure_threshold": 2}


@pytest.fixture(scope="module")
def cluster():
    if ray.is_initialized():
        ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "_system_config": FAST_FAILURE})
    c.nodes_by_label = {}
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


@pytest.fixture
def nodes(cluster):
    """The three labelled worker nodes, alive (a test that removed one gets it back)."""
    for label in LABELS:
        if label not in cluster.nodes_by_label:
            cluster.nodes_by_label[label] = cluster.add_node(
                num_cpus=1, resources={f"accelerator_type:{label}": 1}
            )
    cluster.wait_for_nodes()
    if not ray.is_initialized():
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
    return cluster


def config(tmp_path, cluster, **kw):
    """Tiny CPU cells, each timed for about 0.2 s so that every worker is busy most of the time."""
    settings = dict(
        variants=("gqa",), reference="none", seq_len=(16, 32), heads=(4,), kv_heads=(1, 2, 4),
        modes=("fwd", "decode"), batch=1, head_dim=8, device="cpu", repeats=2, warmup=0, threads=1,
        min_time_s=0.2, out=str(tmp_path), executor="ray", ray_address=cluster.address,
    )  # fmt: skip
    return sweep.SweepConfig(**{**settings, **kw})


def keys(rows):
    return Counter(row_key(r) for r in rows)


MEASURE_ON_HOST = sweep_cell.measure_on_host
STALL = {"marker": ""}  # travels with the function (pickled by value)


def _stall_once_on_b(cell, **kwargs):
    """The first cell a worker on node B runs says so (a marker file) and sleeps, so that the
    test removes B in the middle of it; every other cell, and the rerun, is measured."""
    marker = Path(STALL["marker"])
    if not marker.exists() and cluster_mod.node_label() == "B":
        marker.write_text(cell.mode)
        time.sleep(60)
    return MEASURE_ON_HOST(cell, **kwargs)


def _remove_when_marked(cluster, marker, label, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    cluster.remove_node(cluster.nodes_by_label.pop(label))


def test_a_node_removed_mid_sweep_loses_no_cell_and_duplicates_none(tmp_path, nodes, monkeypatch):
    monkeypatch.setattr(sweep_cell, "measure_on_host", _stall_once_on_b)
    monkeypatch.setitem(STALL, "marker", str(tmp_path / "stalled"))
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    remover = threading.Thread(target=_remove_when_marked, args=(nodes, tmp_path / "stalled", "B"))
    remover.start()
    try:
        df = sweep.run(config(tmp_path, nodes))
    finally:
        remover.join()
    rows = read_rows(Path(df.attrs["csv"]))
    assert len(rows) == 12 and set(keys(rows).values()) == {1}  # every cell once
    assert {r["status"] for r in rows} == {"ok"}, [r["error"] for r in rows if r["error"]]
    retried = [r for r in rows if int(r["attempts"]) > 1]
    assert len(retried) == 1 and retried[0]["mode"] == (tmp_path / "stalled").read_text()
    assert retried[0]["accelerator"] in ("A", "C")
    assert all(r["host"] and r["device_name"] for r in rows)
    # the rows came from nodes of two "models": the report draws each as its own run
    ran_on = {r["accelerator"] for r in rows}
    assert len(ran_on) == 2 and ran_on <= set(LABELS) - {"B"}
    render([Path(df.attrs["run_dir"])], tmp_path / "report")
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert all(f"{rows[0]['device_name']} [{label}]" in summary for label in ran_on)
    assert "latencies are not compared across devices" in (tmp_path / "report" / "index.html").read_text()


def test_accelerator_type_pins_every_cell_to_nodes_of_that_label(tmp_path, nodes):
    df = sweep.run(config(tmp_path, nodes, accelerator_type="B", modes=("fwd",), min_time_s=0.0))
    assert len(df) == 6 and set(df["status"]) == {"ok"}
    assert set(df["accelerator"]) == {"B"}
    env = json.loads((Path(df.attrs["run_dir"]) / "run.json").read_text())["environment"]
    assert env["accelerator"] == "B" and env["code_hash"] == cluster_mod.code_hash()


def _imported_from(item):
    import attn_variants
    import harness

    return harness.__file__, attn_variants.__file__, cluster_mod.worker_code_hash(())


def test_workers_import_the_drivers_code_shipped_to_them(nodes):
    """Not this checkout (which the nodes could import too: they share this machine), nor the
    installed attnbench: the copy Ray's runtime_env unpacked for the worker."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    pool = executors.RayExecutor(address=nodes.address, threads=1)
    ((_, (harness_file, variants_file, code), _),) = pool.map(_imported_from, [0], device=torch.device("cpu"))
    for path in (harness_file, variants_file):
        assert "runtime_resources" in path and not Path(path).is_relative_to(REPO), path
    assert code == cluster_mod.code_hash()


def test_a_label_no_node_carries_is_refused_before_any_cell(tmp_path, nodes):
    with pytest.raises(ValueError, match=r"accelerator_type='H100'.*\['A', 'B', 'C'\]"):
        sweep.run(config(tmp_path, nodes, accelerator_type="H100"))


def test_a_driver_killed_with_sigkill_finishes_with_resume(tmp_path, nodes):
    (tmp_path / "empty.toml").write_text("")
    out = tmp_path / "out"
    cmd = [
        sys.executable, "-m", "harness.cli", "sweep", "--config", str(tmp_path / "empty.toml"),
        "--out", str(out), "--device", "cpu", "--variants", "gqa", "--reference", "none",
        "--seq-len", "16,32", "--heads", "4", "--kv-heads", "1,2,4", "--modes", "fwd,decode", "--batch", "1",
        "--head-dim", "8", "--repeats", "2", "--warmup", "0", "--threads", "1", "--min-time-s", "0.2",
        "--executor", "ray", "--ray-address", nodes.address, "--no-report",
    ]  # fmt: skip
    path = os.pathsep.join(
        [str(REPO), str(REPO / "attn_variants" / "compat"), os.environ.get("PYTHONPATH", "")]
    )
    driver = subprocess.Popen(cmd, cwd=tmp_path, env={**os.environ, "PYTHONPATH": path},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        csv = _wait_for_rows(out, 3, driver)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    before = read_rows(csv)
    assert 3 <= len(before) < 12
    df = sweep.run(sweep.resume_config(csv.parent), run_dir=csv.parent)
    rows = read_rows(csv)
    assert len(rows) == 12 and set(keys(rows).values()) == {1}
    assert {r["status"] for r in rows} == {"ok"}
    assert df.attrs["measured"] == 12 - len(before)


def _wait_for_rows(out, n, driver, timeout=120.0):
    """The sweep.csv of the run under `out` once it holds `n` rows."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert driver.poll() is None, "the driver ended before it could be killed"
        for csv in out.glob("*/sweep.csv"):
            if len(read_rows(csv)) >= n:
                return csv
        time.sleep(0.1)
    raise AssertionError(f"no {n} rows under {out} in {timeout} s")
