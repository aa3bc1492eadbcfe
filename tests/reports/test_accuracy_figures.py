import pytest
from matplotlib.collections import PathCollection

from reports import accuracy_figures as af
from reports.load import combined, load_runs
from reports.style import FAIL_GID


@pytest.fixture
def accuracy(run_dir):
    return combined(load_runs([run_dir]), "accuracy")


def test_stats_mean_and_std_over_ok_seeds(accuracy):
    stats = af.accuracy_stats(accuracy).set_index(["task", "label"])
    mha = accuracy[(accuracy["task"] == "mqar") & (accuracy["variant"] == "mha")]["accuracy"]
    row = stats.loc[("mqar", "mha g=8 init=scratch")]
    assert row["mean"] == pytest.approx(mha.mean()) and row["std"] == pytest.approx(mha.std())
    assert row["seeds"] == 3 and row["failed"] == 0
    assert stats.loc[("digits", "gqa g=4 init=uptrained"), "failed"] == 1


def test_accuracy_bars_per_task_with_seed_dots_and_failures(accuracy):
    axes = af.accuracy_figure(accuracy).axes
    assert [ax.get_title() for ax in axes] == ["task: digits", "task: mqar"]
    digits = axes[0]
    ticks = [t.get_text() for t in digits.get_xticklabels()]
    assert "dgqa(kind=ema) g=2 init=uptrained" in ticks and len(ticks) == 6
    assert len(digits.patches) == 6
    dots = [c for c in digits.collections if isinstance(c, PathCollection) and c.get_gid() is None]
    seed_dots = sum(len(c.get_offsets()) for c in dots)
    assert seed_dots == 18  # 6 series x 3 seeds
    assert sum(c.get_gid() == FAIL_GID for c in digits.collections) == 1
    assert "1 error" in [t.get_text() for t in digits.texts]
    assert digits.get_ylabel() == "accuracy (fraction correct)"


def test_tradeoff_log_x_one_point_per_series(accuracy):
    fig = af.tradeoff_figure(accuracy)
    mqar = fig.axes[1]
    assert mqar.get_xscale() == "log" and "KV-cache size (KiB" in mqar.get_xlabel()
    assert mqar.get_legend() is None  # one legend for the figure, under its panels
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert sorted(legend) == sorted(af.accuracy_stats(accuracy)["label"].unique())
    assert set(mqar.get_legend_handles_labels()[1]) == set(
        af.accuracy_stats(accuracy).query("task == 'mqar'")["label"]
    )


def test_tradeoff_needs_kv_cache_bytes(accuracy):
    with pytest.raises(ValueError, match="kv_cache_bytes"):
        af.tradeoff_figure(accuracy.drop(columns="kv_cache_bytes"))
