"""`attnbench check`: the CI performance regression check (docs/, the regression checks).

Python API (the CLI is a thin layer over it):

    cfg = harness.config.load(CheckConfig, "check", profile="ci")
    results = harness.check.ratios.measure_all(cfg)  # per-round ratios of every cell
    baseline = harness.check.baseline
    frame = baseline.read(baseline.path_for(cfg.baseline, env))  # refuses a missing file
    decisions = harness.check.ratios.compare_all(results, baseline.samples(frame), cfg)

Absolute times do not carry over between runs of a shared CI machine, so each cell (variant x
shape x mode) is timed against a reference, mha through SDPA at the same shape, interleaved
in this process: every round times the variant and the reference once each, in alternating
order, and keeps the ratio variant / reference. The ratios are compared with the committed
baseline's by benchstats/. The reference itself is not a cell: its ratio is 1 by
definition.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

import attn_variants as av
import benchstats as stats
from attn_variants import plugins
from attn_variants.backends import is_unavailable

from .. import measure
from ..measure import interleave as compare
from ..measure import timing, workload
from ..records import check_writable, error_text
from ..sweep.grid import Cell, GridConfig, expand
from ..variant_choice import VariantChoice, check_builds


@dataclass(frozen=True)
class CheckConfig(GridConfig):
    """The `[check]` table of bench.toml (and `[profiles.NAME.check]`). The grid's fields are
    GridConfig's (harness/sweep/grid.py); the check's own defaults follow. A variant named
    plainly as the reference is left out: every cell is timed against it. The reference stays
    mha through sdpa, uncompiled, so a compiled cell's ratio is against eager mha."""

    seq_len: tuple[int, ...] = (128, 512)
    kv_heads: tuple[int, ...] = (2,)  # g < h, so the grouped variants run grouped (mha/mqa fix g)
    batch: int = 1
    head_dim: int = 32
    dtype: Literal["float32", "float64", "float16", "bfloat16"] = "float32"
    device: Literal["auto", "cpu", "cuda"] = "cpu"
    rounds: int = 30  # ratio samples per cell; 30 vs 30 can reach p ~ 1e-17, far below alpha
    passes: int = 3  # the rounds are split over this many passes through the grid (measure_all)
    warmup: int = 3  # untimed calls of the variant and the reference before the rounds
    # Each sample repeats the call until it lasts this long: a decode step at these sizes is
    # ~0.1 ms, where timer resolution and one Python hiccup would dominate a single call.
    min_sample_s: float = 0.01
    # One thread: on a shared 2-core machine two OpenMP threads stall at every barrier when
    # another process takes a core; the ratio would measure the neighbours, not the code.
    threads: int = 1
    tolerance: float = 0.15  # a ratio may grow this much before it counts (CI noise budget)
    alpha: float = 0.01  # significance level of the one-sided Mann-Whitney U test, per cell
    # Committed; rewrite with --update-baseline. '{device_name}' in it becomes the slug of the
    # device's name (gpu-{device_name}.csv -> gpu-nvidia-h100-80gb-hbm3.csv): one file per GPU model.
    baseline: str = "benchmarks/baselines/ci-cpu.csv"
    seed: int = 0
    out: str = "results"  # every run writes check.csv, run.json and benchmark.json to <out>/<run_id>/
    # "time": interleaved ratios to the reference (above). "instructions": each cell's
    # instruction count under callgrind against a committed count (harness/check/instructions.py);
    # deterministic to ~0.03%, so a 1% tolerance holds on a noisy machine.
    metric: Literal["time", "instructions"] = "time"
    instructions_calls: int = 3  # counted calls per cell; the median is compared (robust to one odd call)
    instructions_tolerance: float = 0.01  # a count may grow 1% before it is REGRESSED
    instructions_baseline: str = "benchmarks/baselines/ci-instructions.csv"
    instructions_jobs: int = 2  # valgrind processes side by side (one core each); counts don't depend on it
    # Modules or .py files imported before the grid is built (attn_variants/plugins.py), e.g. one
    # that registers a project's own variant; bench.toml's top-level `plugins` and each --plugin
    # add up here (harness/config.py). The callgrind child imports them too.
    plugins: tuple[str, ...] = ()
    # A commit (any git revision) to measure here side by side with this checkout instead of
    # reading the baseline's figures (harness/check/against.py); "" = the baseline's figures for this
    # machine model, or, where it has none, the baseline's own commit measured here.
    against: str = ""
    # Where the baseline has this machine model's figures and its commit is here too, which
    # reference wins: "figures" (no extra time), or "commit", measured side by side with this
    # checkout (twice the time; drift and load hit both sides alike). The other is the fallback.
    prefer: Literal["figures", "commit"] = "figures"

    def __post_init__(self) -> None:
        super().__post_init__()
        lows = (("rounds", 1), ("passes", 1), ("warmup", 0), ("threads", 0))
        lows += (("instructions_calls", 1), ("instructions_jobs", 1))
        for name, low in lows + (("min_sample_s", 0),):
            if getattr(self, name) < low:
                raise ValueError(f"{name}={getattr(self, name)} must be >= {low}")
        if not 0 < self.tolerance < 1 or not 0 < self.alpha < 1:
            raise ValueError(f"tolerance={self.tolerance} and alpha={self.alpha} must be in (0, 1)")
        if not 0 < self.instructions_tolerance < 1:
            raise ValueError(f"instructions_tolerance={self.instructions_tolerance} must be in (0, 1)")
        if self.passes > self.rounds:
            raise ValueError(f"passes={self.passes} must be <= rounds={self.rounds}")
        if stats.smallest_p(self.rounds, self.rounds) >= self.alpha:
            raise ValueError(
                f"rounds={self.rounds} can never reach alpha={self.alpha} (smallest possible "
                f"p = {stats.smallest_p(self.rounds, self.rounds):.3g}): the check could not fail"
            )


