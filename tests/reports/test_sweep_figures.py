import math

import numpy as np
import pandas as pd
import pytest

from reports import sweep_figures as sf
from reports import tables
from reports.load import combined, load_runs, with_labels
from reports.style import FAIL_GID, FAILED_ENTRY, fit_slope

from .fabricate import sweep_frame, write_run


@pytest.fixture
def sweep(run_dir):
    return combined(load_runs([run_dir]), "sweep")


def _legend(fig) -> list[str]:
    """The figure's one legend (under its panels; no panel has its own)."""
    assert [ax.get_legend() for ax in fig.axes] == [None] * len(fig.axes)
    (legend,) = fig.legends
    return [t.get_text() for t in legend.get_texts()]


def _failure_marks(ax) -> int:
    return sum(len(c.get_offsets()) for c in ax.collections if c.get_gid() == FAIL_GID)


def test_latency_one_loglog_panel_per_mode_with_slopes_and_bands(sweep):
    fig = sf.latency_figure(sweep)
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == [
        "latency: fwd (prefill)", "latency: fwd_bwd (training step)", "latency: decode (1 token)"
    ]  # fmt: skip
    for ax in axes:
        assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
        assert "tokens" in ax.get_xlabel() and "(ms)" in ax.get_ylabel()
    fwd = axes[0]
    assert len(fwd.lines) == 6  # mha, mqa, gqa g=2, gqa g=4, kdgqa, dgqa(kind=ema)
    assert "dgqa(kind=ema) g=2" in _legend(fig)
    assert len([c for c in fwd.collections if c.get_gid() != FAIL_GID]) == 6  # one p10-p90 band each


def test_latency_marks_failed_cells_and_keeps_them(sweep):
    axes = sf.latency_figure(sweep).axes
    assert _failure_marks(axes[0]) == 0
    assert _failure_marks(axes[1]) == 1  # mha fwd_bwd oom at n=256
    assert _failure_marks(axes[2]) == 4  # kdgqa and dgqa decode unsupported at both n
    texts = [t.get_text() for t in axes[1].texts]
    assert "mha g=8: oom" in texts
    assert any("cell did not run" in t for t in _legend(axes[1].figure))


def test_latency_table_slope_matches_the_data(sweep):
    ok = sweep[(sweep["variant"] == "mqa") & (sweep["mode"] == "fwd")]
    slope = fit_slope(ok["seq_len"], ok["latency_ms_median"])
    table = tables.latency_table(sweep)
    row = table[(table["mode"] == "fwd") & (table["series"] == "mqa g=1")]
    assert row["slope"].tolist() == [f"{slope:.2f}"]


def test_many_series_are_small_multiples_with_mha_in_every_row():
    """Seventeen series: rows of at most six, balanced, mha (the reference) in each, one legend."""
    df = sweep_frame()
    extra = [df[df["variant"] == "mqa"].assign(variant=f"v{i:02d}") for i in range(13)]
    big = with_labels(pd.concat([df, *extra], ignore_index=True).assign(run="r"))
    rows = sf.series_rows(big)
    assert [len(r) for r in rows] == [1 + 6, 1 + 6, 1 + 6] and all(r[0] == "mha g=8" for r in rows)
    assert sorted({label for r in rows for label in r}) == sorted(big["label"].unique())
    fig = sf.latency_figure(big)
    assert len(fig.axes) == 3 * 3  # a row per group, a column per mode
    assert max(len(ax.lines) for ax in fig.axes) <= 1 + sf.SERIES_PER_PANEL
    assert sorted(_legend(fig)) == sorted([*big["label"].unique(), FAILED_ENTRY])  # the x: once


def test_fit_slope_recovers_power_law():
    assert math.isclose(fit_slope([128, 256, 512], [1.0, 4.0, 16.0]), 2.0)
    assert fit_slope([128, 128], [1.0, 2.0]) is None


