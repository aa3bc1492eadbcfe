"""render(run_dirs, out) -> the written files: every figure (PNG and SVG), index.html, summary.md."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

import runfiles as files

from . import accuracy_figures as af
from . import comparison as cmp
from . import comparison_figure as cf
from . import decision as dec
from . import generate_figures as gf
from . import kernel_figures as kf
from . import roofline as rf
from . import serving as sv
from . import sweep_figures as sf
from . import tables
from .load import Run, by_device, combined, device_key, load_runs
from .page import FigureEntry, Page, write_pages

DPI = 110  # about 1800 px wide for three panels: sharp in the page without huge files
REPORT_DIR = "report"


@dataclass(frozen=True)
class FigureSpec:
    name: str
    table: str  # "sweep", "accuracy" or "generate"
    needs: tuple[str, ...]  # columns that must exist and hold at least one value
    title: str
    caption: str
    draw: Callable[[pd.DataFrame], Figure]


def _specs(seq_len: int | None) -> list[FigureSpec]:
    lat, mem = ("latency_ms_median",), ("peak_mem_bytes",)
    return [
        FigureSpec("latency", "sweep", lat, "Latency against sequence length",
                   "Median per cell, band p10-p90, log-log: a column per mode, a row per group of at most "
                   "six series, mha in every row; the latency table gives each series' fitted slope.",
                   sf.latency_figure),
        FigureSpec("memory", "sweep", mem, "Memory and KV-cache size against sequence length",
                   "Measured transient peak per mode (allocation above the step's start); decode: the "
                   "step's resident bytes (weights + tokens + cache) plus that peak; the KV cache as the "
                   "variant holds it (kv_cache_bytes).", sf.memory_figure),
        FigureSpec("speedup_vs_mha", "sweep", ("n_heads", "n_kv_heads"), "Speedup against MHA",
                   "mha median / variant median at the same shape; n is the largest with a comparison "
                   "unless --seq-len is given. *: the cell ran another SDPA kernel than mha "
                   "(sdpa_backend), so that speedup compares kernels, not variants.",
                   lambda df: sf.speedup_figure(df, seq_len)),
        FigureSpec("tflops", "sweep", ("tflops",), "Achieved TFLOP/s",
                   "flops_effective (torch.utils.flop_counter, causal attention over the pairs it computes) "
                   "over the median latency.", sf.tflops_figure),
        FigureSpec("roofline", "sweep", rf.ROOFLINE_COLUMNS, "Roofline",
                   "Each ok cell at its arithmetic intensity (flops_effective / bytes_moved) and achieved "
                   "FLOP/s, under the roof of this machine's measured matmul FLOP/s and copy bandwidth "
                   "(attnbench calibrate).", rf.roofline_figure),
        FigureSpec("decode_throughput", "sweep", sv.SERVING_COLUMNS, "Decode throughput against batch size",
                   "tokens_per_s = b * q_len / median step, per variant, one panel per distribution of the "
                   "requests' cache lengths (--lengths), cache layout and q_len.", sv.throughput_figure),
        FigureSpec("backend_compile", "sweep", ("backend", "compile"), "Kernels and compilation",
                   "Median latency per backend and torch.compile mode at one shape (the largest n, or "
                   "--seq-len); c: first compiled call (compile_s), m: block-mask build (setup_s), "
                   "neither in the latency.", lambda df: kf.backend_compile_figure(df, seq_len)),
        FigureSpec("accuracy", "accuracy", (), "Accuracy per task",
                   "Mean over seeds with ±1 std; every seed is a dot.", af.accuracy_figure),
        FigureSpec("accuracy_vs_kv_cache", "accuracy", ("kv_cache_bytes",), "Accuracy against KV-cache size",
                   "The grouped-query trade-off: fewer KV heads, smaller cache.", af.tradeoff_figure),
        FigureSpec("generate", "generate", gf.GENERATE_COLUMNS, "Inside a decoder that generates",
                   "attnbench generate: attention's share of a decode step (timers around the attention "
                   "calls, at the generation's last context), the median time per output token (band "
                   "p10-p90), and each variant's speedup over mha on the whole decode step (solid) beside "
                   "its speedup on the attention calls alone (dashed), both from the share pass (one clock, "
                   "one context).", gf.generate_figure),
    ]  # fmt: skip


def _comparison_specs() -> list[FigureSpec]:
    return [
        FigureSpec("ratio", "sweep", ("latency_ms_median",), "Run against run, cell by cell",
                   f"B/A of the median latency per cell (each later run over the first), line at 1, grey "
                   f"band ±{cmp.THRESHOLD:g}; colour: the verdict (one run a side: drift between runs "
                   f"cannot be estimated, so the threshold alone); slowest at the top.", cf.ratio_figure),
    ]  # fmt: skip


def _compared(sweep: pd.DataFrame | None) -> bool:
    """Two or more runs hold a sweep, all on one device: each later one is compared with the
    first, cell by cell (latencies are never compared across devices)."""
    return sweep is not None and sweep["run"].nunique() > 1 and device_key(sweep).nunique() == 1


def _across_devices(sweep: pd.DataFrame | None) -> list[str]:
    """Why runs on several devices are not compared run against run (empty when they are not)."""
    if sweep is None or sweep["run"].nunique() < 2 or device_key(sweep).nunique() < 2:
        return []
    names = " and ".join(sorted(set(device_key(sweep))))
    return [f"ratio: the runs ran on {names}; latencies are not compared across devices"]


def default_out(run_dirs: list[Path]) -> Path:
    """<run>/report for one run; beside the first run, compare_<a>_vs_<b>..., for several."""
    if len(run_dirs) == 1:
        return Path(run_dirs[0]) / REPORT_DIR
    name = "compare_" + "_vs_".join(Path(p).resolve().name for p in run_dirs)
    if len(name) > 80:
        digest = hashlib.sha1("\n".join(str(Path(p).resolve()) for p in run_dirs).encode()).hexdigest()[:8]
        name = f"compare_{len(run_dirs)}_runs_{digest}"
    return Path(run_dirs[0]).resolve().parent / name


def _why_not(spec: FigureSpec, df: pd.DataFrame | None) -> str | None:
    if df is None:
        return f"{spec.name}: no {spec.table}.csv in these runs"
    missing = [c for c in spec.needs if c not in df.columns or df[c].isna().all()]
    if missing:
        return f"{spec.name}: {spec.table}.csv has no values in {missing}"
    if spec.name == "backend_compile" and not kf.has_axes(df):
        return f"{spec.name}: one backend and one compile mode only"
    if spec.name == "speedup_vs_mha" and not (df["variant"] == "mha").any():
        return f"{spec.name}: no mha rows to compare against"
    if spec.name == "speedup_vs_mha" and not (df["variant"] != "mha").any():
        return f"{spec.name}: only mha rows, nothing to compare"
    return None


def _save(fig: Figure, out: Path, name: str) -> list[Path]:
    paths = [out / f"{name}.png", out / f"{name}.svg"]
    for path in paths:
        fig.savefig(path, dpi=DPI, bbox_inches="tight")  # the legends hang below the axes
    return paths


def _tables(runs: list[Run], sweep, accuracy, seq_len, generate=None) -> list[tuple[str, pd.DataFrame, str]]:
    out = []
    if sweep is not None:
        out.append(
            ("Latency", tables.latency_table(sweep), "Median latency in ms; failed cells show status.")
        )
        if _why_not(_specs(seq_len)[2], sweep) is None:
            note = (
                ">1: faster than mha (no options) at the same shape, dtype, threads, backend and compile. "
                "*: another SDPA kernel than mha's; compares kernels, not variants."
            )
            out.append(("Speedup against MHA", tables.speedup_table(sweep, seq_len), note))
        for comp in cf.run_pairs(sweep) if _compared(sweep) else []:
            caption = " ".join([*cmp.header(comp), cmp.counts(comp) + "."]) + (
                f" Every cell: {cmp.common(comp)}." if cmp.common(comp) else ""
            )
            out.append((f"{comp.b} against {comp.a}", cmp.table(comp), caption))
    if accuracy is not None:
        note = "Mean ± sample std over n finished seeds (n=1: no spread). †: not causal-safe, causal task."
        out.append(("Accuracy", tables.accuracy_table(accuracy), note))
    if generate is not None:
        note = "Median time per output token; speedups over mha: the decode step, and its attention calls."
        out.append(("Generation", gf.generate_table(generate), note))
    return out


def _decision(runs: list[Run], out: Path) -> pd.DataFrame | None:
    """The first run's decide/decision.csv (or one in `out`), if `attnbench decide` wrote one."""
    paths = [out / "decision.csv", *(r.path / "decide" / "decision.csv" for r in runs)]
    found = next((p for p in paths if p.is_file()), None)
    return dec.load(found) if found is not None else None


