"""attnbench decide: the Pareto front of fabricated runs with known numbers, the cache column
against the registry's Table 5 figures and the bytes each cache really holds, and bad input."""

from __future__ import annotations

import math
import re

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import attn_variants as av
from harness.cli import app
from harness.decide import DecideConfig, pareto, runner, table

# (variant, g at h=4, decode ms (median, p10, p90), prefill ms (median, p10, p90), accuracy per seed)
KNOWN = [
    ("mha", 4, (1.00, 0.90, 1.10), (5.0, 4.5, 5.5), (0.95, 0.97)),
    ("gqa", 2, (0.80, 0.75, 0.85), (5.0, 4.5, 5.5), (0.90, 0.96)),  # accuracy overlaps mha's
    ("mqa", 1, (0.82, 0.70, 0.90), (5.0, 4.5, 5.5), (0.60, 0.62)),  # decode overlaps gqa's
    ("mla", 2, (2.00, 1.90, 2.10), (5.2, 4.7, 5.6), (0.93, 0.95)),
]


def _sweep_row(variant, g, mode, ms) -> dict:
    row = dict(run_id="a", variant=variant, options="", mode=mode, batch=1, seq_len=256, n_visual=0, dim=64)
    row |= dict(n_heads=4, n_kv_heads=g, head_dim=16, dtype="float32", device_name="fake-cpu", status="ok")
    row |= dict(latency_ms_median=ms[0], latency_ms_p10=ms[1], latency_ms_p90=ms[2])
    return row | dict(flops_effective=1e6, bytes_moved=1e5, backend="sdpa", compile="off")


def fabricate(tmp_path):
    """Run `timing` (sweep.csv with a shape only mha ran, which must be left out) and run
    `quality` (accuracy.csv, two seeds of mqar)."""
    timing, quality = tmp_path / "timing", tmp_path / "quality"
    timing.mkdir(), quality.mkdir()
    rows = [_sweep_row(v, g, m, ms) for v, g, d, p, _ in KNOWN for m, ms in (("decode", d), ("fwd", p))]
    rows.append(_sweep_row("mha", 4, "decode", (0.1, 0.1, 0.1)) | dict(seq_len=1024))
    pd.DataFrame(rows).to_csv(timing / "sweep.csv", index=False)
    acc = [
        dict(run_id="b", task="mqar", variant=v, options="", init="scratch", n_heads=4, n_kv_heads=g, dim=64)
        | dict(seed=s, accuracy=a, status="ok", ablate="none")
        for v, g, _, _, accs in KNOWN
        for s, a in enumerate(accs)
    ]
    pd.DataFrame(acc).to_csv(quality / "accuracy.csv", index=False)
    return timing, quality


def test_pareto_set_of_two_fabricated_runs(tmp_path):
    runs = runner.read_runs(list(fabricate(tmp_path)))
    result = runner.decide(runs, DecideConfig(tp=(1,))).set_index("design")
    # gqa beats mha on cache and decode (disjoint intervals), ties on prefill and accuracy
    # (overlapping); mqa's decode overlaps gqa's and its accuracy is lower: no claim either way.
    assert sorted(result.index[result["pareto"]]) == ["gqa g=2", "mqa g=1"]
    assert result.loc["mha g=4", "dominated_by"] == "gqa g=2"
    assert result.loc["mla", "dominated_by"] == "gqa g=2"
    assert result.loc["gqa g=2", "decode_seq_len"] == 256  # the shape every design ran, not mha's 1024
    assert result.loc["gqa g=2", "decode_source"] == "timing"
    assert result.loc["gqa g=2", "accuracy_source"] == "quality"
    assert result.loc["gqa g=2", "acc_mqar_n"] == 2
    assert result.loc["mha g=4", "acc_mqar"] == pytest.approx(0.96)
    assert result.loc["gqa g=2", "decode_tokens_per_s"] == pytest.approx(1250.0)


def test_overlapping_spread_makes_no_claim_and_missing_is_never_dominated():
    objectives = [table.OBJECTIVES["cache"], table.OBJECTIVES["decode"]]
    rows = pd.DataFrame(
        {
            "design": ["A", "B", "C", "D"],
            "kv_bytes_per_token_tp1": [100, 100, 100, 100],
            "decode_ms": [1.0, 1.05, 1.5, math.nan],
            "decode_ms_p10": [0.9, 0.95, 1.4, math.nan],
            "decode_ms_p90": [1.1, 1.2, 1.6, math.nan],
        }
    )
    result = pareto.front(rows, objectives).set_index("design")
    assert result["dominated_by"].to_dict() == {"A": "", "B": "", "C": "A; B", "D": ""}  # A's median is
    # better than B's, but their intervals overlap; D has no decode figure, so nothing is claimed
    one_seed = pd.DataFrame({"design": ["A", "B"], "accuracy": [0.9, 0.5], "accuracy_p10": [math.nan] * 2})
    one_seed["accuracy_p90"] = math.nan
    assert pareto.front(one_seed, [table.OBJECTIVES["accuracy"]])["pareto"].all()  # no spread, no claim


def cache_row(variant: str, spec: av.AttnSpec, dtype: str, tp: tuple[int, ...]) -> dict:
    key = dict(variant=variant, options="", n_heads=spec.n_heads, dim=spec.dim)
    key["n_kv_heads"] = av.info(variant).resolve(spec).n_kv_heads
    return table.cache_columns(key, dtype, DecideConfig(tp=tp))