def test_memory_panels_per_mode_plus_kv_cache(sweep):
    axes = sf.memory_figure(sweep).axes
    assert len(axes) == 4
    assert axes[-1].get_title().startswith("KV cache")
    assert all(ax.get_yscale() == "log" for ax in axes)
    assert axes[0].get_ylabel().startswith("transient peak above the step's start (")
    assert axes[-1].get_ylabel().startswith("kv_cache_bytes (")
    # mqa (g=1) holds an eighth of mha's (g=8) cache at every n.
    lines = {line.get_label(): line.get_ydata() for line in axes[-1].lines}
    assert list(lines["mha g=8"] / lines["mqa g=1"]) == [8.0, 8.0]


def test_tflops_bars_per_series(sweep):
    axes = sf.tflops_figure(sweep).axes
    assert axes[0].get_ylabel() == "achieved TFLOP/s"
    assert len(axes[0].patches) == 6 * 2  # six series, two n
    assert _failure_marks(axes[1]) == 1


def test_speedup_cells_divide_mha_by_variant(sweep):
    cells = sf.speedup_cells(sweep)
    row = cells[(cells["mode"] == "fwd") & (cells["variant"] == "mqa")].iloc[0]
    mha = sweep[(sweep["mode"] == "fwd") & (sweep["variant"] == "mha") & (sweep["seq_len"] == row["seq_len"])]
    assert row["seq_len"] == 256
    assert row["speedup"] == pytest.approx(mha["latency_ms_median"].iloc[0] / row["latency_ms_median"])
    # mha fwd_bwd ran out of memory at 256, so that mode is compared at 128.
    assert set(cells[cells["mode"] == "fwd_bwd"]["seq_len"]) == {128}
    assert set(cells[cells["mode"] == "decode"]["note"]) >= {"unsupported"}


def test_speedup_figure_heatmaps_over_heads(sweep):
    fig = sf.speedup_figure(sweep)
    heat = [ax for ax in fig.axes if ax.get_xlabel() == "n_kv_heads g"]
    assert len(heat) == 3 * 4  # modes x (dgqa, gqa, kdgqa, mqa)
    gqa_fwd = next(ax for ax in heat if ax.get_title() == "gqa\nfwd, n=256")
    assert [t.get_text() for t in gqa_fwd.get_xticklabels()] == ["2", "4"]
    assert all(t.get_text().endswith("×") for t in gqa_fwd.texts)
    kd_decode = next(ax for ax in heat if ax.get_title().startswith("kdgqa\ndecode"))
    assert [t.get_text() for t in kd_decode.texts] == ["✗ unsupported"]
    assert any("speedup vs mha" in ax.get_ylabel() for ax in fig.axes)  # the colour bar


def test_speedup_at_a_chosen_seq_len(sweep):
    assert set(sf.speedup_cells(sweep, seq_len=128)["seq_len"]) == {128}
    with pytest.raises(ValueError, match="seq_len=999"):
        sf.speedup_figure(sweep, seq_len=999)


def test_missing_column_is_named(sweep):
    with pytest.raises(ValueError, match=r"\['tflops'\]"):
        sf.tflops_figure(sweep.drop(columns="tflops"))


def test_several_runs_are_labelled_by_run(run_dir, other_run_dir):
    both = combined(load_runs([run_dir, other_run_dir]), "sweep")
    fwd = sf.latency_figure(both).axes[0::3]  # the fwd column: one panel per group of series
    labels = {line.get_label() for ax in fwd for line in ax.lines}
    assert len(labels) == 12
    assert any("· run-a" in label for label in labels) and any("· run-b" in label for label in labels)
    titles = [ax.get_title() for ax in sf.speedup_figure(both).axes]
    assert any(t.endswith("· run-b") for t in titles)


