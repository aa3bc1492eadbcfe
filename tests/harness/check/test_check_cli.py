"""`attnbench check` end to end on a tiny grid: exit codes, baseline file, named regressions.

The tiny shapes run in milliseconds, so these tests use tolerance 0.3 and a 4x slowdown: they
test the plumbing. The real `ci` profile's runs are in docs/results.md ("Regression checks").
"""

import pandas as pd
import pytest
from typer.testing import CliRunner

import attn_variants as av
from harness.check.baseline import COLUMNS
from harness.cli import app

runner = CliRunner()

TINY = """
[check]
seq_len = [32]
heads = [4]
kv_heads = [2]
modes = ["fwd"]
batch = 1
head_dim = 8
rounds = 20
passes = 2
warmup = 1
min_sample_s = 0.003
threads = 1
tolerance = 0.3
"""


class Slow(av.GroupedQueryAttention):
    """GQA whose forward runs `repeat` times: a regression made without editing product code."""

    repeat = 1

    def forward(self, x, *, n_visual=0, cache=None):
        for _ in range(Slow.repeat - 1):
            super().forward(x, n_visual=n_visual, cache=cache)
        return super().forward(x, n_visual=n_visual, cache=cache)


class Broken(av.GroupedQueryAttention):
    def attend(self, q, k, v, *, n_visual, cache):
        raise RuntimeError("kernel exploded")


@pytest.fixture
def slow(temp_variant):
    Slow.repeat = 1
    return temp_variant(Slow)


@pytest.fixture
def broken(temp_variant):
    return temp_variant(Broken, modes=("fwd",))


@pytest.fixture
def setup(tmp_path):
    """(config, baseline path) isolated from the repo's bench.toml and committed baseline."""
    (tmp_path / "bench.toml").write_text(TINY)
    return tmp_path / "bench.toml", tmp_path / "baseline.csv"


def check(setup, *extra):
    config, baseline = setup
    out = config.parent / "out"  # each run's check.csv and benchmark.json
    return runner.invoke(
        app, ["check", "--config", str(config), "--baseline", str(baseline), "--out", str(out), *extra]
    )


def test_missing_baseline_exits_2_and_says_how_to_make_one(setup):
    result = check(setup, "--variants", "gqa")
    assert result.exit_code == 2
    assert "no baseline at" in result.output and "--update-baseline" in result.output


def test_update_then_unchanged_check_passes(setup):
    update = check(setup, "--variants", "gqa,mqa", "--update-baseline")
    assert update.exit_code == 0, update.output
    df = pd.read_csv(setup[1], dtype=str, keep_default_na=False)
    assert tuple(df.columns) == COLUMNS
    assert sorted(df["cell"]) == ["gqa_g2 fwd n=32 h=4", "mqa_g1 fwd n=32 h=4"]
    assert set(df["device"]) == {"cpu"} and set(df["threads"]) == {"1"} and set(df["reference"]) == {"mha"}
    assert all(len(s.split(";")) == 20 for s in df["ratio_samples"])
    result = check(setup, "--variants", "gqa,mqa")
    assert result.exit_code == 0, result.output
    assert "2 ok" in result.output and "REGRESSED" not in result.output


def test_slowed_variant_fails_and_is_named(setup, slow):
    # samples of >= 10 ms, as bench.toml's [check]: under a loaded machine 3 ms samples fall
    # within one scheduler slice, and a 3.3x slowdown once got p = 0.012 (ratios p10-p90 0.26-3.3)
    setup[0].write_text(TINY.replace("min_sample_s = 0.003", "min_sample_s = 0.01"))
    assert check(setup, "--variants", f"gqa,{slow}", "--update-baseline").exit_code == 0
    Slow.repeat = 4
    result = check(setup, "--variants", f"gqa,{slow}")
    assert result.exit_code == 1, result.output
    line = next(s for s in result.output.splitlines() if s.startswith("REGRESSED"))
    assert f"{slow}_g2 fwd n=32 h=4" in line and "baseline ratio" in line and "p=" in line
    assert "gqa_g2" not in line and "1 REGRESSED" in result.output


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("machine", "cuda NVIDIA H100 80GB HBM3", "it has cuda NVIDIA H100 80GB HBM3, threads=1"),
        ("threads", "2", ", threads=2, torch"),
        ("reference", "mqa", "vs mqa"),
        ("torch_version", "2.99.0", "torch 2.99.0"),
    ],
)
def test_figures_of_another_model_threads_torch_or_reference_are_never_used(setup, column, value, message):
    """With no reachable commit to measure instead (test_check_against.py): one line, exit 2."""
    assert check(setup, "--variants", "gqa", "--update-baseline").exit_code == 0
    df = pd.read_csv(setup[1], dtype=str, keep_default_na=False)
    df[column], df["git_commit"] = value, "0123456789ab"
    df.to_csv(setup[1], index=False)
    result = check(setup, "--variants", "gqa")
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "has no figures for cpu " in result.output and message in result.output, result.output