TABLE5 = {
    "mha": (8192, 4096),
    "gqa": (2048, 1024),
    "mla": (1152, 1152),
    "gta": (1152, 640),
    "gla": (1152, 640),
}


@pytest.mark.parametrize("variant", sorted(TABLE5))
def test_cache_column_at_table5(variant):
    """arXiv 2505.21487 Table 5: d=2048, h=16, e=128, g=4, d_r=64, bf16 (GLA-2: two latent heads)."""
    if variant not in av.names():
        pytest.skip(f"{variant} is not registered")
    spec = av.AttnSpec(2048, 16, 2 if variant == "gla" else 4)
    row = cache_row(variant, spec, "bfloat16", (1, 2))
    assert row["kv_bytes_per_token_tp1"] == TABLE5[variant][0]
    assert row["requests_fit_tp1"] == math.floor(80e9 / (8192 * TABLE5[variant][0]))
    assert row["kv_bytes_per_token_tp2"] == TABLE5[variant][1]


@pytest.mark.parametrize("variant", ["mha", "gqa", "mqa", "mla"])
def test_cache_column_is_the_bytes_the_cache_holds(variant):
    spec, b, n = av.AttnSpec(64, 4, 2), 2, 7
    module = av.create(variant, spec).eval()
    cache = av.KVCache()
    with torch.no_grad():
        module(torch.randn(b, n, 64), cache=cache)
    assert cache_row(variant, spec, "float32", (1,))["kv_bytes_per_token_tp1"] * b * n == cache.nbytes


def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path):
    timing, quality = fabricate(tmp_path)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "sweep.csv").write_bytes(b'variant,mode\n"mha,fwd\n\xff\xfe')
    out = tmp_path / "out"
    cases = [
        [str(tmp_path / "nowhere")],
        [str(tmp_path / "broken")],
        [str(timing), "--tp", "0"],
        [str(timing), "--tp", "two"],
    ]
    for args in cases:
        result = CliRunner().invoke(app, ["decide", *args, "--out", str(out)])
        assert result.exit_code == 2, (args, result.output)
        assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not out.exists()


def test_writes_the_table_pages_and_figure(tmp_path):
    timing, quality = fabricate(tmp_path)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["decide", str(timing), str(quality), "--tp", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    names = {p.name for p in out.iterdir()}
    assert names == {"decision.csv", "decision.md", "decision.png", "decision.svg", "index.html"}
    md = (out / "decision.md").read_text()
    assert "0.960 ± 0.014 (n=2)" in md and "timing" in md and "quality" in md
    assert pd.read_csv(out / "decision.csv")["pareto"].sum() == 2


def test_every_decision_column_is_documented(tmp_path):
    from tests.test_docs import ROOT, section, table_rows

    documented = " ".join(r[0] for r in table_rows(section(ROOT / "docs" / "decide.md", "Columns")))
    named = {re.sub(r"\{\w+\}", "X", c) for c in re.findall(r"`([\w{}]+)`", documented)}
    runs = runner.read_runs(list(fabricate(tmp_path)))
    columns = runner.decide(runs, DecideConfig(tp=(1, 2))).columns
    generic = {re.sub(r"tp\d+$", "tpX", re.sub(r"^acc_mqar", "acc_X", c)) for c in columns}
    assert generic - named == set(), "docs/decide.md does not describe these columns"


def test_the_report_of_a_decided_run_leads_with_the_decision(tmp_path):
    from reports.render import render

    timing, quality = fabricate(tmp_path)
    runner.write(runner.decide(runner.read_runs([timing, quality]), DecideConfig(tp=(1,))), timing / "decide")
    written = render([timing], tmp_path / "report")
    assert tmp_path / "report" / "decision.png" in written
    html = (tmp_path / "report" / "index.html").read_text()
    assert html.index("<figure") == html.index('<figure id="decision"')  # the first figure of the page
    assert html.index("Which attention to ship") < html.index("Latency")


def test_a_plugin_reaches_decide_and_the_run_of_its_profile(tmp_path, monkeypatch, scratch_registry):
    """`decide --plugin FILE` loads it, and a run of the decide profile (no run folder) passes it
    on to its sweep and accuracy configs, so their run.json and Ray workers import it too."""
    from harness import config as config_mod
    from harness.accuracy import runner as accuracy_runner

    plugin = tmp_path / "one_more.py"
    plugin.write_text(
        "import torch\nimport attn_variants as av\n"
        "@av.register('one_more', description='test', paper='-')\n"
        "class OneMore(torch.nn.Module):\n    pass\n"
    )
    seen = {}
    monkeypatch.setattr(runner, "main", lambda run_dirs, cfg, settings: seen.setdefault("cfg", cfg) and [])
    CliRunner().invoke(app, ["decide", "--plugin", str(plugin)])
    assert str(plugin) in seen["cfg"].plugins and "one_more" in av.names()

    class Stop(Exception):
        pass

    def sweep(cfg, settings=None):
        seen["sweep"] = cfg
        raise Stop

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("harness.sweep.run", sweep)
    monkeypatch.setattr(accuracy_runner, "preflight", lambda cfg: seen.setdefault("accuracy", cfg))
    with pytest.raises(Stop):
        runner.run_missing(DecideConfig(plugins=(str(plugin),)), config_mod.find(None))
    assert str(plugin) in seen["sweep"].plugins and str(plugin) in seen["accuracy"].plugins
