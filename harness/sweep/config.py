"""The `[sweep]` settings of `attnbench sweep` (bench.toml's table; every field is also a CLI flag).

Apart from the runner (runner.py) so that one cell (cell.py), which reads the settings, imports
them without importing the runner that imports it: no import circle. The grid's fields are
GridConfig's (grid.py), shared with the check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..measure import workload
from .grid import GridConfig


@dataclass(frozen=True)
class SweepConfig(GridConfig):
    """The `[sweep]` table of bench.toml; every field is also a CLI flag. The grid's fields and
    their defaults are GridConfig's (harness/sweep/grid.py)."""

    repeats: int = 20  # timed calls per cell, at least
    # ...and more until the timed calls add up to this many seconds: fast cells (decode) would
    # otherwise be mostly harness overhead (build, prefill, FLOP and memory passes). 0: off.
    min_time_s: float = 0.0
    warmup: int = 3  # plain calls before the profiled call; the FLOP pass runs the step once too
    threads: int = 0  # torch.set_num_threads for the run; 0 keeps torch's default (it is recorded)
    # Where multimodal variants' image tokens sit: "prefix" (one image, then text) or
    # "interleaved" (`images` images between text, workload.modality_ids); rows say which.
    layout: Literal["prefix", "interleaved"] = "prefix"
    images: int = 2  # images of the interleaved layout
    seed: int = 0
    out: str = "results"
    # local: cells run one by one in this process. ray: one Ray task per cell, holding a whole
    # GPU (GPU sweeps) or one CPU slot per thread (CPU sweeps), so cells never share a device.
    # CUDA timing (no-ops on CPU; the `timing` column names the method): zero a 256 MiB buffer
    # before each fwd/fwd_bwd call so it starts with a cold L2 (triton's do_bench), and time
    # decode as replays of a captured CUDA graph (a decode step is mostly launch overhead).
    l2_flush: bool = True
    cuda_graph: bool = False
    # Cells whose fake-tensor peak estimate exceeds this many MiB become skipped_memory rows;
    # 0: on CUDA what the allocator can still get, on CPU no limit.
    memory_limit_mb: float = 0.0
    executor: Literal["local", "ray"] = "local"
    ray_address: str = ""  # '' starts a local Ray (or joins RAY_ADDRESS); 'auto' or HOST:PORT joins a cluster

    def __post_init__(self) -> None:
        super().__post_init__()
        lows = (
            ("repeats", 1),
            ("warmup", 0),
            ("threads", 0),
            ("min_time_s", 0),
            ("memory_limit_mb", 0),
            ("images", 1),
        )
        for name, low in lows:
            if getattr(self, name) < low:
                raise ValueError(f"{name}={getattr(self, name)} must be >= {low}")
        if self.layout not in workload.LAYOUTS:
            raise ValueError(f"layout={self.layout!r} is not one of {list(workload.LAYOUTS)}")
