"""benchstats/speedup.py: one "speedup vs mha" for the sweep summary, the report's table and heatmap."""

import numpy as np
import pandas as pd
import pytest

from benchstats.speedup import with_speedup
from harness.sweep import runner
from reports.sweep_figures import speedup_cells
from reports.tables import speedup_table

from .fabricate import sweep_frame


@pytest.fixture(scope="module")
def settings() -> pd.DataFrame:
    """One sweep at n=128 under three settings: sdpa, eager (every row 3x slower, mha 5x) and
    sdpa compiled (mha absent there), plus an mha row with an option."""
    base = sweep_frame(seq_lens=(128,), oom_at=None)
    eager = base.assign(
        backend="eager", options="backend=eager", latency_ms_median=base["latency_ms_median"] * 3
    )
    eager.loc[eager["variant"] == "mha", "latency_ms_median"] *= 5 / 3
    compiled = base[base["variant"] != "mha"].assign(compile="default")
    tweaked = base[base["variant"] == "mha"].assign(options="scale=2", latency_ms_median=1e3)
    parts = [
        base.assign(backend="sdpa"),
        eager,
        compiled.assign(backend="sdpa"),
        tweaked.assign(backend="sdpa"),
    ]
    return pd.concat(parts, ignore_index=True).fillna({"compile": "off"})


def expected(df: pd.DataFrame, row: pd.Series) -> float:
    same = ["mode", "seq_len", "backend", "compile", "n_heads"]
    plain = df["options"].isin(["", "backend=eager"])
    ref = df[(df["variant"] == "mha") & plain & (df[same] == row[same]).all(axis=1)]
    return float(ref["latency_ms_median"].iloc[0] / row["latency_ms_median"]) if len(ref) else np.nan


def test_the_reference_shares_backend_compile_and_has_no_options(settings):
    out = with_speedup(settings)
    gqa = out[(out["variant"] == "gqa") & (out["n_kv_heads"] == 2) & (out["mode"] == "fwd")]
    sdpa, eager = (
        gqa[(gqa["backend"] == b) & (gqa["compile"] == "off")]["speedup"].iloc[0] for b in ("sdpa", "eager")
    )
    assert eager == pytest.approx(sdpa * 5 / 3)  # eager mha over eager gqa, not over sdpa mha
    compiled = gqa[gqa["compile"] == "default"]["speedup"]
    assert compiled.isna().all()  # no compiled mha: no speedup, never one borrowed from eager mode
    for _, row in out[out["status"] == "ok"].iterrows():
        assert row["speedup"] == pytest.approx(expected(settings, row), nan_ok=True)


def test_summary_table_and_heatmap_show_the_same_speedup(settings):
    summary = runner.with_speedup(settings)
    cells = speedup_cells(settings, seq_len=128)
    assert (
        cells["label"].str.contains("backend=eager").any()
        and cells["label"].str.contains("compile=default").any()
    )
    merged = cells.merge(
        summary,
        on=["variant", "options", "mode", "n_kv_heads", "backend", "compile"],
        suffixes=("", "_summary"),
    )
    assert len(merged) == len(cells)
    ok = merged["status"] == "ok"
    np.testing.assert_allclose(merged.loc[ok, "speedup"], merged.loc[ok, "speedup_summary"])
    assert (merged.loc[merged["compile"] == "default", "note"].isin(["no mha", "unsupported"])).all()
    table = speedup_table(settings, seq_len=128)
    assert (table["speedup vs mha"] == "no mha").sum() == (merged["note"] == "no mha").sum() > 0
