"""The committed baseline of `attnbench check`: a CSV of per-cell ratio statistics and samples.

One row per cell and machine model. Besides the median and p10/p90 it keeps every per-round
ratio (`ratio_samples`, ';'-separated), because the check's test compares two sets of rounds
(benchstats/). Each row carries the environment it was measured on, its `machine` model
(harness/measure/machine.py) and its `git_commit`: the file stands for one commit, and holds per machine
model the figures measured there. The check reads only its own model's rows; for any other
model it measures that commit here (harness/check/against.py), never another model's figures.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

import runfiles as files
from benchstats import Decision

from ..measure.timing import summarize
from ..sweep.grid import row_key
from .ratios import CheckConfig, Result

KEY = (  # `Cell.key()`, as grid.row_key reads it
    "variant", "options", "mode", "batch", "seq_len", "n_visual", "n_heads", "n_kv_heads", "head_dim",
    "dtype",
)  # fmt: skip
# `Cell.key()`'s last part; a baseline written before it existed was all "off".
OPTIONAL = {"compile": "off"}
ENVIRONMENT = ("device", "device_name", "machine", "torch_version", "threads", "git_commit", "host", "date")
COLUMNS = (
    "cell",  # 'gqa_g2 fwd n=128 h=8', as the check prints it
    *KEY,
    *OPTIONAL,
    "reference",  # the variant the ratios are taken against (mha)
    "rounds",
    "ratio_median",  # variant / reference, per round
    "ratio_p10",
    "ratio_p90",
    "variant_ms",  # median per-call times on the baseline machine, for the reader only
    "reference_ms",
    "ratio_samples",  # every per-round ratio, ';'-separated: the test compares these
    *ENVIRONMENT,
)


# What read() checks: every column but those older files lack; one row per machine model and cell.
SPEC = files.Spec(
    "check baseline",
    required=tuple(c for c in COLUMNS if c not in (*OPTIONAL, "machine")),
    integers=frozenset(
        ("batch", "seq_len", "n_visual", "n_heads", "n_kv_heads", "head_dim", "rounds", "threads")
    ),
    floats=frozenset(("ratio_median", "ratio_p10", "ratio_p90", "variant_ms", "reference_ms")),
    samples=frozenset(("ratio_samples",)),
    filled=frozenset(("ratio_samples", "variant", "mode")),
    key=("machine", *KEY, *OPTIONAL),
)

# check.csv, what every check run writes to <out>/<run_id>/: the baseline's columns for every
# cell of the run, then its status, its verdict against the baseline, and every per-call time.
RESULT_COLUMNS = (
    *COLUMNS, "status", "error", "baseline_ratio", "change", "p_value", "verdict",
    "variant_ms_samples", "reference_ms_samples",
)  # fmt: skip


def path_for(template: str, env: Mapping[str, object]) -> Path:
    """The baseline file: `template` with `{device_name}` replaced by the slug of this machine's
    device name ('NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'), so each GPU model keeps
    its own file and `--update-baseline` on an H200 leaves the H100 rows alone."""
    return Path(template.replace("{device_name}", slug(str(env["device_name"]))))


def slug(name: str) -> str:
    """Lower case, runs of anything but letters and digits as one '-': a file-name-safe key."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown"


def read(path: Path) -> pd.DataFrame:
    """The baseline rows (every column as text); a missing file says how to create one."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"no baseline at {str(path)!r}: measure one on this machine with "
            f"`attnbench check --update-baseline` (same flags/profile), commit it, then run the check"
        )
    df = files.read_table(path, SPEC).frame(dtype=str, keep_default_na=False)
    for column, default in OPTIONAL.items():
        if column not in df:
            df.insert(len(KEY) + 1, column, default)
    if "machine" not in df:  # written before models were recorded: no model's figures
        df.insert(len(df.columns), "machine", "")
    missing = sorted(set(COLUMNS) - set(df.columns))
    if missing:
        raise ValueError(f"baseline {str(path)!r} lacks column(s) {missing}; rewrite it: --update-baseline")
    return df


def samples(df: pd.DataFrame) -> dict[tuple[str, ...], list[float]]:
    """`Cell.key()` -> the baseline's per-round ratios."""
    rows = df.to_dict("records")
    return {row_key(row): [float(x) for x in row["ratio_samples"].split(";")] for row in rows}


