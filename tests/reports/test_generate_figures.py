"""The generate figure and table, from a fabricated generate.csv (fixture numbers, not measurements)."""

import pandas as pd
import pytest

from reports import generate_figures as gf
from reports.load import load_run
from reports.render import render
from reports.style import FAIL_GID

CONTEXTS = (128, 512, 2048)


def fabricated() -> pd.DataFrame:
    """mha and gqa over three contexts (attention grows with P, gqa's at a quarter of mha's),
    and kdgqa refused at every context."""
    rows = []
    for variant, g, attn_per_token in (("mha", 8, 4e-6), ("gqa", 2, 1e-6), ("kdgqa", 2, None)):
        for p in CONTEXTS:
            base = dict(variant=variant, options="", context=p, new_tokens=8, batch=1, layers=2, dim=64)
            base |= dict(n_heads=8, n_kv_heads=g, head_dim=8, device="cpu", dtype="float32", compile="off")
            if attn_per_token is None:
                rows.append(base | dict(status="unsupported", error="kdgqa is not causal-safe", tpot_s=None))
                continue
            attn = attn_per_token * p
            step = 2e-3 + attn
            rows.append(base | dict(status="ok", error="", tpot_s=step, share_step_s=step,
                                    tpot_p10_s=0.9 * step, tpot_p90_s=1.1 * step, attn_s=attn,
                                    attn_share=attn / step, ttft_s=p * 1e-4,
                                    tokens_per_s=1 / step))  # fmt: skip
    return pd.DataFrame(rows)


def test_speedups_are_over_mha_at_the_same_context():
    out = gf.with_speedup(fabricated())
    gqa = out[out["variant"] == "gqa"].set_index("context")
    mha_step = 2e-3 + 4e-6 * 2048
    assert gqa.loc[2048, "speedup"] == pytest.approx(mha_step / (2e-3 + 1e-6 * 2048))
    assert gqa.loc[2048, "attn_speedup"] == pytest.approx(4.0)
    assert out[out["variant"] == "kdgqa"]["speedup"].isna().all()


def test_figure_draws_every_series_in_three_panels_and_marks_the_refused():
    fig = gf.generate_figure(fabricated())
    share, tpot, speed = fig.axes[:3]
    assert len(share.lines) == 2 and len(tpot.lines) == 2  # mha, gqa
    assert len(speed.lines) == 2 + 1  # gqa end to end, gqa attention alone, the line at 1
    assert any(c.get_gid() == FAIL_GID for c in share.collections)  # kdgqa's x marks
    assert list(share.lines[1].get_ydata()) == pytest.approx([4e-6 * p / (2e-3 + 4e-6 * p) for p in CONTEXTS])


def test_table_shows_status_for_refused_cells():
    table = gf.generate_table(fabricated())
    assert len(table) == 9
    assert set(table.loc[table["series"].str.startswith("kdgqa"), "tpot (ms)"]) == {"unsupported"}


def test_a_generate_only_run_renders(tmp_path):
    run = tmp_path / "gen-run"
    run.mkdir()
    fabricated().to_csv(run / "generate.csv", index=False)
    assert load_run(run).generate is not None
    names = {p.name for p in render([run])}
    assert {"generate.png", "generate.svg", "index.html", "summary.md"} <= names
    assert "Generation" in (run / "report" / "summary.md").read_text()
