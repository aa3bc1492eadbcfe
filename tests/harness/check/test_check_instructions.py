"""`attnbench check --metric instructions`: counts under callgrind, the baseline, the verdict.

The two valgrind runs (a module fixture, run side by side on two cores) take a minute or two:
valgrind loading torch is most of it. They are what proves the metric: counts of unchanged
code agree across two processes, and a variant made to do twice the work is the only one named.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from harness.check import instructions, instructions_view
from harness.check.instructions import Count
from harness.check.ratios import CheckConfig, cells
from harness.cli import app
from harness.sweep.grid import row_key

runner = CliRunner()
needs_valgrind = pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")

TINY = """
[check]
variants = ["gqa", "mmca"]
seq_len = [128]
heads = [8]
kv_heads = [2]
modes = ["fwd"]
batch = 1
head_dim = 32
warmup = 3
threads = 1
instructions_baseline = "{baseline}"
instructions_jobs = 1
out = "{out}"
"""

# Injected into the callgrind child as a plugin: mmca's forward runs twice, nothing else changes.
DOUBLE_MMCA = """
import attn_variants.mmca as mm

_forward = mm.MultiModalCausalAttention.forward


def forward(self, x, **kwargs):
    _forward(self, x, **kwargs)
    return _forward(self, x, **kwargs)


