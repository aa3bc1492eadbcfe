"""`attnbench check --metric instructions`: counts under callgrind, the baseline, the verdict.

The two valgrind runs (a module fixture) take about a minute each on a quiet 2-core machine:
valgrind loading torch is most of it. They are what proves the metric: counts of unchanged
code agree across two processes, and a variant made to do twice the work is the only one named.
"""

import re
import shutil
import sys
import textwrap

import pandas as pd
import pytest
from typer.testing import CliRunner

from attn_variants.mmca import MultiModalCausalAttention
from harness import instructions, instructions_view
from harness.check import CheckConfig, cells
from harness.cli import app
from harness.instructions import Count

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


def _config(tmp_path, **extra) -> str:
    text = TINY.format(baseline=tmp_path / "counts.csv")
    text += "".join(f"{k} = {v}\n" for k, v in extra.items())
    path = tmp_path / "bench.toml"
    path.write_text(text)
    return str(path)


def _check(config: str, *flags: str):
    return runner.invoke(app, ["check", "--metric", "instructions", "--config", config, *flags])


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """A baseline run, then a run with mmca doing its forward twice (each its own valgrind)."""
    tmp = tmp_path_factory.mktemp("callgrind")
    config = _config(tmp)
    first = _check(config, "--update-baseline")
    baseline = pd.read_csv(tmp / "counts.csv", dtype=str)
    (tmp / "double_mmca.py").write_text(DOUBLE_MMCA)
    patched = _config(tmp, plugins='["double_mmca"]')
    mp = pytest.MonkeyPatch()
    mp.setenv("PYTHONPATH", f"{tmp}:{':'.join(sys.path)}")
    mp.syspath_prepend(str(tmp))
    mp.setattr(MultiModalCausalAttention, "forward", MultiModalCausalAttention.forward)  # undone below
    second = _check(patched)
    mp.undo()
    sys.modules.pop("double_mmca", None)
    return first, baseline, second


@needs_valgrind
@pytest.mark.slow
def test_counts_are_stable_and_a_doubled_forward_is_the_only_regression(two_runs):
    first, baseline, second = two_runs
    assert first.exit_code == 0, first.output
    assert list(baseline["cell"]) == ["gqa_g2 fwd n=128 h=8", "mmca_g2 fwd n=128 h=8"]
    assert (baseline["sdpa_backend"] == "flash_cpu").all()
    assert (baseline["spread"].astype(float) < 0.01).all(), baseline[["cell", "calls"]]
    assert second.exit_code == 1, second.output
    assert "REGRESSED mmca_g2 fwd n=128 h=8" in second.output
    assert "REGRESSED gqa" not in second.output
    gqa_line = next(line for line in second.output.splitlines() if "gqa_g2 fwd" in line)
    ratio = float(gqa_line.split("│")[4])
    assert abs(ratio - 1) < 0.01, gqa_line  # unchanged code, another process: within the tolerance


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
    with pytest.raises(ValueError, match="cannot import 'no_such_plugin'"):
        cells(CheckConfig(plugins=("no_such_plugin",)))


def test_config_reads_the_metric_and_its_settings(tmp_path):
    text = textwrap.dedent(TINY.format(baseline="x.csv")) + 'metric = "bogus"\n'
    (tmp_path / "bench.toml").write_text(text)
    result = runner.invoke(app, ["check", "--config", str(tmp_path / "bench.toml")])
    assert result.exit_code == 2 and "metric" in result.output