def write(path: Path, results: Sequence[Result], env: Mapping[str, object], cfg: CheckConfig) -> pd.DataFrame:
    """Write the ok results as this machine model's figures. The old file's rows taken at the
    same commit are kept (other models' figures; this model's cells not measured now, so
    `--variants new_one --update-baseline` adds one variant); rows of another commit are
    dropped: the file stands for one commit."""
    path = Path(path)
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    rows = [_row(r, env, cfg.reference, date) for r in results if r.status == "ok"]
    new = pd.DataFrame(rows, columns=list(COLUMNS), dtype=str)
    if path.is_file():
        old = read(path)
        old = old[old["git_commit"] == str(env["git_commit"])]
        mine = {(str(env["machine"]), row_key(r)) for r in rows}
        kept = old.loc[[(r["machine"], row_key(r)) not in mine for r in old.to_dict("records")]]
        new = pd.concat([kept[list(COLUMNS)], new], ignore_index=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    new.to_csv(path, index=False)
    return new


def _row(r: Result, env: Mapping[str, object], reference: str, date: str) -> dict[str, str]:
    s = summarize(r.ratios)
    values = dict(
        rounds=len(r.ratios),
        ratio_median=f"{s.median:.4f}",
        ratio_p10=f"{s.p10:.4f}",
        ratio_p90=f"{s.p90:.4f}",
        variant_ms=f"{r.variant_ms:.4f}",
        reference_ms=f"{r.reference_ms:.4f}",
        ratio_samples=";".join(f"{x:.5f}" for x in r.ratios),
    )
    return {**_key_row(r, env, reference, date), **{k: str(v) for k, v in values.items()}}


def result_rows(
    rows: Sequence[tuple[Result, Decision | None]], env: Mapping[str, object], cfg: CheckConfig
) -> pd.DataFrame:
    """check.csv's rows (`RESULT_COLUMNS`, as text): one per cell, measured or not."""
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    out = []
    for r, d in rows:
        row = _row(r, env, cfg.reference, date) if r.status == "ok" else _key_row(r, env, cfg.reference, date)
        row.update(
            status=r.status,
            error=r.error,
            baseline_ratio=_text(d and d.baseline, ".4f"),
            change=_text(d and d.change, ".4f"),
            p_value=_text(d and d.p_value, ".3g"),
            verdict=d.verdict if d else "",
            variant_ms_samples=";".join(f"{x * 1e3:.5f}" for x in r.variant_s),
            reference_ms_samples=";".join(f"{x * 1e3:.5f}" for x in r.reference_s),
        )
        out.append(row)
    return pd.DataFrame(out, columns=list(RESULT_COLUMNS), dtype=str).fillna("")


def _key_row(r: Result, env: Mapping[str, object], reference: str, date: str) -> dict[str, str]:
    """A cell's identity columns: its key, the reference, the date and the environment."""
    c = r.cell
    values = dict(
        cell=r.name, variant=c.choice.name, options=c.choice.options_text, mode=c.mode, batch=c.batch,
        seq_len=c.seq_len, n_visual=c.n_visual, n_heads=c.spec.n_heads, n_kv_heads=c.spec.n_kv_heads,
        head_dim=c.spec.head_dim, dtype=c.dtype, compile=c.compile, reference=reference, date=date,
        **{k: env[k] for k in ENVIRONMENT if k != "date"},
    )  # fmt: skip
    return {k: str(v) for k, v in values.items()}


def _text(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)