def render(run_dirs: list[Path], out: Path | None = None, *, seq_len: int | None = None) -> list[Path]:
    """Draw every figure the runs' CSVs support, then index.html and summary.md; returns the files.

    Several runs are overlaid, their series labelled by run. A figure whose columns hold no
    values is listed on the page as not drawn, with the reason. Bad input raises ValueError.
    """
    loaded = load_runs([Path(p) for p in run_dirs])
    out = Path(out) if out is not None else default_out([r.path for r in loaded])
    runs = by_device(loaded)  # a run over several devices: one per device
    files.writable_folder(out)  # every input read and checked first; '' refused by the CLI
    frames = {name: combined(runs, name) for name in ("sweep", "accuracy", "generate")}
    written, entries, skipped = [], [], _across_devices(frames["sweep"])
    for spec in _specs(seq_len) + (_comparison_specs() if _compared(frames["sweep"]) else []):
        reason = _why_not(spec, frames[spec.table])
        if reason is not None:
            skipped.append(reason)
            continue
        written += _save(spec.draw(frames[spec.table]), out, spec.name)
        entries.append(FigureEntry(spec.name, spec.title, spec.caption))
    decision, lead = _decision(runs, out), []
    if decision is not None:  # `attnbench decide` ran on these runs: its answer leads the page
        written += _save(dec.figure(decision), out, "decision")
        entries.insert(0, FigureEntry("decision", "Which attention to ship", dec.CAPTION))
        lead = [("Which attention to ship", dec.readable(decision), dec.CAPTION)]
    page = Page(
        runs=[r.label for r in runs],
        figures=entries,
        tables=lead + _tables(runs, frames["sweep"], frames["accuracy"], seq_len, frames["generate"]),
        failures=tables.failures_table(runs),
        meta=tables.meta_table(runs),
        skipped=[s for s in skipped if not any(f"no {t}.csv" in s for t in frames)],
    )
    return written + write_pages(page, out)
