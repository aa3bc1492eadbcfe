"""A Ray sweep that loses a node: every cell still comes back once, at what cost in time.

    python benchmarks/ray_node_loss.py [--reps 2] [--remove-at 20] [--min-time-s 0]

Starts a local multi-node Ray cluster (ray.cluster_utils.Cluster: a head that runs no cells and
three one-CPU worker nodes), then sweeps 64 tiny CPU cells (gqa, h=8, g in 1,2,4,8, n in
16..128, fwd and decode, b in 1,2) with `--executor ray`, alternating a sweep with no loss and
one where a node is removed once `--remove-at` rows are written (from another thread, while the
driver goes on; the node removed is one whose worker has written a row, other than the
worker that wrote the last one, so it is in the middle of a cell). The node comes back before
the next sweep. Prints, per sweep: wall seconds (worker start included), rows, ok rows,
duplicated cells, rows that took more than one attempt; then the median time ratio.

The goal: 64 ok rows, no duplicate, time with the loss <= 1.5x the time without. Three one-CPU
nodes on a two-core machine run three workers on two cores: the figures are noisy there, and
losing one worker costs less than a third of the throughput.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

from harness.records import read_rows
from harness.sweep import runner as sweep
from harness.sweep.grid import row_key

LABELS = ("n0", "n1", "n2")
FAST_FAILURE = {"health_check_period_ms": 500, "health_check_failure_threshold": 2}


def config(out: Path, address: str, min_time_s: float) -> sweep.SweepConfig:
    return sweep.SweepConfig(
        variants=("gqa",), reference="none", seq_len=(16, 32, 64, 128), heads=(8,), kv_heads=(1, 2, 4, 8),
        modes=("fwd", "decode"), batch=(1, 2), head_dim=8, device="cpu", repeats=3, warmup=1, threads=1,
        min_time_s=min_time_s, out=str(out), executor="ray", ray_address=address,
    )  # fmt: skip


class RemoveANode:
    """After `at` rows, removes a busy node (see the module docstring) from another thread."""

    def __init__(self, cluster: Cluster, nodes: dict, at: int) -> None:
        self.cluster, self.nodes, self.at = cluster, nodes, at
        self.rows, self.seen, self.removed, self.thread = 0, [], None, None

    def start(self, total: int, done: int) -> None:
        pass

    def cell(self, cell, row) -> None:
        self.rows += 1
        self.seen.append(row.accelerator)
        others = [lab for lab in dict.fromkeys(reversed(self.seen)) if lab != row.accelerator]
        if self.rows >= self.at and others and self.removed is None:
            self.removed = others[0]
            node = self.nodes.pop(self.removed)
            self.thread = threading.Thread(target=self.cluster.remove_node, args=(node,))
            self.thread.start()


def one_sweep(cluster: Cluster, nodes: dict, out: Path, remove_at: int | None, min_time_s: float) -> dict:
    for label in LABELS:  # every node alive before each sweep
        if label not in nodes:
            nodes[label] = cluster.add_node(num_cpus=1, resources={f"accelerator_type:{label}": 1})
    cluster.wait_for_nodes()
    observer = RemoveANode(cluster, nodes, remove_at) if remove_at else None
    start = time.perf_counter()
    df = sweep.run(config(out, cluster.address, min_time_s), observer=observer)
    wall = time.perf_counter() - start
    if observer is not None and observer.thread is not None:
        observer.thread.join()
    rows = read_rows(Path(df.attrs["csv"]))
    counts = Counter(row_key(r) for r in rows)
    return dict(
        loss=remove_at is not None,
        wall_s=wall,
        rows=len(rows),
        ok=sum(r["status"] == "ok" for r in rows),
        duplicated=sum(n > 1 for n in counts.values()),
        retried=sum(int(r["attempts"] or 1) > 1 for r in rows),
        removed=observer.removed if observer else "",
        removed_after=observer.at if observer else 0,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2, help="pairs of sweeps (no loss, loss)")
    parser.add_argument("--remove-at", type=int, default=20, help="rows written before a node goes")
    parser.add_argument("--min-time-s", type=float, default=0.0, help="timed seconds per cell, at least")
    args = parser.parse_args()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "_system_config": FAST_FAILURE})
    nodes: dict = {}
    results = []
    try:
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
        with tempfile.TemporaryDirectory() as tmp:
            for rep in range(args.reps):
                for remove_at in (None, args.remove_at) if rep % 2 == 0 else (args.remove_at, None):
                    result = one_sweep(cluster, nodes, Path(tmp), remove_at, args.min_time_s)
                    results.append(result)
                    print(result, flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()
    base = statistics.median(r["wall_s"] for r in results if not r["loss"])
    lost = statistics.median(r["wall_s"] for r in results if r["loss"])
    print(f"median wall: no loss {base:.1f} s, one node lost {lost:.1f} s, ratio {lost / base:.2f}")


if __name__ == "__main__":
    main()
