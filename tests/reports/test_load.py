import pytest

from reports.load import combined, format_options, load_run, load_runs, series_label, unique_labels

from .fabricate import sweep_frame, write_run


def test_load_run_reads_both_tables_and_meta(run_dir):
    run = load_run(run_dir)
    assert run.label == "run-a"
    assert run.sweep is not None and run.accuracy is not None
    assert run.meta["command"] == "sweep"
    assert set(run.sweep["status"]) == {"ok", "oom", "unsupported"}


def test_options_json_is_unpacked(run_dir):
    assert "kind=ema" in set(load_run(run_dir).sweep["options"])
    assert format_options('{"kind": "diff", "window": 4}') == "kind=diff, window=4"
    assert format_options(float("nan")) == "" and format_options("{}") == ""
    assert format_options("kind=ema") == "kind=ema"


def test_extra_columns_are_tolerated(tmp_path):
    run = write_run(tmp_path / "r", sweep=sweep_frame(seq_lens=(128,)).assign(new_metric=1.0))
    assert "new_metric" in load_run(run).sweep.columns


def test_no_csv_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="holds no sweep.csv or accuracy.csv"):
        load_run(tmp_path)


def test_missing_directory_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_run(tmp_path / "nope")


def test_missing_columns_are_named(tmp_path):
    write_run(tmp_path, sweep=sweep_frame(seq_lens=(128,)).drop(columns=["seq_len", "status"]))
    with pytest.raises(ValueError, match=r"missing required columns \['seq_len', 'status'\]"):
        load_run(tmp_path)


@pytest.mark.parametrize("content", ["", "variant,mode,seq_len,status,latency_ms_median\n"])
def test_empty_csv_is_an_error(tmp_path, content):
    (tmp_path / "sweep.csv").write_text(content)
    with pytest.raises(ValueError, match="empty|no rows"):
        load_run(tmp_path)


def test_bad_run_json_is_an_error(tmp_path):
    write_run(tmp_path, sweep=sweep_frame(seq_lens=(128,)))
    (tmp_path / "run.json").write_text("[1, 2")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_run(tmp_path)


def test_same_named_runs_get_distinct_labels(tmp_path):
    a, b = tmp_path / "x" / "run", tmp_path / "y" / "run"
    assert unique_labels([a, b]) == ["x/run", "y/run"]
    for p in (a, b):
        write_run(p, sweep=sweep_frame(seq_lens=(128,)))
    both = combined(load_runs([a, b]), "sweep")
    assert set(both["run"]) == {"x/run", "y/run"}
    assert combined(load_runs([a]), "accuracy") is None


def test_series_label_names_variant_options_shape_and_run():
    key = dict(variant="dgqa", options="kind=ema", n_heads=8, n_kv_heads=2.0, run="a")
    assert series_label(key) == "dgqa(kind=ema) h=8 g=2 · a"
