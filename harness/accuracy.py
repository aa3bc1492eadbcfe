"""`attnbench accuracy`: train the tiny transformer with each variant on small real tasks, into CSV.

Python API (the CLI is a thin layer over it):

    cfg = harness.config.load(AccuracyConfig, "accuracy", profile="quick")
    df = harness.accuracy.run(cfg)       # pandas.DataFrame, also <out>/<run_id>/accuracy.csv

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
from typing import Literal, Protocol

import pandas as pd

import attn_variants as av

from . import measure, tasks, timing
from .model import ABLATIONS, Ablate
from .records import CsvSink, read_frame, write_run_json
from .sweep import new_run_dir
from .variant_choice import VariantChoice, parse_variants

TEXT_COLUMNS = ("options", "error", "init", "ablate")


@dataclass(frozen=True)
class AccuracyConfig:
    """The `[accuracy]` table of bench.toml; every field is also a CLI flag."""

    variants: tuple[str, ...] = ("all",)  # names, 'name:key=value:...' with options, or 'all'
    tasks: tuple[str, ...] = ("mqar", "digits", "captions", "pairs")
    seeds: tuple[int, ...] = (0, 1, 2)
    heads: int = 4  # h
    kv_heads: tuple[int, ...] = (2,)  # g for variants that take it (mha and mqa fix their own)
    dim: int = 64  # d
    layers: int = 2
    batch: int = 64
    mqar_steps: int = 400
    mqar_lr: float = 5e-3
    mqar_pairs: int = 8  # P key-value pairs, then P queries: n = 3P
    mqar_vocab: int = 64  # keys from [1, vocab/2), values from [vocab/2, vocab)
    mqar_test: int = 1000  # held-out sequences
    digits_steps: int = 600  # the MHA source's training, and every scratch run
    digits_lr: float = 3e-3
    digits_finetune_steps: int = 150  # after uptraining from the MHA source
    digits_finetune_lr: float = 1e-3
    digits_patch: int = 2  # p: 8x8 images as (8/p)^2 patches of p*p pixels
    digits_scratch: bool = True  # also train every grouped variant from scratch
    captions_steps: int = 500
    captions_lr: float = 3e-3
    captions_patch: int = 2
    pairs_steps: int = 600  # two images between text, both named in order (issue 17)
    pairs_lr: float = 3e-3
    pairs_patch: int = 4  # 4 patches of 4x4 pixels per image: n = 2*4 + 2 + 12 = 22
    pairs_test: int = 359  # held-out pairs (each held-out image first once), at most 359
    shift: int = 0  # > 0: digits, captions and pairs training images move by up to this many pixels
    ablate: Ablate = "none"  # zero-attention: attention outputs replaced by zeros (a control)
    threads: int = 1  # torch.set_num_threads for the run; 0 keeps torch's default
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA when torch sees one
    out: str = "results"

    def __post_init__(self) -> None:
        for name in ("variants", "tasks", "seeds", "kv_heads"):
            if not getattr(self, name):
                raise ValueError(f"empty run: {name} has no values")
        for task in self.tasks:
            tasks.get(task)  # unknown names raise, listing the valid tasks
        positive = ["heads", "dim", "layers", "batch", "mqar_pairs", "mqar_vocab", "mqar_test"]
        positive += [
            "digits_patch",
            "captions_patch",
            "pairs_patch",
            "pairs_lr",
            "pairs_test",
            "mqar_lr",
            "digits_lr",
            "digits_finetune_lr",
            "captions_lr",
        ]
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)} must be positive")
        counts = (
            "shift",
            "mqar_steps",
            "digits_steps",
            "digits_finetune_steps",
            "captions_steps",
            "pairs_steps",
        )
        counts += ("threads",)
        for name in counts:
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")
        if self.dim % self.heads:
            raise ValueError(f"dim={self.dim} is not divisible by heads={self.heads}")
        bad = [g for g in self.kv_heads if g <= 0 or self.heads % g]
        if bad:
            raise ValueError(f"kv_heads {bad} must be positive divisors of heads={self.heads}")
        if self.ablate not in ABLATIONS:
            raise ValueError(f"ablate={self.ablate!r} is not one of {list(ABLATIONS)}")


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
    init: str  # scratch | uptrained (from the MHA model through from_mha)
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
    kv_cache_bytes: int | None = None  # every layer's cache at seq_len, batch 1: L*2*g*n*e*itemsize
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
                        cell = Cell(task_name, choice, cfg.heads, spec.n_kv_heads, seed, init, why)
                        found.setdefault((task_name, choice, spec.n_kv_heads, seed, init), cell)
    # Scratch runs first within a task and seed, so digits' MHA source is trained (and timed)
    # in its own row, not inside the first uptrained one.
    order = {(c.task, c.seed): i for i, c in enumerate(found.values())}
    return sorted(found.values(), key=lambda c: (order[(c.task, c.seed)], c.init == "uptrained"))


class Observer(Protocol):
    """Progress hooks (the CLI's rich progress bar)."""

    def start(self, total: int) -> None: ...

    def cell(self, cell: Cell, row: AccuracyRow) -> None: ...


def run(
    cfg: AccuracyConfig, *, run_dir: Path | None = None, observer: Observer | None = None
) -> pd.DataFrame:
    """Train and test every cell; rows are flushed to <run_dir>/accuracy.csv as they finish."""
    device = measure.resolve_device(cfg.device)
    cfg = dataclasses.replace(cfg, device=device.type)  # the tasks (Job.device) and run.json: the real one
    todo = cells(cfg)
    run_dir = Path(run_dir) if run_dir is not None else new_run_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    csv_path = run_dir / "accuracy.csv"
    t0 = time.perf_counter()
    with timing.threads(cfg.threads):
        env = measure.environment(device)
        write_run_json(run_dir, cfg, env, len(todo), command="accuracy")
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
            error = f"{type(err).__name__}: {err}"[:500]
    return AccuracyRow(
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


def load(csv_path: Path) -> pd.DataFrame:
    """An accuracy CSV as a DataFrame, text columns as '' (not NaN) where empty."""
    return read_frame(csv_path, TEXT_COLUMNS)


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per task, variant, options, g and init: accuracy mean and std over ok seeds, and counts."""
    keys = ["task", "variant", "options", "n_kv_heads", "init"]
    ok = df[df["status"] == "ok"]
    stats = ok.groupby(keys, sort=False).agg(
        mean=("accuracy", "mean"), std=("accuracy", "std"), seeds=("accuracy", "size"),
        chance=("chance", "first"), loss=("loss", "mean"),
        kv_cache_bytes=("kv_cache_bytes", "median"), wall_s=("wall_s", "mean"),
    )  # fmt: skip
    rows = df.groupby(keys, sort=False).agg(runs=("status", "size"), statuses=("status", _statuses))
    out = rows.join(stats, how="left").reset_index()
    out["std"] = out["std"].fillna(0.0)  # one seed: no spread
    out["seeds"] = out["seeds"].fillna(0).astype(int)
    return out


def _statuses(status: Sequence[str]) -> str:
    return ",".join(sorted(set(status) - {"ok"}))
