"""The `[sweep]` settings of `attnbench sweep` (bench.toml's table; every field is also a CLI flag).

Apart from the runner (runner.py) so that the grid (grid.py) and one cell (cell.py), which both
read the settings, import them without importing the runner that imports them: no import circle.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import attn_variants as av
from attn_variants.registry import Mode

from ..measure import workload
from . import lengths

CompileMode = Literal["off", "default", "max-autotune"]


@dataclass(frozen=True)
class SweepConfig:
    """The `[sweep]` table of bench.toml; every field is also a CLI flag."""

    variants: tuple[str, ...] = ("all",)  # names, 'name:key=value:...' with options, or 'all'
    reference: str = "mha"  # added to the grid so every shape has a speedup baseline; 'none': don't
    seq_len: tuple[int, ...] = (256, 512, 1024, 2048)
    heads: tuple[int, ...] = (8,)
    kv_heads: tuple[int, ...] = (1, 2, 4, 8)
    modes: tuple[Mode, ...] = ("fwd", "fwd_bwd", "decode")
    # The kernel axis: each variant runs with each of these `backend` options (one given in
    # the variant's own options wins); the reference stays on sdpa. See attn_variants/backends.py.
    backend: tuple[str, ...] = ("sdpa",)
    # torch.compile(mode=..., fullgraph=True) axis; "off" is eager. The reference stays "off".
    compile: tuple[CompileMode, ...] = ("off",)
    batch: int | tuple[int, ...] = 2  # b, or several (tokens/s against batch size): read `batches`
    head_dim: int = 64  # e; the model width is d = h * e, so every h keeps the same head size
    # auto: bfloat16 on CUDA (no fused CUDA kernel takes float32 with h != g, see
    # attn_variants.backends.no_fused_gqa), float32 on CPU. A dtype given anywhere is kept.
    dtype: Literal["auto", "float32", "float64", "float16", "bfloat16"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA when torch sees one
    repeats: int = 20  # timed calls per cell, at least
    # ...and more until the timed calls add up to this many seconds: fast cells (decode) would
    # otherwise be mostly harness overhead (build, prefill, FLOP and memory passes). 0: off.
    min_time_s: float = 0.0
    warmup: int = 3  # plain calls before the profiled call, at least; the FLOP pass runs the step once too
    # ...and more until the warm-up calls add up to this many seconds, so a 0.1 ms step is not
    # timed cold (timing.warm_up). 0: `warmup` calls only.
    warmup_s: float = 0.1
    threads: int = 0  # torch.set_num_threads for the run; 0 keeps torch's default (it is recorded)
    visual_frac: float = 0.25  # multimodal variants: n_visual = round(visual_frac * seq_len)
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
        for name in ("variants", "seq_len", "heads", "kv_heads", "modes", "backend", "compile", "batches"):
            if not getattr(self, name):
                raise ValueError(f"empty grid: {name} has no values")
        for name in self.backend:
            av.get_backend(name)  # unknown names raise, listing the valid backends
        for b in (b for b in self.batches if b < 1):
            raise ValueError(f"batch={b} must be >= 1")
        for name in ("seq_len", "heads", "kv_heads"):
            bad = [v for v in getattr(self, name) if v <= 0]
            if bad:
                raise ValueError(f"{name} values must be positive; got {bad}")
        lows = (
            ("head_dim", 1),
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
        if not 0.0 <= self.visual_frac <= 1.0:
            raise ValueError(f"visual_frac={self.visual_frac} must be in [0, 1]")
        if self.layout not in workload.LAYOUTS:
            raise ValueError(f"layout={self.layout!r} is not one of {list(workload.LAYOUTS)}")
        self.length_dist  # noqa: B018  (parses `lengths`: a bad value raises here, before any cell)

    @property
    def batches(self) -> tuple[int, ...]:
        """The batch sizes (`batch` given as one int or several)."""
        return self.batch if isinstance(self.batch, tuple) else (self.batch,)

    @functools.cached_property
    def length_dist(self) -> lengths.Lengths:
        """`lengths` parsed (a length file is read once)."""
        return lengths.parse(self.lengths)
