"""The `[sweep]` settings of `attnbench sweep` (bench.toml's table; every field is also a CLI flag).

Apart from the runner (runner.py) so that one cell (cell.py), which reads the settings, imports
them without importing the runner that imports it: no import circle. The grid's fields are
GridConfig's (grid.py), shared with the check.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Literal

from ..measure import workload
from . import lengths
from .grid import Cell, GridConfig


@dataclass(frozen=True)
class SweepConfig(GridConfig):
    """The `[sweep]` table of bench.toml; every field is also a CLI flag. The grid's fields and
    their defaults are GridConfig's (harness/sweep/grid.py)."""

    repeats: int = 20  # timed calls per cell, at least
    # ...and more until the timed calls add up to this many seconds: fast cells (decode) would
    # otherwise be mostly harness overhead (build, prefill, FLOP and memory passes). 0: off.
    min_time_s: float = 0.0
    warmup: int = 3  # plain calls before the profiled call, at least; the FLOP pass runs the step once too
    # ...and more until the warm-up calls add up to this many seconds, so a 0.1 ms step is not
    # timed cold (timing.warm_up). 0: `warmup` calls only.
    warmup_s: float = 0.1
    threads: int = 0  # torch.set_num_threads for the run; 0 keeps torch's default (it is recorded)
    # Where multimodal variants' image tokens sit: "prefix" (one image, then text) or
    # "interleaved" (`images` images between text, workload.modality_ids); rows say which.
    layout: Literal["prefix", "interleaved"] = "prefix"
    images: int = 2  # images of the interleaved layout
    seed: int = 0
    # Decode as served (harness/sweep/lengths.py): each decode cell's b requests get their own
    # cache length, drawn with `seed` from `lengths` (fixed, uniform:LO-HI, zipf:A:MAX,
    # lognormal:MU:SIGMA:MAX, file:PATH; a drawn cell's seq_len is its longest request); the
    # cache is "padded" or "paged" (pages of `page_size` tokens, attn_variants/paged.py); each
    # step decodes `q_len` tokens per request (> 1: speculative decode).
    lengths: str = "fixed"
    kv_layout: Literal["padded", "paged"] = "padded"
    page_size: int = 16
    q_len: int = 1
    out: str = "results"
    # Outside variants imported first (attn_variants/plugins.py): module names or .py files;
    # bench.toml's top-level `plugins` and each --plugin add up here (harness/config.py);
    # run.json keeps them, so --resume and Ray workers import the same.
    plugins: tuple[str, ...] = ()
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
    # Ray: a cell whose worker died (its process or node was lost) runs again on another worker
    # up to this many more times; a cell that raised never does. The row says `attempts`.
    retries: int = 2
    # Ray: only nodes of this accelerator label (Ray's `accelerator_type:<label>` resource, e.g.
    # H100, A100) run cells, so a sweep on a cluster of mixed GPU models times one model.
    accelerator_type: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        lows = (
            ("page_size", 1),
            ("q_len", 1),
            ("repeats", 1),
            ("warmup", 0),
            ("threads", 0),
            ("min_time_s", 0),
            ("warmup_s", 0),
            ("memory_limit_mb", 0),
            ("images", 1),
            ("retries", 0),
        )
        for name, low in lows:
            if getattr(self, name) < low:
                raise ValueError(f"{name}={getattr(self, name)} must be >= {low}")
        if self.layout not in workload.LAYOUTS:
            raise ValueError(f"layout={self.layout!r} is not one of {list(workload.LAYOUTS)}")
        self.length_dist  # noqa: B018  (parses `lengths`: a bad value raises here, before any cell)

    @functools.cached_property
    def length_dist(self) -> lengths.Lengths:
        """`lengths` parsed (a length file is read once)."""
        return lengths.parse(self.lengths)

    def seq_lens(self, mode: str, batch: int) -> tuple[int, ...]:
        """The seq_len axis; a decode cell whose lengths are drawn has one: the longest drawn."""
        if mode != "decode" or self.length_dist.fixed:
            return self.seq_len
        return (max(self.length_dist.draw(batch, 0, self.seed)),)

    def serve(self, cell: Cell) -> Cell:
        """A decode cell with the sweep's serving settings; other modes unchanged."""
        if cell.mode != "decode":
            return cell
        dist = self.length_dist
        drawn = () if dist.fixed else tuple(dist.draw(cell.batch, cell.seq_len, self.seed))
        return replace(
            cell, lengths=drawn, length_dist=dist.text, kv_layout=self.kv_layout, page_size=self.page_size,
            q_len=self.q_len,
        )  # fmt: skip
