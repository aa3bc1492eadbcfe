"""`attnbench generate`: each variant inside a small decoder, generating greedily, over context.

Python API (the CLI is a thin layer over it):

    cfg = harness.config.load(GenerateConfig, "generate", profile="gpu")
    df = harness.generate.run.run(cfg)     # pandas.DataFrame, also <out>/<run_id>/generate.csv

One row per variant x context length, written and flushed as it finishes (harness/records.py's
CsvSink); a failing cell is a row with its status and the run goes on. run.json beside the CSV
holds the resolved config and the machine.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import pandas as pd

from .. import measure
from ..measure import timing
from ..records import GENERATE, CsvSink, check_writable, read_frame, write_run_json
from ..sweep.runner import resolve_dtype
from ..variant_choice import VariantChoice, check_builds, parse_variants
from . import cell as cell_mod
from .cell import GenerateRow

CSV = "generate.csv"
COLUMNS = tuple(f.name for f in dataclasses.fields(GenerateRow))
TEXT_COLUMNS = (
    "options",
    "error",
    "tpot_samples_ms",
    "attn_share_method",
    "sdpa_backend",
    "timing",
    "compile",
    "cache_layout",
)
CompileMode = Literal["off", "default", "reduce-overhead", "max-autotune"]


@dataclass(frozen=True)
class GenerateConfig:
    """The `[generate]` table of bench.toml; every field is also a CLI flag."""

    variants: tuple[str, ...] = ("all",)  # names, 'name:key=value:...', or 'all'
    reference: str = "mha"  # added first: the speedups are over it; 'none' leaves it out
    context: tuple[int, ...] = (128, 512, 1024, 2048)  # P, prompt lengths: the axis of the report
    new_tokens: int = 32  # T, tokens generated (the first from the prefill, T - 1 decode steps)
    batch: int = 1  # b
    layers: int = 4  # L
    dim: int = 256  # d
    heads: int = 8  # h
    kv_heads: int = 2  # g for the variants that take one (mha and mqa fix theirs)
    vocab: int = 4096
    mlp_hidden: int = 0  # SwiGLU width; 0: LLaMA's 8d/3 rounded up to 64
    visual_frac: float = (
        0.25  # multimodal variants: the prompt's first round(visual_frac * P) are image tokens
    )
    dtype: Literal["auto", "float32", "float64", "float16", "bfloat16"] = "auto"  # auto: bf16 CUDA, fp32 CPU
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # The decode step outside attention under torch.compile (harness/generate/loop.py);
    # reduce-overhead replays it as CUDA graphs on a GPU.
    compile: CompileMode = "off"
    # The caches' layout: "padded" buffers, or "paged" (fixed-size pages in a seeded random order
    # read through a block table, attn_variants/paged.py), pages of `page_size` tokens.
    cache_layout: Literal["padded", "paged"] = "padded"
    page_size: int = 16
    warmup: int = 0  # untimed generations before the profiled one (which is itself untimed)
    share_steps: int = 20  # bracketed and plain decode steps each, for attn_share
    threads: int = 0  # torch.set_num_threads; 0 keeps torch's default (recorded in every row)
    seed: int = 0
    out: str = "results"
    # Outside variants imported first (attn_variants/plugins.py): module names or .py files;
    # bench.toml's top-level `plugins` and each --plugin add up here (harness/config.py).
    plugins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.variants or not self.context:
            raise ValueError(f"empty run: variants={list(self.variants)}, context={list(self.context)}")
        bad = [p for p in self.context if p < 1]
        if bad:
            raise ValueError(f"context lengths must be >= 1; got {bad}")
        ones = (
            "new_tokens",
            "batch",
            "layers",
            "dim",
            "heads",
            "kv_heads",
            "vocab",
            "share_steps",
            "page_size",
        )
        lows = {**dict.fromkeys(ones, 1), **dict.fromkeys(("mlp_hidden", "warmup", "threads"), 0)}
        for name, low in lows.items():
            if getattr(self, name) < low:
                raise ValueError(f"{name}={getattr(self, name)} must be >= {low}")
        if not 0.0 <= self.visual_frac < 1.0:
            raise ValueError(f"visual_frac={self.visual_frac} must be in [0, 1)")


def choices(cfg: GenerateConfig) -> list[VariantChoice]:
    """The variants of the run, the reference first."""
    return parse_variants(cfg.variants, cfg.reference)


def preflight(cfg: GenerateConfig, run_dir: Path | None = None) -> list[VariantChoice]:
    """Every input checked before any cell runs (ValueError): variants and their options built at
    the run's sizes, the device, the output folder."""
    picked = choices(cfg)
    check_builds((c, cell_mod.decoder_config(c, cfg).spec()) for c in picked)
    measure.resolve_device(cfg.device)
    check_writable(run_dir if run_dir is not None else cfg.out)
    return picked


def new_run_dir(cfg: GenerateConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(cfg.out) / f"{stamp}-{secrets.token_hex(2)}"


def run(
    cfg: GenerateConfig,
    *,
    run_dir: Path | None = None,
    on_row: Callable[[GenerateRow], None] | None = None,
    settings: dict | None = None,
) -> pd.DataFrame:
    """Measure every variant x context of `cfg` into <run_dir>/generate.csv; return the rows."""
    picked = preflight(cfg, run_dir)
    device = measure.resolve_device(cfg.device)
    cfg = dataclasses.replace(cfg, dtype=resolve_dtype(cfg.dtype, device))
    run_dir = Path(run_dir) if run_dir is not None else new_run_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    cells = [(c, p) for c in picked for p in cfg.context]
    t0 = time.perf_counter()
    with timing.threads(cfg.threads):
        env = measure.environment(device)
        write_run_json(run_dir, cfg, env, len(cells), settings=settings)
        with CsvSink(run_dir / CSV, COLUMNS) as sink:
            for choice, context in cells:
                row = cell_mod.measure_cell(choice, context, cfg, device, env, run_dir.name)
                sink.write(row)
                if on_row:
                    on_row(row)
    df = load(run_dir / CSV)
    df.attrs.update(run_dir=str(run_dir), csv=str(run_dir / CSV), wall_s=time.perf_counter() - t0)
    return df


def load(csv_path: Path) -> pd.DataFrame:
    """A generate CSV as a DataFrame, text columns '' where empty."""
    return read_frame(csv_path, TEXT_COLUMNS, GENERATE)
