"""`attnbench decide`: read the runs given (or run the `decide` profile's sweep and accuracy),
build the decision table, mark the Pareto front, write decision.csv and its pages.

Every input is read and checked before anything is written: a missing folder, an unreadable CSV
or a bad setting is a ValueError (one line, exit 2 at the CLI) and leaves no files behind.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from reports import decision as decision_page
from reports.load import Run, load_run, unique_labels

from .. import config as config_mod
from ..records import check_writable
from . import pareto, table
from .config import DecideConfig


def read_runs(paths: Sequence[Path]) -> list[Run]:
    """Each run folder read; ValueError naming the folder or file that cannot be."""
    labels = unique_labels([Path(p) for p in paths])
    runs = []
    for path, label in zip(paths, labels, strict=True):
        try:
            runs.append(load_run(Path(path), label))
        except (pd.errors.ParserError, UnicodeDecodeError, OSError) as err:
            raise ValueError(f"cannot read the CSVs of {path}: {' '.join(str(err).split())}") from None
    return runs


def frames(runs: list[Run]) -> tuple[pd.DataFrame | None, pd.DataFrame | None, dict[str, float]]:
    """Sweep and accuracy rows of every run, each with its `source` (run name), and each run's
    ridge point (calibrated FLOP/s over bytes/s, from run.json) where it has one."""
    sweeps = [r.sweep.assign(source=r.label) for r in runs if r.sweep is not None]
    accs = [r.accuracy.assign(source=r.label) for r in runs if r.accuracy is not None]
    ridge = {}
    for r in runs:
        cal = r.meta.get("calibration") or {}
        if cal.get("peak_flops") and cal.get("peak_bytes_per_s"):
            ridge[r.label] = cal["peak_flops"] / cal["peak_bytes_per_s"]
    concat = lambda fs: pd.concat(fs, ignore_index=True) if fs else None  # noqa: E731
    return concat(sweeps), concat(accs), ridge


def decide(runs: list[Run], cfg: DecideConfig) -> pd.DataFrame:
    """The decision table with its `pareto` and `dominated_by` columns."""
    sweep, accuracy, ridge = frames(runs)
    rows = table.build(sweep, accuracy, cfg, ridge)
    objectives = [table.OBJECTIVES[name] for name in cfg.objectives]
    return pareto.front(rows, objectives)


def run_missing(cfg: DecideConfig, settings: config_mod.Settings) -> list[Path]:
    """No run folder given: the profile's sweep and accuracy run now; their folders."""
    from ..accuracy import runner as accuracy
    from ..sweep import SweepConfig
    from ..sweep import run as sweep_run

    given = {"variants": None if "all" in cfg.variants else list(cfg.variants), "plugins": list(cfg.plugins)}
    load = functools.partial(config_mod.load, settings=settings, profile=cfg.profile, overrides=given)
    sweep_cfg, acc_cfg = load(SweepConfig, "sweep"), load(accuracy.AccuracyConfig, "accuracy")
    accuracy.preflight(acc_cfg)
    swept = sweep_run(sweep_cfg, settings=settings.record(cfg.profile))
    trained = accuracy.run(acc_cfg, settings=settings.record(cfg.profile))
    return [Path(swept.attrs["run_dir"]), Path(trained.attrs["run_dir"])]


def write(result: pd.DataFrame, out: Path) -> list[Path]:
    """decision.csv, then decision.md, the figure and index.html from it (reports/decision.py)."""
    out.mkdir(parents=True, exist_ok=True)
    result.to_csv(out / "decision.csv", index=False)
    return decision_page.write(out)


def main(run_dirs: Sequence[Path], cfg: DecideConfig, settings: config_mod.Settings) -> list[Path]:
    """Read (or run) the runs, decide, write; the files written."""
    if run_dirs:
        runs = read_runs(run_dirs)
        result = decide(runs, cfg)  # every input checked before a file is written
        out = Path(cfg.out) if cfg.out else Path(run_dirs[0]) / "decide"
        check_writable(out)
    else:
        check_writable(Path(cfg.out) if cfg.out else Path("results"))
        paths = run_missing(cfg, settings)
        result = decide(read_runs(paths), cfg)
        out = Path(cfg.out) if cfg.out else paths[0] / "decide"
    return write(result, out)