@dataclass(frozen=True)
class Result:
    """One cell of this run: its per-round ratios, or why it has none."""

    cell: Cell
    status: Literal["ok", "unsupported", "error"]
    error: str = ""
    ratios: tuple[float, ...] = ()  # variant / reference, one per round
    variant_s: tuple[float, ...] = ()  # per-call seconds of each round, for the reader (not compared)
    reference_s: tuple[float, ...] = ()

    @property
    def name(self) -> str:
        return cell_name(self.cell)

    @property
    def variant_ms(self) -> float:
        return timing.summarize(self.variant_s).median * 1e3

    @property
    def reference_ms(self) -> float:
        return timing.summarize(self.reference_s).median * 1e3


def cell_name(cell: Cell) -> str:
    """'gqa_g2 fwd n=128 h=8' ('... compile=default' when compiled): the label in the table, the
    messages and the baseline's `cell` column."""
    name = f"{cell.choice.label_for(cell.spec)} {cell.mode} n={cell.seq_len} h={cell.spec.n_heads}"
    return name if cell.compile == "off" else f"{name} compile={cell.compile}"


def cells(cfg: CheckConfig) -> list[Cell]:
    """The grid's cells (harness/sweep/grid.py `expand`), the reference left out, after loading
    `cfg.plugins` (they register variants, or patch them: attn_variants/plugins.py)."""
    plugins.load_all(cfg.plugins)
    return expand(cfg, reference_first=False)[0]


def preflight(cfg: CheckConfig, todo: list[Cell] | None = None) -> list[Cell]:
    """`cells(cfg)` (`todo`, if the caller expanded them already), with every input checked
    before any timing (ValueError): each distinct variant and the reference built once at their
    specs (options), then the output folder."""
    todo = cells(cfg) if todo is None else todo
    reference = VariantChoice(cfg.reference)
    entry = av.info(cfg.reference)  # an unknown reference names the valid variants
    ref_specs = [(reference, entry.resolve(av.AttnSpec(c.spec.dim, c.spec.n_heads))) for c in todo]
    check_builds([*((c.choice, c.spec) for c in todo), *ref_specs])
    check_writable(cfg.out)
    return todo


