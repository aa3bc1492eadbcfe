"""reports/comparison.py: two runs matched cell by cell, on fabricated samples with known effects."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from reports import comparison as cmp
from reports.comparison_figure import ratio_figure, run_pairs
from reports.load import combined, load_runs

from .ab_runs import FASTER, SLOWER, cell_mask, drifted_runs, pair, with_samples, write_pair
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
    assert slow["verdict"] == "slower" and slow["ratio"] == pytest.approx(1.5, rel=0.03)
    assert fast["verdict"] == "faster" and fast["ratio"] == pytest.approx(1 / 1.5, rel=0.03)


def test_noise_only_cells_are_same(result):
    ran = result.cells[result.cells["status_a"] == "ok"]
    noise = ran[~ran["verdict"].isin(["slower", "faster"])]
    assert len(noise) == len(ran) - 2 and (noise["verdict"] == "same").all()
    assert noise["ratio"].between(0.95, 1.05).all()


def test_biggest_change_comes_first(result):
    assert list(result.cells["verdict"][:2]) == ["slower", "faster"]  # |log 1.5| = |log 1/1.5|
    ratios = result.cells["ratio"].dropna()
    assert (np.diff(np.abs(np.log(ratios))) <= 1e-12).all()


def test_one_run_per_side_is_judged_by_the_threshold_alone():
    """Thousands of tight calls per run say nothing of the drift between two runs: a 7% move is
    slower by the threshold, but no p-value or interval claims it is known better than that,
    and a 4% move is same however many calls were taken."""
    base = sweep_frame(seq_lens=(128,), oom_at=None)
    a = with_samples(base, seed=1, n=2000, noise=0.005)
    cell = SLOWER[:3] + (128,)
    for factor, verdict in ((1.07, "slower"), (1.04, "same"), (0.93, "faster")):
        b = with_samples(base, seed=2, n=2000, noise=0.005, scale={cell: factor})
        comp = cmp.compare(a, b)
        row = verdict_of(comp, cell)
        assert row["verdict"] == verdict and row["ratio"] == pytest.approx(factor, rel=0.01)
        assert np.isnan(row["p_value"]) and np.isnan(row["ratio_p10"]) and np.isnan(row["ratio_p90"])
    assert comp.drift.df == 0 and "drift between runs cannot be estimated" in cmp.header(comp)[1]
    no_samples = cmp.compare(a.drop(columns="latency_ms_samples"), b.drop(columns="latency_ms_samples"))
    assert verdict_of(no_samples, cell)["verdict"] == "faster"  # the run's median is all it needs


def test_drift_between_runs_is_not_a_change_and_a_real_one_is():
    """Four runs a side of identical code, each cell of each run drifted apart (sd 1.5% in log,
    far above the calls' own spread): no verdict; B 10% slower everywhere: slower in at least
    90% of the cells (a cell whose own runs spread widely is judged by its own spread), faster in
    none, the intervals around 1.10."""
    base = sweep_frame(seq_lens=(128, 256, 512), oom_at=None)
    a = drifted_runs(base, 4, sd=0.015, seed=1)
    same = cmp.compare(a, drifted_runs(base, 4, sd=0.015, seed=2))
    ran = same.cells[same.cells["status_a"] == "ok"]
    assert len(ran) == 48 and (ran["verdict"] == "same").all()
    assert same.drift.df == 48 * 6 and same.drift.sd == pytest.approx(0.015, rel=0.2)
    assert "4 vs 4 runs" in cmp.header(same)[1] and (ran["runs_a"] == 4).all()
    slow = cmp.compare(a, drifted_runs(base, 4, sd=0.015, seed=2, scale=1.10))
    ran = slow.cells[slow.cells["status_a"] == "ok"]
    assert (ran["verdict"] == "slower").mean() >= 0.9 and (ran["verdict"] != "faster").all()
    assert ((ran["verdict"] == "slower") == (ran["p_value"] < 0.01)).all()
    assert (ran["ratio_p10"] < ran["ratio"]).all() and (ran["ratio"] < ran["ratio_p90"]).all()
    assert ran["ratio"].median() == pytest.approx(1.10, rel=0.02)


def test_a_change_within_the_drift_is_same_however_large():
    """Run medians scattered by 20% (sd in log): a 1.12x ratio of two runs a side is within the
    drift, so same; the same 1.12x against a 0.5% scatter is slower."""
    base = sweep_frame(seq_lens=(128,), oom_at=None)
    cell = SLOWER[:3] + (128,)
    for sd, verdict in ((0.2, "same"), (0.005, "slower")):
        a = drifted_runs(base, 2, sd=sd, seed=3)
        b = [run.assign(latency_ms_median=run["latency_ms_median"] * 1.12) for run in a[::-1]]
        row = verdict_of(cmp.compare(a, b), cell)
        assert row["ratio"] == pytest.approx(1.12) and row["verdict"] == verdict


def test_a_cell_that_failed_in_one_run_of_a_side_is_not_run():
    base = sweep_frame(seq_lens=(128,), oom_at=None)
    a, b = drifted_runs(base, 2, sd=0.01, seed=4), drifted_runs(base, 3, sd=0.01, seed=5)
    b[1] = b[1].copy()
    b[1].loc[cell_mask(b[1], FASTER[:3] + (128,)), "status"] = "oom"
    row = verdict_of(cmp.compare(a, b), FASTER[:3] + (128,))
    assert row["verdict"] == "not run" and row["note"] == "A ok, B oom"


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


def test_a_cell_that_drifts_more_than_the_rest_is_judged_by_its_own_spread():
    """Every other cell's runs agree within 0.5%; this one's scatter by 30%: its 1.26x is within
    its own drift (same), though far outside the pool's."""
    base = sweep_frame(seq_lens=(128,), oom_at=None)
    a, b = drifted_runs(base, 2, sd=0.005, seed=6), drifted_runs(base, 2, sd=0.005, seed=7)
    cell = SLOWER[:3] + (128,)
    for runs, factors in ((a, (1.0, 1.3)), (b, (1.3, 1.6))):
        for run, f in zip(runs, factors, strict=True):
            run.loc[cell_mask(run, cell), "latency_ms_median"] *= f
    row = verdict_of(cmp.compare(a, b), cell)
    assert row["ratio"] == pytest.approx(1.6**0.5, rel=0.02) and row["verdict"] == "same"