@pytest.fixture
def multimodal_sweep(tmp_path):
    """The fabricated sweep plus mmca cells whose m = n / 4 grows with n, as the sweep gives them."""
    df = sweep_frame()
    mmca = df[df["variant"] == "gqa"].assign(variant="mmca", options="")
    mmca["n_visual"] = mmca["seq_len"] // 4
    run = write_run(tmp_path / "mm", sweep=pd.concat([df, mmca], ignore_index=True))
    return combined(load_runs([run]), "sweep")


def test_multimodal_series_is_named_by_visual_fraction_not_m(multimodal_sweep):
    fig = sf.latency_figure(multimodal_sweep)
    legend = _legend(fig)
    mmca = [t for t in legend if t.startswith("mmca")]
    # one series per g over every n (so it has a slope), not one point per m
    assert len(mmca) == 2 and all("m/n=0.25" in t for t in mmca)
    assert all("m/n" not in t for t in legend if not t.startswith("mmca"))


def test_speedup_keeps_multimodal_cells_against_mha_at_the_same_n(multimodal_sweep):
    cells = sf.speedup_cells(multimodal_sweep)
    mmca = cells[cells["variant"] == "mmca"]
    assert len(mmca) > 0 and mmca["speedup"].notna().all()


def test_a_speedup_between_different_sdpa_kernels_is_starred(run_dir):
    """CUDA float32 GQA on math against MHA on memory-efficient: kernels, not variants."""
    df = sweep_frame(seq_lens=(128, 256), oom_at=256)
    df["sdpa_backend"] = df["variant"].map({"mha": "efficient", "gqa": "math"}).fillna("efficient")
    sweep = combined(load_runs([write_run(run_dir.parent / "kernels", sweep=df)]), "sweep")
    cells = sf.speedup_cells(sweep)
    assert set(cells[cells["kernels_differ"]]["variant"]) == {"gqa"}
    table = tables.speedup_table(sweep)
    starred = table[table["speedup vs mha"].str.endswith("×*")]
    assert set(starred["series"].str.split().str[0]) == {"gqa"}
    assert set(starred["sdpa kernels"]) == {"math vs mha's efficient: compares kernels, not variants"}
    heat = [ax for ax in sf.speedup_figure(sweep).axes if ax.get_xlabel() == "n_kv_heads g"]
    gqa_fwd = next(ax for ax in heat if ax.get_title().startswith("gqa\nfwd"))
    assert all(t.get_text().endswith("×*") for t in gqa_fwd.texts)
    mqa_fwd = next(ax for ax in heat if ax.get_title().startswith("mqa\nfwd"))
    assert all(t.get_text().endswith("×") for t in mqa_fwd.texts)


def test_no_star_where_every_kernel_matches(sweep):
    assert not sf.speedup_cells(sweep)["kernels_differ"].any()  # the fabricated run: math everywhere
    assert "sdpa kernels" not in tables.speedup_table(sweep).columns


def test_roofline_recovers_the_roof_from_the_rows_and_draws_it():
    """The roof comes back from flops_util and bw_util (reports/ reads CSVs only)."""
    from reports import roofline

    peak_flops, peak_bw = 2e12, 1e11
    rows = []
    for variant, mode, flops_eff, moved, ms in [
        ("mha", "fwd", 4e9, 4e6, 4.0),
        ("gqa", "decode", 1e6, 2e6, 0.05),
    ]:
        t = ms / 1e3
        rows.append(dict(run="r", device_name="gpu", dtype="bfloat16", variant=variant, options="", mode=mode,
                         status="ok", flops_effective=flops_eff, bytes_moved=moved, latency_ms_median=ms,
                         flops_util=flops_eff / t / peak_flops, bw_util=moved / t / peak_bw, seq_len=128,
                         n_heads=8, n_kv_heads=2, batch=1))  # fmt: skip
    points = roofline.roofline_points(pd.DataFrame(rows))
    assert points["peak_flops"].tolist() == pytest.approx([peak_flops] * 2)
    assert points["peak_bw"].tolist() == pytest.approx([peak_bw] * 2)
    fig = roofline.roofline_figure(pd.DataFrame(rows))
    assert "roof: 2 TFLOP/s, 100 GB/s" in _legend(fig)


