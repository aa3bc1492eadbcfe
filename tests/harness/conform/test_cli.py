"""`attnbench conform` and `--plugin` on the command line: exit 0 when the contract holds, 1
naming each failed property with what was measured, 2 (one line, no traceback) for a plugin that
cannot load; `list` says where each variant comes from; a plugin variant sweeps to ok rows."""

from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

from attn_variants import plugins
from harness.cli import app
from harness.cli.app import variant_table
from tests.attn_variants.test_plugins import fake_distribution

runner = CliRunner()
HERE = Path(__file__).parent / "plugins"
SWA = Path(__file__).parents[3] / "examples" / "plugin" / "attnbench_swa.py"


def invoke(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200", **(env or {})})


def test_a_conforming_variant_exits_0_with_its_table(scratch_registry):
    result = invoke("conform", "swa:sliding_window=3", "--plugin", SWA)
    assert result.exit_code == 0, result.output
    for prop in ("causal", "decode", "cache", "ragged", "grad", "flops"):
        assert prop in result.output
    assert "1 variant(s) conform" in result.output and "FAIL" not in result.output


@pytest.mark.parametrize(
    "plugin, line",
    [
        ("leaky", "FAIL leaky causal: outputs up to t changed by"),
        ("forgetful", "FAIL forgetful decode: prefill + decode differs from one forward by text"),
        ("halfcache", "FAIL halfcache cache: declared 1280 B at b=2, s=5; the cache holds 2560 B"),
    ],
)
def test_a_defect_exits_1_naming_the_property_and_the_measure(scratch_registry, plugin, line):
    result = invoke("conform", plugin, "gqa", "--plugin", HERE / f"{plugin}.py")
    assert result.exit_code == 1, result.output
    assert line in result.output
    assert f"1 of 2 variant(s) fail: {plugin}" in result.output


def test_a_plugin_that_cannot_import_is_one_line_and_exit_2(scratch_registry):
    path = HERE / "import_error.py"
    result = invoke("conform", "gqa", "--plugin", path)
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert f"plugin '{path.resolve()}'" in result.output
    assert "ModuleNotFoundError: No module named 'attnbench_no_such_kernel_library'" in result.output


def test_a_plugin_taking_a_built_in_name_is_exit_2(tmp_path, scratch_registry):
    path = tmp_path / "takes_gqa.py"
    register = "av.register('gqa', description='x', paper='x')(av.GroupedQueryAttention)"
    path.write_text(f"import attn_variants as av\n{register}\n")
    result = invoke("list", "--plugin", path)
    assert result.exit_code == 2
    assert "variant 'gqa' is already registered (built in)" in result.output


def test_list_says_where_each_variant_comes_from(scratch_registry):
    result = invoke("list", "--plugin", SWA)
    assert result.exit_code == 0, result.output
    assert "from" in result.output and "swa" in result.output
    console = Console(width=1000, record=True)  # the same table, unfolded
    console.print(variant_table())
    rows = {line.split("│")[1].strip(): line for line in console.export_text().splitlines() if "│" in line}
    assert rows["swa"].rstrip(" │").endswith(f"file {SWA.resolve()}")
    assert rows["gqa"].rstrip(" │").endswith("built in")


def test_bench_toml_plugins_reach_every_command(tmp_path, scratch_registry):
    config = tmp_path / "bench.toml"
    config.write_text(f"plugins = [{str(SWA)!r}]\n")
    result = invoke("conform", "swa:sliding_window=2", "--config", config)
    assert result.exit_code == 0, result.output


def test_a_plugin_variant_sweeps_to_ok_rows(tmp_path, scratch_registry):
    result = invoke("sweep", "--plugin", SWA, "--variants", "swa:sliding_window=8", "--reference", "gqa",
                    "--seq-len", "24", "--heads", "4", "--kv-heads", "2", "--modes", "fwd,fwd_bwd,decode",
                    "--batch", "1", "--head-dim", "8", "--repeats", "2", "--warmup", "0", "--threads", "1",
                    "--device", "cpu", "--out", tmp_path, "--no-report")  # fmt: skip
    assert result.exit_code == 0, result.output
    (csv,) = tmp_path.glob("*/sweep.csv")
    rows = pd.read_csv(csv)
    swa = rows[rows["variant"] == "swa"]
    assert len(swa) == 3 and (swa["status"] == "ok").all(), swa[["mode", "status", "error"]]
    assert (swa["flops"] > 0).all()


def test_a_broken_installed_plugin_stops_the_cli_but_not_the_library(tmp_path, monkeypatch, scratch_registry):
    (tmp_path / "plug_gpu_only.py").write_text("raise ImportError('needs a GPU library')\n")
    fake_distribution(tmp_path, "gpuplug", {"gpu": "plug_gpu_only"})
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(plugins, "_installed_done", False)
    listed = invoke("list")
    assert listed.exit_code == 2 and "gqa" in listed.output  # the table of what loaded, then the line
    assert "entry point gpu = plug_gpu_only" in listed.output and "needs a GPU library" in listed.output
    assert invoke("conform", "gqa").exit_code == 2