def measure_all(
    cfg: CheckConfig, progress: Callable[[Result], None] | None = None, todo: Sequence[Cell] | None = None
) -> list[Result]:
    """Every cell of `cfg` (`todo`, if the caller expanded them already), measured against the
    reference with `cfg.threads` threads.

    The rounds of a cell are split over `cfg.passes` passes through the whole grid, so a burst
    of load from another job (seconds long, on a shared CI machine) lands on a share of a
    cell's rounds instead of all of them and cannot move its median alone.
    """
    device = measure.resolve_device(cfg.device)
    av.info(cfg.reference)  # an unknown reference names the valid variants before any work
    todo = cells(cfg) if todo is None else todo
    results = {cell.key(): Result(cell, "ok") for cell in todo}
    flush = timing.L2Flush(device)  # as the sweep: fwd and fwd_bwd start with a cold L2 on CUDA
    with timing.threads(cfg.threads):
        for rounds in pass_rounds(cfg.rounds, cfg.passes):
            references: dict[tuple, Callable[[], object]] = {}  # rebuilt each pass (same seed)
            for cell in todo:
                done = results[cell.key()]
                if done.status == "ok":
                    measured = measure_cell(cell, cfg, device, references, rounds, flush)
                    results[cell.key()] = merge(done, measured)
                if progress:
                    progress(results[cell.key()])
    return list(results.values())


def pass_rounds(rounds: int, passes: int) -> list[int]:
    """`rounds` split over `passes` as evenly as possible: (30, 3) -> [10, 10, 10]."""
    return [rounds // passes + (i < rounds % passes) for i in range(passes)]


def merge(a: Result, b: Result) -> Result:
    """The rounds of two passes of one cell as one result (a failed pass fails the cell)."""
    if b.status != "ok" or not a.ratios:
        return b
    return Result(
        a.cell, "ok", "", a.ratios + b.ratios, a.variant_s + b.variant_s, a.reference_s + b.reference_s
    )


def measure_cell(
    cell: Cell,
    cfg: CheckConfig,
    device: torch.device,
    references: dict[tuple, Callable[[], object]],
    rounds: int,
    flush: Callable[[], None] | None = None,
) -> Result:
    """The cell's ratios; a failure becomes status 'error' (or 'unsupported' per the registry)."""
    gc.collect()
    try:
        step = cell_step(cell, cfg, device)
        key = (cell.mode, cell.batch, cell.seq_len, cell.n_visual, cell.spec.n_heads, cell.spec.dim)
        if key not in references:  # one reference per shape, shared by the variants at that shape
            spec = av.info(cfg.reference).resolve(av.AttnSpec(cell.spec.dim, cell.spec.n_heads))
            references[key] = _step(cfg.reference, {}, spec, cell, cfg, device, "off")
        samples = compare.interleaved(
            {"variant": step, "reference": references[key]},
            device,
            rounds=rounds,
            warmup=cfg.warmup,
            min_sample_s=cfg.min_sample_s,
            flush=flush if cell.mode != "decode" else None,
        )
        times, ref_times = samples["variant"], samples["reference"]
    except workload.UnsupportedMode as err:
        return Result(cell, "unsupported", str(err))
    except RuntimeError as err:
        status = "unsupported" if is_unavailable(err) else "error"  # a forced kernel refused
        return Result(cell, status, error_text(err))
    except Exception as err:  # noqa: BLE001 (a failing cell is reported and fails the check)
        return Result(cell, "error", error_text(err))
    ratios = tuple(a / b for a, b in zip(times, ref_times, strict=True))
    return Result(cell, "ok", "", ratios, tuple(times), tuple(ref_times))


def cell_step(cell: Cell, cfg: CheckConfig, device: torch.device) -> Callable[[], object]:
    """The step the cell measures (its variant, options, mode and shape), built on `device`."""
    return _step(cell.choice.name, dict(cell.choice.options), cell.spec, cell, cfg, device, cell.compile)


def _step(
    variant: str,
    options: dict,
    spec: av.AttnSpec,
    cell: Cell,
    cfg: CheckConfig,
    device: torch.device,
    compile: str,
) -> Callable[[], object]:
    return workload.build(
        variant,
        spec,
        cell.mode,
        batch=cell.batch,
        seq_len=cell.seq_len,
        n_visual=cell.n_visual,
        dtype=measure.DTYPES[cfg.dtype],
        device=device,
        options=options,
        seed=cfg.seed,
        compile=compile,
    ).step


def compare_all(
    results: Sequence[Result], baseline: Mapping[tuple[str, ...], Sequence[float]], cfg: CheckConfig
) -> Iterator[tuple[Result, stats.Decision | None]]:
    """Each result with its decision against `baseline` (`Cell.key()` -> ratios); None if it failed."""
    for r in results:
        if r.status != "ok":
            yield r, None
            continue
        yield r, stats.decide(r.ratios, baseline.get(r.cell.key()), tolerance=cfg.tolerance, alpha=cfg.alpha)