def test_a_cell_that_fails_to_run_fails_the_check(setup, broken):
    assert check(setup, "--variants", "gqa", "--update-baseline").exit_code == 0
    result = check(setup, "--variants", f"gqa,{broken}")
    assert result.exit_code == 1
    assert f"FAILED {broken}_g2 fwd n=32 h=4 did not run: RuntimeError: kernel exploded" in result.output


def test_new_variant_is_new_and_unsupported_mode_is_listed(setup, broken, monkeypatch):
    assert check(setup, "--variants", "gqa", "--update-baseline").exit_code == 0
    result = check(setup, "--variants", "gqa,mqa", "--modes", "fwd")
    assert result.exit_code == 0, result.output
    assert "1 ok, 1 new" in result.output
    monkeypatch.setattr(Broken, "attend", av.GroupedQueryAttention.attend)  # runs; decode still unsupported
    result = check(setup, "--variants", f"gqa,{broken}", "--modes", "fwd,decode", "--rounds", "5")
    assert "not run (unsupported: a mode not in the registry entry" in result.output
    assert f"lacks): {broken}_g2 decode" in result.output


def test_nothing_in_the_baseline_is_refused_not_passed(setup):
    assert check(setup, "--variants", "gqa", "--update-baseline").exit_code == 0
    result = check(setup, "--variants", "mqa")
    assert result.exit_code == 2 and "nothing was compared" in result.output


def test_update_of_one_variant_keeps_the_others(setup):
    assert check(setup, "--variants", "gqa", "--update-baseline").exit_code == 0
    assert check(setup, "--variants", "mqa", "--update-baseline").exit_code == 0
    df = pd.read_csv(setup[1], dtype=str)
    assert sorted(df["variant"]) == ["gqa", "mqa"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--rounds", "3"], "rounds=3 can never reach alpha=0.01"),
        (["--tolerance", "2"], "tolerance=2.0 and alpha=0.01 must be in (0, 1)"),
        (["--variants", "nope"], "unknown variant"),
        (["--modes", "train"], "is not one of"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(setup, flags, message):
    result = check(setup, *flags)
    assert result.exit_code == 2 and message in result.output, result.output


def test_update_with_a_failing_cell_writes_the_others_and_exits_1(setup, broken):
    result = check(setup, "--variants", f"gqa,{broken}", "--update-baseline")
    assert result.exit_code == 1 and f"error {broken}_g2 fwd n=32 h=4: RuntimeError" in result.output
    assert list(pd.read_csv(setup[1])["variant"]) == ["gqa"]


def test_compile_and_backend_are_cell_axes_with_their_own_baseline_rows(setup, monkeypatch):
    from harness.measure import workload

    build = workload.build  # dynamo capture without Inductor's C++ code generation: seconds, not minutes
    monkeypatch.setattr(workload, "build", lambda *a, **k: build(*a, **{**k, "compiler": "eager"}))
    flags = ("--variants", "gqa", "--backend", "sdpa_math,sdpa_cudnn", "--compile", "off,default")
    update = check(setup, *flags, "--update-baseline")
    assert update.exit_code == 0, update.output
    df = pd.read_csv(setup[1], dtype=str, keep_default_na=False)
    assert sorted(zip(df["options"], df["compile"], strict=True)) == [
        ("backend=sdpa_math", "default"), ("backend=sdpa_math", "off")
    ]  # fmt: skip
    assert "gqa_g2[backend=sdpa_math] fwd n=32 h=4 compile=default" in set(df["cell"])
    result = check(setup, *flags)
    assert result.exit_code == 0, result.output
    assert "2 ok" in result.output and "sdpa_cudnn" in result.output  # not run here: a CUDA kernel


def test_a_baseline_without_a_compile_column_reads_as_uncompiled(setup):
    assert check(setup, "--variants", "gqa", "--update-baseline").exit_code == 0
    df = pd.read_csv(setup[1], dtype=str, keep_default_na=False).drop(columns="compile")
    df.to_csv(setup[1], index=False)  # as the committed baseline was written before compile existed
    result = check(setup, "--variants", "gqa")
    assert (
        result.exit_code == 0 and "1 ok" in result.output and "│ new" not in result.output
    )  # verdict not 'new'


def test_a_side_by_side_child_rebuilds_every_batch_of_the_grid():
    """The check's grid may hold several batch sizes (GridConfig.batch): the child that times a
    commit's side rebuilds each cell at its own b, so its key matches, not at the first b."""
    from harness.check import ratios, sidebyside

    cfg = ratios.CheckConfig(variants=("gqa",), seq_len=(32,), heads=(4,), kv_heads=(2,), modes=("fwd",),
                             batch=(1, 3), head_dim=8, device="cpu")  # fmt: skip
    cells = ratios.cells(cfg)
    assert sorted(c.batch for c in cells) == [1, 3]
    for cell in cells:
        rebuilt = sidebyside.rebuild({"cell": sidebyside.describe(cell)}, cfg)
        assert rebuilt.key() == cell.key()
