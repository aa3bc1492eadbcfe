"""reports/comparison.py: two runs matched cell by cell, on fabricated samples with known effects."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from reports import comparison as cmp
from reports.comparison_figure import ratio_figure, run_pairs
from reports.load import combined, load_runs

from .ab_runs import FASTER, SLOWER, cell_mask, pair, with_samples, write_pair
from .fabricate import sweep_frame


@pytest.fixture(scope="module")
def ab():
    return pair()


@pytest.fixture(scope="module")
def result(ab):
    return cmp.compare(*ab, labels=("run-a", "run-b"))


def verdict_of(comp, cell):
    return comp.cells[cell_mask(comp.cells.astype({"n_kv_heads": int, "seq_len": int}), cell)].iloc[0]


def test_known_slowdown_and_speedup_are_found_with_their_size(result):
    slow, fast = verdict_of(result, SLOWER), verdict_of(result, FASTER)
    assert slow["verdict"] == "slower" and slow["p_value"] < 1e-6
    assert slow["ratio"] == pytest.approx(1.5, rel=0.03)
    assert slow["ratio_p10"] < slow["ratio"] < slow["ratio_p90"] and slow["ratio_p10"] > 1.05
    assert fast["verdict"] == "faster" and fast["ratio"] == pytest.approx(1 / 1.5, rel=0.03)
    assert fast["ratio_p90"] < 0.95


def test_noise_only_cells_are_same(result):
    ran = result.cells[result.cells["status_a"] == "ok"]
    noise = ran[~ran["verdict"].isin(["slower", "faster"])]
    assert len(noise) == len(ran) - 2 and (noise["verdict"] == "same").all()
    assert noise["ratio"].between(0.95, 1.05).all() and (noise["p_value"] > 0.01).all()


def test_biggest_change_comes_first(result):
    assert list(result.cells["verdict"][:2]) == ["slower", "faster"]  # |log 1.5| = |log 1/1.5|
    ratios = result.cells["ratio"].dropna()
    assert (np.diff(np.abs(np.log(ratios))) <= 1e-12).all()


def test_verdict_needs_threshold_and_significance_together():
    a = with_samples(sweep_frame(seq_lens=(128,), oom_at=None), seed=1, n=200, noise=0.02)
    small = with_samples(a, seed=2, n=200, noise=0.02, scale={SLOWER[:3] + (128,): 1.03})
    assert verdict_of(cmp.compare(a, small), SLOWER[:3] + (128,))["verdict"] == "same"  # real, < threshold
    wide = a.copy()
    wide.loc[cell_mask(a, SLOWER[:3] + (128,)), "latency_ms_samples"] = ";".join(["1.0", "2.0"] * 10)
    wider = a.copy()
    wider.loc[cell_mask(a, SLOWER[:3] + (128,)), "latency_ms_samples"] = ";".join(["1.1", "2.1"] * 10)
    row = verdict_of(cmp.compare(wide, wider), SLOWER[:3] + (128,))
    assert row["ratio"] == pytest.approx(1.6 / 1.5) and row["verdict"] == "same"  # > threshold, noise


def test_too_few_or_no_samples_is_undecided(ab):
    a, b = ab
    few = b.assign(latency_ms_samples=b["latency_ms_samples"].str.split(";").str[:2].str.join(";"))
    comp = cmp.compare(
        a.assign(latency_ms_samples=a["latency_ms_samples"].str.split(";").str[:2].str.join(";")), few
    )
    ran = comp.cells[comp.cells["status_a"] == "ok"]
    assert (ran["verdict"] == "undecided").all() and ran["note"].str.contains("cannot reach alpha").all()
    bare = cmp.compare(a.drop(columns="latency_ms_samples"), b)
    slow = verdict_of(bare, SLOWER)
    assert slow["verdict"] == "undecided" and slow["ratio"] == pytest.approx(1.5, rel=0.05)


def test_cells_in_one_run_only_are_listed(ab):
    a, b = ab
    b = pd.concat([b[b["seq_len"] != 256], b[b["seq_len"] == 256].assign(seq_len=512)])
    comp = cmp.compare(a, b)
    only_a, only_b = comp.verdicts("only in A"), comp.verdicts("only in B")
    assert len(only_a) == len(only_b) == (a["seq_len"] == 256).sum()
    assert set(only_a["seq_len"]) == {"256"} and set(only_b["seq_len"]) == {"512"}
    labels = cmp.table(comp)
    assert labels[labels["verdict"] == "only in B"]["cell"].str.contains("n=512").all()


def test_different_software_gets_one_header_line_and_ratios_still(ab):
    a, b = ab
    comp = cmp.compare(a, b.assign(threads=1, torch_version="2.14.0"))
    assert comp.environment == {"torch_version": ("2.13.0", "2.14.0"), "threads": ("2", "1")}
    lines = [line for line in cmp.header(comp) if line.startswith("environments differ")]
    assert len(lines) == 1 and "threads 2 vs 1" in lines[0] and "2.14.0" in lines[0]
    assert verdict_of(comp, SLOWER)["ratio"] == pytest.approx(1.5, rel=0.03)
    assert not any(line.startswith("environments") for line in cmp.header(cmp.compare(a, b)))


def test_runs_on_different_devices_are_refused_in_one_line_naming_both(ab):
    a, b = ab
    refused = r"^run A ran on 'fake-cpu' and run B on 'other-cpu': latencies"
    with pytest.raises(ValueError, match=refused) as err:
        cmp.compare(a, b.assign(device_name="other-cpu"))
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"'fake-cpu \[A100\]' and run B on 'fake-cpu \[H100\]'"):
        cmp.compare(a.assign(accelerator="A100"), b.assign(accelerator="H100"))


def test_runs_over_mixed_devices_are_matched_device_by_device(ab):
    """A Ray sweep over two GPU models: each cell is compared with the same cell on the same
    model; a model only one run has gives 'only in' cells, never a ratio across models."""
    a, b = ab
    two = lambda df: pd.concat([df.assign(accelerator="A100"), df.assign(accelerator="H100")])  # noqa: E731
    comp = cmp.compare(two(a), pd.concat([two(b), b.assign(accelerator="V100")]))
    assert "accelerator" in comp.key and "device_name" in comp.key
    for label in ("A100", "H100"):
        mine = comp.cells[comp.cells["accelerator"] == label]
        assert (mine["verdict"] == "slower").sum() == 1 and (mine["verdict"] == "faster").sum() == 1
    v100 = comp.cells[comp.cells["accelerator"] == "V100"]
    assert set(v100["verdict"]) == {"only in B"} and len(v100) == len(b)
    assert cmp.labels(comp).str.contains("accelerator=H100").any()


def test_a_setting_constant_in_each_run_is_compared_across(ab):
    a, b = ab
    comp = cmp.compare(a, b.assign(dtype="bfloat16"))
    assert comp.settings == {"dtype": ("float32", "bfloat16")} and "dtype" not in comp.key
    assert verdict_of(comp, SLOWER)["verdict"] == "slower"
    assert any("dtype float32 vs bfloat16" in line for line in cmp.header(comp))
    shape = cmp.compare(a, b.assign(batch=4))  # a shape column is never compared across
    assert set(shape.cells["verdict"]) <= {"only in A", "only in B"}
    layout = dict(layout="interleaved")
    images = cmp.compare(a.assign(**layout, n_images=2), b.assign(**layout, n_images=3))
    assert images.settings == {"n_images": ("2", "3")} and "n_images" not in images.key
    assert verdict_of(images, SLOWER)["verdict"] == "slower"  # matched across, as a layout is
    assert any("n_images 2 vs 3" in line for line in cmp.header(images))
    mixed = [0, 2] * (len(b) // 2) + [0] * (len(b) % 2)  # unimodal rows hold 0: not a count
    assert cmp.compare(a.assign(n_images=[1] * len(a)), b.assign(n_images=mixed)).settings == {
        "n_images": ("1", "2")
    }
    assert cmp.compare(a.assign(n_images=0), b.assign(n_images=mixed)).settings == {}


def test_new_key_column_joins_the_key_and_duplicates_are_refused(ab):
    a, b = ab
    comp = cmp.compare(a.assign(backend="sdpa"), b.assign(backend="sdpa"))
    assert "backend" in comp.key and verdict_of(comp, SLOWER)["verdict"] == "slower"
    one = cmp.compare(a, b.assign(backend="sdpa"))
    assert one.one_sided == {"backend": "B"} and "backend (only B)" in " ".join(cmp.header(one))
    stacked = pd.concat([a.assign(run="A"), b.assign(run="B", backend="sdpa")])  # as the report stacks runs
    assert run_pairs(stacked)[0].one_sided == {"backend": "B"}
    both = pd.concat([b.assign(backend="sdpa"), b.assign(backend="eager")])
    with pytest.raises(ValueError, match="rows sharing a cell key.*backend"):
        cmp.compare(a, both)


def test_memory_and_flops_changes_show_only_where_they_differ(ab):
    a, b = ab
    b = b.copy()
    b.loc[cell_mask(b, SLOWER), "peak_mem_bytes"] *= 2
    comp = cmp.compare(a, b)
    shown = cmp.table(comp)
    assert "FLOPs B/A" not in shown.columns
    assert (shown["peak mem B/A"] != "").sum() == 1 and shown.loc[0, "peak mem B/A"] == "2×"
    assert "peak mem B/A" not in cmp.table(cmp.compare(a, a)).columns


def test_a_different_sdpa_kernel_is_noted(ab):
    a, b = ab
    b = b.copy()
    b.loc[cell_mask(b, SLOWER), "sdpa_backend"] = "flash_cpu"
    comp = cmp.compare(a, b)
    assert verdict_of(comp, SLOWER)["note"] == "SDPA kernel math vs flash_cpu"
    assert (comp.cells["note"] == "SDPA kernel math vs flash_cpu").sum() == 1


def test_a_cell_that_stops_running_is_not_run_and_counts_against_b(ab):
    a, b = ab
    b = b.copy()
    b.loc[cell_mask(b, FASTER), ["status", "latency_ms_median"]] = ["oom", np.nan]
    comp = cmp.compare(a, b)
    row = verdict_of(comp, FASTER)
    assert row["verdict"] == "not run" and row["note"] == "A ok, B oom"
    assert len(comp.regressed) == 2  # the slower cell and this one; unsupported-in-both is not counted


def test_bootstrap_interval_is_seeded_and_narrows_with_samples():
    rng = np.random.default_rng(0)
    a, b = rng.lognormal(0, 0.1, 20), rng.lognormal(0.2, 0.1, 20)
    assert cmp.bootstrap_ratio(a, b) == cmp.bootstrap_ratio(a, b)
    lo, hi = cmp.bootstrap_ratio(a, b)
    big_lo, big_hi = cmp.bootstrap_ratio(rng.lognormal(0, 0.1, 2000), rng.lognormal(0.2, 0.1, 2000))
    assert lo < np.exp(0.2) < hi and big_lo < np.exp(0.2) < big_hi and big_hi - big_lo < (hi - lo) / 4


@pytest.mark.parametrize("kw", [dict(threshold=0), dict(threshold=1.5), dict(alpha=0)])
def test_bad_settings_raise_naming_the_value(ab, kw):
    with pytest.raises(ValueError, match="must both be in"):
        cmp.compare(*ab, **kw)


def test_figure_is_drawn_from_the_csvs_with_the_table_ratios(tmp_path):
    runs = load_runs(list(write_pair(tmp_path)))
    sweep = combined(runs, "sweep")
    comp = run_pairs(sweep)[0]
    ax = ratio_figure(sweep).axes[0]
    points = np.concatenate(
        [line.get_xdata() for line in ax.lines if len(line.get_xdata()) and line.get_marker() == "o"]
    )
    assert sorted(points) == pytest.approx(sorted(comp.cells["ratio"].dropna()))
    assert any(list(line.get_xdata()) == [1.0, 1.0] for line in ax.lines)  # the line at 1
    assert ax.get_yticklabels()[-1].get_text() == "gqa fwd n=256 g=2"  # the slowest on top


def test_figure_and_table_import_neither_harness_nor_torch(tmp_path):
    """Drawn from the CSVs alone: load, compare and draw in a fresh interpreter, then look at
    what it imported (reports must not import harness; reports.stats imports no torch)."""
    a, b = write_pair(tmp_path)
    code = (
        "import sys; from pathlib import Path; from reports.load import load_runs, combined;"
        "from reports.comparison_figure import ratio_figure, run_pairs; from reports.comparison import table;"
        "sweep = combined(load_runs([Path(p) for p in sys.argv[1:3]]), 'sweep');"
        "ratio_figure(sweep).savefig(sys.argv[3]); print(table(run_pairs(sweep)[0]).to_string());"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('harness', 'torch')]; assert not bad, bad"
    )
    png = tmp_path / "ratio.png"
    done = subprocess.run(
        [sys.executable, "-c", code, str(a), str(b), str(png)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert png.read_bytes()[:4] == b"\x89PNG" and "slower" in done.stdout