def test_roofline_legend_keys_colour_by_variant_and_marker_by_mode(tmp_path):
    """Ten variants x three modes: 14 legend entries (roof, variants, modes), not 31, and the
    figure saves without matplotlib giving up on the layout (it did with one entry per pair)."""
    import warnings

    from reports import roofline

    variants, modes = [f"v{i}" for i in range(10)], ["fwd", "fwd_bwd", "decode"]
    rows = [
        dict(run="r", device_name="cpu", dtype="float32", variant=v, options="", mode=m, status="ok",
             flops_effective=1e9, bytes_moved=1e6, latency_ms_median=10.0, flops_util=0.5, bw_util=0.01,
             seq_len=128, n_heads=8, n_kv_heads=2, batch=1)
        for v in variants for m in modes
    ]  # fmt: skip
    fig = roofline.roofline_figure(pd.DataFrame(rows))
    labels = _legend(fig)
    assert len(labels) == 1 + 10 + 3 and {f"mode: {m}" for m in modes} <= set(labels)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig.savefig(tmp_path / "roofline.png")


def test_roofline_marks_decode_points_by_their_own_bytes_and_their_gap_to_the_roof():
    """A decode row with decode_bytes sits at flops_effective / decode_bytes, and a dotted line
    rises from it to the roof: its length on the log axis is 1 / roof_util."""
    from reports import roofline

    peak_flops, peak_bw = 1e11, 2e10
    flops_eff, moved, real, ms = 6.4e7, 3.3e7, 4.4e7, 6.0  # a gqa step at s=16k: cache + weights
    t = ms / 1e3
    roof_s = max(real / peak_bw, flops_eff / peak_flops)
    row = dict(run="r", device_name="cpu", dtype="float32", variant="gqa", options="", mode="decode",
               status="ok", flops_effective=flops_eff, bytes_moved=moved, decode_bytes=real,
               roof_s=roof_s, roof_util=roof_s / t, latency_ms_median=ms, seq_len=16384, n_heads=16,
               flops_util=flops_eff / t / peak_flops, bw_util=moved / t / peak_bw, n_kv_heads=4,
               batch=1)  # fmt: skip
    points = roofline.roofline_points(pd.DataFrame([row]))
    assert points["intensity"].tolist() == pytest.approx([flops_eff / real])
    fig = roofline.roofline_figure(pd.DataFrame([row]))
    ax = fig.axes[0]
    assert "decode: up to its roof (1 / roof_util)" in ax.get_legend_handles_labels()[1]
    gap = next(line for line in ax.get_lines() if line.get_linestyle() == ":" and len(line.get_ydata()) == 2)
    low, high = gap.get_ydata()
    assert low / high == pytest.approx(row["roof_util"])


def test_decode_memory_panel_shows_the_resident_bytes_under_the_transient_peak(sweep):
    """A decode step's transient peak is a few KB above its start whatever the cache; the panel
    shows what the step holds: resident bytes (weights + tokens + cache) plus that peak."""
    decode = sweep["mode"] == "decode"
    resident = sweep.assign(resident_bytes=(sweep["kv_cache_bytes"] + 1000).where(decode))
    axes = sf.memory_figure(resident).axes
    panel = next(ax for ax in axes if "decode" in ax.get_title())
    assert panel.get_ylabel().startswith("resident + transient peak (")
    mha = resident[decode & (resident["variant"] == "mha") & (resident["status"] == "ok")]
    held = (mha["resident_bytes"] + mha["peak_mem_bytes"]).to_numpy()
    line = next(line for line in panel.lines if line.get_label() == "mha g=8")
    unit = held[0] / line.get_ydata()[0]
    np.testing.assert_allclose(line.get_ydata() * unit, held)
    assert "transient peak" in sf.memory_figure(sweep).axes[2].get_title()  # no resident_bytes: the peak