mm.MultiModalCausalAttention.forward = forward
"""


def _config(tmp_path, name: str = "counts.csv", **extra) -> str:
    text = TINY.format(baseline=tmp_path / name, out=tmp_path / "runs")
    text += "".join(f"{k} = {v}\n" for k, v in extra.items())
    path = tmp_path / name.replace(".csv", ".toml")
    path.write_text(text)
    return str(path)


def _check(config: str, *flags: str):
    return runner.invoke(app, ["check", "--metric", "instructions", "--config", config, *flags])


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two counting runs in parallel (one valgrind each, one core each): the code as it is, and
    with the `double_mmca` plugin. Their baselines: (plain, doubled) frames, and the run log."""
    tmp = tmp_path_factory.mktemp("callgrind")
    (tmp / "double_mmca.py").write_text(DOUBLE_MMCA)
    configs = [_config(tmp, "plain.csv"), _config(tmp, "doubled.csv", plugins='["double_mmca"]')]
    path = os.pathsep.join([str(tmp), *filter(None, [os.environ.get("PYTHONPATH")]), *sys.path])
    cmd = [sys.executable, "-m", "harness.cli", "check", "--metric", "instructions", "--update-baseline"]
    procs = [
        subprocess.Popen([*cmd, "--config", c], env={**os.environ, "PYTHONPATH": path}, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for c in configs
    ]  # fmt: skip
    logs = [p.communicate(timeout=3600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    return instructions_view.read(tmp / "plain.csv"), instructions_view.read(tmp / "doubled.csv"), tmp


@needs_valgrind
@pytest.mark.slow
def test_counts_of_unchanged_code_agree_across_two_runs(two_runs):
    plain, doubled, _ = two_runs
    assert list(plain["cell"]) == ["gqa_g2 fwd n=128 h=8", "mmca_g2 fwd n=128 h=8"]
    assert (plain["sdpa_backend"] == "flash_cpu").all()
    assert (plain["spread"].astype(float) < 0.01).all(), plain[["cell", "calls"]]
    gqa = [int(df.loc[df["variant"] == "gqa", "instructions"].item()) for df in (plain, doubled)]
    assert abs(gqa[1] / gqa[0] - 1) < 0.01, gqa  # two processes, one of them with the plugin loaded
    mmca = [int(df.loc[df["variant"] == "mmca", "instructions"].item()) for df in (plain, doubled)]
    assert 1.8 < mmca[1] / mmca[0] < 2.2, mmca  # the forward ran twice


@needs_valgrind
@pytest.mark.slow
def test_a_doubled_forward_is_the_only_cell_named_regressed(two_runs, monkeypatch):
    """The check against the plain baseline, fed the doubled run's real counts (recounting them
    here would cost another valgrind start-up: the counting itself is the test above)."""
    plain, doubled, tmp = two_runs
    cfg_text = Path(_config(tmp, "plain.csv"))
    env = doubled.iloc[0][list(instructions_view.ENVIRONMENT + instructions_view.INFO)].to_dict()

    by_key = {row_key(r): r for r in doubled.to_dict("records")}

    def recorded(cfg, todo=None):
        rows = {c: by_key[c.key()] for c in cells(cfg)}
        calls = {c: tuple(int(x) for x in r["calls"].split(";")) for c, r in rows.items()}
        return [Count(c, "ok", "", calls[c], r["sdpa_backend"]) for c, r in rows.items()], env

    monkeypatch.setattr(instructions, "measure_all", recorded)
    result = _check(str(cfg_text), "--out", str(tmp / "verdict"))
    assert result.exit_code == 1, result.output
    assert "REGRESSED mmca_g2 fwd n=128 h=8" in result.output
    assert "REGRESSED gqa" not in result.output and "1 over the 1.0% tolerance" in result.output
    (run,) = (tmp / "verdict").iterdir()
    rows = pd.read_csv(run / "instructions.csv", dtype=str, keep_default_na=False)
    assert dict(zip(rows["variant"], rows["verdict"], strict=True)) == {"gqa": "ok", "mmca": "REGRESSED"}
    records = json.loads((run / "benchmark.json").read_text())
    names = {r["model"]["name"]: r["metric"]["name"] for r in records}
    assert names == {"gqa": "instructions", "mmca": "instructions"}
    assert all(len(r["metric"]["benchmark_values"]) == 3 and r["metric"]["target_value"] > 0 for r in records)


def test_missing_valgrind_exits_2_with_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(instructions.shutil, "which", lambda name: None)
    result = _check(_config(tmp_path))
    assert result.exit_code == 2
    assert "valgrind is not installed" in result.output and "apt-get install valgrind" in result.output
    assert "Traceback" not in result.output


def _counts(kernel: str = "flash_cpu") -> list[Count]:
    cfg = CheckConfig(variants=("gqa",), seq_len=(32,), heads=(4,), kv_heads=(2,), modes=("fwd",))
    return [Count(c, "ok", "", (1000, 1001, 1002), kernel) for c in cells(cfg)]


def _baseline(tmp_path, **env) -> pd.DataFrame:
    environment = dict(torch_version="2.13.0+cpu", python_version="3.11.7", cpu_capability="AVX2")
    environment.update(env)
    info = dict(valgrind_version="valgrind-3.19.0", device_name="cpu", git_commit="abc", host="h")
    path = tmp_path / "b.csv"
    instructions_view.write(path, _counts(), {**environment, **info})
    return instructions_view.read(path)


@pytest.mark.parametrize(
    ("column", "theirs"),
    [("torch_version", "2.12.0+cpu"), ("python_version", "3.12.1"), ("cpu_capability", "AVX512")],
)
def test_baseline_from_another_environment_is_refused(tmp_path, column, theirs):
    df = _baseline(tmp_path, **{column: theirs})
    here = dict(torch_version="2.13.0+cpu", python_version="3.11.7", cpu_capability="AVX2")
    with pytest.raises(
        ValueError, match=re.escape(f"its {column} is {theirs}, this run's is {here[column]}")
    ):
        instructions_view.refuse_if_incomparable(df, here, _counts(), tmp_path / "b.csv")
    instructions_view.refuse_if_incomparable(_baseline(tmp_path), here, _counts(), tmp_path / "b.csv")


def test_a_cell_whose_sdpa_kernel_changed_is_refused(tmp_path):
    here = dict(torch_version="2.13.0+cpu", python_version="3.11.7", cpu_capability="AVX2")
    with pytest.raises(ValueError, match=r"kernel changed in gqa_g2 fwd n=32 h=4: flash_cpu -> math"):
        instructions_view.refuse_if_incomparable(
            _baseline(tmp_path), here, _counts("math"), tmp_path / "b.csv"
        )


@pytest.mark.parametrize(
    ("count", "word"), [(1010, "ok"), (1011, "REGRESSED"), (989, "improved"), (1000, "ok")]
)
def test_decide_by_tolerance(count, word):
    cfg = CheckConfig(instructions_tolerance=0.01)
    (c,) = _counts()
    c = Count(c.cell, "ok", "", (count,), c.sdpa_backend)
    assert instructions_view.decide(c, {c.cell.key(): 1000}, cfg)[0] == word
    assert instructions_view.decide(c, {}, cfg) == ("new", None)


def test_missing_plugin_is_a_value_error():
    with pytest.raises(ValueError, match=r"plugin 'no_such_plugin' \(module no_such_plugin\): cannot be"):
        cells(CheckConfig(plugins=("no_such_plugin",)))


def test_config_reads_the_metric_and_its_settings(tmp_path):
    text = textwrap.dedent(TINY.format(baseline="x.csv", out=tmp_path)) + 'metric = "bogus"\n'
    (tmp_path / "bench.toml").write_text(text)
    result = runner.invoke(app, ["check", "--config", str(tmp_path / "bench.toml")])
    assert result.exit_code == 2 and "metric" in result.output


def test_a_decode_count_is_reported_per_step(monkeypatch):
    cfg = CheckConfig(variants=("gqa",), seq_len=(32,), heads=(4,), kv_heads=(2,), modes=("decode",))
    (cell,) = cells(cfg)
    monkeypatch.setattr(instructions, "kernel", lambda cell, cfg: "flash_cpu")
    rec = {"status": "ok", "error": "", "dumps": [1, 2, 3], "steps": 10}
    count = instructions._count(cell, rec, {1: 6_600_000, 2: 6_600_010, 3: 6_700_000}, cfg)
    assert count.calls == (660_000, 660_001, 670_000) and count.instructions == 660_001
    missing = instructions._count(cell, rec, {1: 5}, cfg)
    assert missing.status == "error" and "dumps [2, 3] were not written" in missing.error
