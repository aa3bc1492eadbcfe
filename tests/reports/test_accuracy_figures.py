import pytest
from matplotlib.collections import PathCollection

from reports import accuracy_figures as af
from reports import tables
from reports.load import combined, load_runs
from reports.style import FAIL_GID

from .fabricate import accuracy_frame


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


def marked_frame():
    """One seed each; the task says whether it is causal, the registry whether the variant is safe."""
    df = accuracy_frame(seeds=(0,))
    df = df[df["status"] == "ok"].copy()
    df["causal"] = df["task"] == "mqar"
    df["causal_safe"] = ~df["variant"].isin(["kdgqa", "dgqa"])
    return df


def test_one_seed_shows_n1_not_a_zero_spread():
    table = tables.accuracy_table(marked_frame())
    assert table["accuracy (mean ± std)"].str.endswith("(n=1)").all()
    assert not table["accuracy (mean ± std)"].str.contains("±").any()
    three = tables.accuracy_table(accuracy_frame())
    assert three["accuracy (mean ± std)"].str.contains(r"± 0\.\d{3} \(n=3\)").any()


def test_non_causal_safe_variants_on_causal_tasks_are_marked_in_table_and_figures():
    df = marked_frame()
    table = tables.accuracy_table(df)
    marked = table[table["series"].str.endswith("†")]
    assert set(marked["task"]) == {"mqar"} and len(marked) == 2  # kdgqa and dgqa on mqar only
    assert marked["series"].str.startswith(("kdgqa", "dgqa")).all()
    fig = af.accuracy_figure(df)
    mqar = next(ax for ax in fig.axes if ax.get_title() == "task: mqar")
    digits = next(ax for ax in fig.axes if ax.get_title() == "task: digits")
    assert sum(t.get_text().endswith("†") for t in mqar.get_xticklabels()) == 2
    assert not any(t.get_text().endswith("†") for t in digits.get_xticklabels())
    assert "not causal-safe" in fig._suptitle.get_text()
    trade = next(ax for ax in af.tradeoff_figure(df).axes if ax.get_title() == "task: mqar")
    assert any(text.endswith("†") for text in trade.get_legend_handles_labels()[1])
    assert not tables.accuracy_table(accuracy_frame())["series"].str.contains("†").any()  # old CSVs
