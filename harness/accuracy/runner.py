"""`attnbench accuracy`: train the tiny transformer with each variant on small real tasks, into CSV.

Python API (the CLI is a thin layer over it):

    cfg = harness.config.load(AccuracyConfig, "accuracy", profile="quick")
    df = harness.accuracy.runner.run(cfg)  # pandas.DataFrame, also <out>/<run_id>/accuracy.csv

The runs are tasks x seeds x variants x kv_heads (x init for digits: uptrained and scratch),
deduplicated by the g each variant resolves to (mha and mqa fix it). A pairing the registry
rules out (a multimodal variant on a task without visual tokens) is a row with status
`unsupported`; a failing run is a row with its status and error; the run goes on.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

import pandas as pd

import attn_variants as av
from attn_variants import plugins
from reports.marks import leaky

from .. import measure
from ..measure import timing
from ..records import CsvSink, check_writable, error_text, read_frame, write_run_json
from ..sweep.runner import new_run_dir
from ..variant_choice import VariantChoice, check_builds, parse_variants
from . import tasks
from .config import AccuracyConfig

TEXT_COLUMNS = ("options", "error", "init", "ablate")


@dataclass(frozen=True)
class Cell:
    """One run: a task, a variant (with options) at one resolved g, a seed and an init."""

    task: str
    choice: VariantChoice
    n_heads: int
    n_kv_heads: int
    seed: int
    init: tasks.Init
    unsupported: str = ""  # why the registry rules this pairing out ('' = it runs)

    @property
    def label(self) -> str:
        return f"{self.task} {self.choice.label(self.n_kv_heads)} {self.init} seed={self.seed}"


@dataclass(frozen=True)
class AccuracyRow:
    """One row of accuracy.csv. Column names are the ones reports/ reads (reports/load.py)."""

    run_id: str
    timestamp: str  # ISO 8601, when the run finished
    task: str
    variant: str
    options: str  # 'key=value;...' ('' = registry defaults)
    # scratch | uptrained (from the MHA model through from_mha), or uptrained-weights,
    # uptrained-activations (gqa's groups chosen by from_mha)
    init: str
    n_heads: int  # h
    n_kv_heads: int  # g after the variant's preset
    dim: int  # d
    layers: int
    seq_len: int  # n of the task's sequences
    n_visual: int  # m, image tokens (captions: leading; pairs: both images), else 0
    seed: int
    steps: int | None = None  # optimizer steps behind the evaluated weights
    accuracy: float | None = None  # held-out: fraction of answers / images / exact names right
    chance: float | None = None  # the accuracy of guessing (mqar 1/(vocab/2), digits and captions 1/10)
    loss: float | None = None  # mean training loss over the last 10% of steps
    wall_s: float | None = None  # seconds of the run (build, train, test)
    kv_cache_bytes: int | None = None  # every layer's cache at seq_len, batch 1 (GQA: L*2*g*n*e*itemsize)
    kv_heads_equiv: float | None = None  # the g of a GQA with this cache (mla: (kv_lora + rope) / 2e)
    # The task's model attends causally, and the variant is causal-safe (the registry's flag): a
    # row with causal True and causal_safe False is marked in the tables and figures.
    causal: bool | None = None
    causal_safe: bool | None = None
    status: str = "ok"  # ok | unsupported | invalid | error
    error: str = ""
    ablate: str = "none"
    device: str = ""  # cpu | cuda: where the model trained
    device_name: str = ""  # the GPU or CPU model
    threads: int = 0
    torch_version: str = ""
    git_commit: str = ""


COLUMNS = tuple(f.name for f in dataclasses.fields(AccuracyRow))


def cells(cfg: AccuracyConfig) -> list[Cell]:
    """Every run of `cfg`, task by task and seed by seed, duplicates (same resolved g) dropped."""
    plugins.load_all(cfg.plugins)  # their variants are named in cfg.variants
    choices = parse_variants(cfg.variants)
    found: dict[tuple, Cell] = {}
    for task_name in cfg.tasks:
        task = tasks.get(task_name)
        for seed in cfg.seeds:
            for choice in choices:
                for g in cfg.kv_heads:
                    spec = av.info(choice.name).resolve(av.AttnSpec(cfg.heads * 16, cfg.heads, g))
                    why = tasks.unsupported(task_name, choice.name)
                    for init in ("scratch",) if why else task.inits(choice.name, cfg):
                        why_init = why or tasks.unsupported(task_name, choice.name, init)
                        cell = Cell(task_name, choice, cfg.heads, spec.n_kv_heads, seed, init, why_init)
                        found.setdefault((task_name, choice, spec.n_kv_heads, seed, init), cell)
    # Scratch runs first within a task and seed, so digits' MHA source is trained (and timed)
    # in its own row, not inside the first uptrained one.
    order = {(c.task, c.seed): i for i, c in enumerate(found.values())}
    return sorted(found.values(), key=lambda c: (order[(c.task, c.seed)], c.init.startswith("uptrained")))


class Observer(Protocol):
    """Progress hooks (the CLI's rich progress bar)."""

    def start(self, total: int) -> None: ...

    def cell(self, cell: Cell, row: AccuracyRow) -> None: ...


def preflight(cfg: AccuracyConfig, run_dir: Path | None = None) -> list[Cell]:
    """`cells(cfg)`, with every input checked before any cell runs (ValueError): each distinct
    variant built once at the model's attention spec (its options), the device, then the output folder."""
    todo = cells(cfg)
    specs = ((c.choice, av.AttnSpec(cfg.dim, c.n_heads, c.n_kv_heads)) for c in todo if not c.unsupported)
    check_builds(specs)
    measure.resolve_device(cfg.device)  # 'cuda' without a GPU
    check_writable(Path(run_dir) if run_dir is not None else Path(cfg.out))
    return todo


def run(
    cfg: AccuracyConfig,
    *,
    run_dir: Path | None = None,
    observer: Observer | None = None,
    settings: dict | None = None,
) -> pd.DataFrame:
    """Train and test every cell; rows are flushed to <run_dir>/accuracy.csv as they finish.
    `settings` (which file the config came from) goes to run.json."""
    device = measure.resolve_device(cfg.device)
    cfg = dataclasses.replace(cfg, device=device.type)  # the tasks (Job.device) and run.json: the real one
    todo = preflight(cfg, run_dir)
    run_dir = Path(run_dir) if run_dir is not None else new_run_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    csv_path = run_dir / "accuracy.csv"
    t0 = time.perf_counter()
    with timing.threads(cfg.threads):
        env = measure.environment(device)
        write_run_json(run_dir, cfg, env, len(todo), command="accuracy", settings=settings)
        if observer:
            observer.start(len(todo))
        context: dict = {}  # shared across cells: digits' MHA source model per seed
        with CsvSink(csv_path, COLUMNS) as sink:
            for cell in todo:
                row = run_cell(cell, cfg, context, env, run_dir.name)
                sink.write(row)
                if observer:
                    observer.cell(cell, row)
    df = load(csv_path)
    df.attrs.update(run_dir=str(run_dir), csv=str(csv_path), wall_s=time.perf_counter() - t0)
    return df


def run_cell(cell: Cell, cfg: AccuracyConfig, context: dict, env: dict, run_id: str) -> AccuracyRow:
    """One row: the cell trained and tested, or why not (status and error; the run goes on)."""
    task = tasks.get(cell.task)
    start = time.perf_counter()
    fields: dict = dict(seq_len=task.seq_len(cfg), n_visual=getattr(task, "n_visual", lambda c: 0)(cfg))
    chance = round(task.chance(cfg), 6)
    if cell.unsupported:
        status, error = "unsupported", cell.unsupported
    else:
        job = tasks.Job(cell.choice.name, cell.n_heads, cell.n_kv_heads, cell.seed, cfg, cell.init,
                        dict(cell.choice.options))  # fmt: skip
        try:
            status, error, fields = "ok", "", dataclasses.asdict(task.run(job, context))
        except Exception as err:  # noqa: BLE001 (any failure is recorded, the run goes on)
            status = "invalid" if isinstance(err, ValueError) else "error"
            error = error_text(err)
    return AccuracyRow(
        kv_heads_equiv=kv_heads_equiv(cell, cfg),
        causal=task.causal,
        causal_safe=av.info(cell.choice.name).causal_safe,
        run_id=run_id,
        timestamp=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        task=cell.task,
        variant=cell.choice.name,
        options=cell.choice.options_text,
        init=cell.init,
        n_heads=cell.n_heads,
        n_kv_heads=cell.n_kv_heads,
        dim=cfg.dim,
        layers=cfg.layers,
        seed=cell.seed,
        chance=chance,
        wall_s=round(time.perf_counter() - start, 3),
        status=status,
        error=error,
        ablate=cfg.ablate,
        device=env["device"],
        device_name=env["device_name"],
        threads=env["threads"],
        torch_version=env["torch_version"],
        git_commit=env["git_commit"],
        **fields,
    )


def kv_heads_equiv(cell: Cell, cfg: AccuracyConfig) -> float | None:
    """The g of a GQA with this cell's cache (mla: (kv_lora + rope) / 2e); None for bad options."""
    spec = av.AttnSpec(cfg.dim, cell.n_heads, cell.n_kv_heads)
    try:
        return av.info(cell.choice.name).kv_heads_equiv(spec, dict(cell.choice.options))
    except ValueError:
        return None


def load(csv_path: Path) -> pd.DataFrame:
    """An accuracy CSV as a DataFrame, text columns as '' (not NaN) where empty."""
    return read_frame(csv_path, TEXT_COLUMNS)


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per task, variant, options, g and init: accuracy mean and std over ok seeds, and counts."""
    keys = ["task", "variant", "options", "n_kv_heads", "init"]
    df = df.assign(leak=leaky(df))
    ok = df[df["status"] == "ok"]
    stats = ok.groupby(keys, sort=False).agg(
        mean=("accuracy", "mean"), std=("accuracy", "std"), seeds=("accuracy", "size"),
        chance=("chance", "first"), loss=("loss", "mean"),
        kv_cache_bytes=("kv_cache_bytes", "median"), wall_s=("wall_s", "mean"),
    )  # fmt: skip
    rows = df.groupby(keys, sort=False).agg(
        runs=("status", "size"), statuses=("status", _statuses), leak=("leak", "any")
    )
    out = rows.join(stats, how="left").reset_index()
    out["std"] = out["std"].fillna(0.0)  # one seed: no spread (shown as n=1)
    out["seeds"] = out["seeds"].fillna(0).astype(int)
    return out


def _statuses(status: Sequence[str]) -> str:
    return ",".join(sorted(set(status) - {"ok"}))
