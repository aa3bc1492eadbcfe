"""`attnbench accuracy` end to end on ~20-step runs: rows, statuses, unsupported pairings, bad input."""

import csv
import itertools

import pytest
from typer.testing import CliRunner

import attn_variants as av
from attn_variants.registry import _REGISTRY, register
from harness.accuracy.runner import COLUMNS
from harness.cli import app
from reports.load import ACCURACY_CORE, load_run

runner = CliRunner()
# The columns the issue and reports/ (tests/reports/fabricate.py ACCURACY_COLUMNS) expect.
REPORT_COLUMNS = (
    "run_id task variant options n_heads n_kv_heads seed steps accuracy loss wall_s kv_cache_bytes "
    "status error init"
).split()
_ids = itertools.count()


def smoke(tmp_path, *extra):
    """The ci profile (about 20 steps per task) from the repo's bench.toml, no report."""
    return ["accuracy", "--profile", "ci", "--out", str(tmp_path / "out"), "--no-report", *extra]


def read_csv(result):
    path = result.output.strip().splitlines()[-1].removeprefix("CSV: ").strip()
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def registered():
    """Register test-only variants under unique names; removed afterwards."""
    names = []

    def add(cls, **kw):
        name = f"_test_acc_{next(_ids)}"
        register(name, description="test", paper="-", **kw)(cls)
        names.append(name)
        return name

    yield add
    for name in names:
        del _REGISTRY[name]


@pytest.mark.parametrize("task", ["mqar", "digits", "captions"])
def test_smoke_run_per_task_writes_ok_rows(tmp_path, task):
    result = runner.invoke(app, smoke(tmp_path, "--tasks", task, "--variants", "mha,gqa", "--kv-heads", "2"))
    assert result.exit_code == 0, result.output
    rows = read_csv(result)
    assert set(REPORT_COLUMNS) <= set(rows[0]) and tuple(rows[0]) == COLUMNS
    assert {r["status"] for r in rows} == {"ok"} and {r["task"] for r in rows} == {task}
    for row in rows:
        assert 0.0 <= float(row["accuracy"]) <= 1.0 and float(row["loss"]) > 0
        assert float(row["chance"]) == {"mqar": 1 / 32, "digits": 0.1, "captions": 0.1}[task]
        assert int(row["kv_cache_bytes"]) == 2 * 2 * int(row["n_kv_heads"]) * int(row["seq_len"]) * 8 * 4
    inits = sorted((r["variant"], r["init"], int(r["steps"])) for r in rows)
    if task == "digits":  # mha is the source; gqa is uptrained from it (20 + 5 steps) and from scratch
        assert inits == [("gqa", "scratch", 20), ("gqa", "uptrained", 25), ("mha", "scratch", 20)]
    else:
        assert inits == [("gqa", "scratch", 20), ("mha", "scratch", 20)]
    assert {r["n_visual"] for r in rows} == ({"16"} if task == "captions" else {"0"})
    assert task in result.output and "accuracy summary" in result.output


def test_options_are_kept_in_rows_and_summary_labels(tmp_path):
    result = runner.invoke(app, smoke(tmp_path, "--tasks", "mqar", "--variants", "gqa,gqa:backend=eager"))
    assert result.exit_code == 0, result.output
    assert sorted(r["options"] for r in read_csv(result)) == ["", "backend=eager"]
    assert "gqa_g2[backend=eager]" in result.output  # not eaten as rich markup


def test_reports_read_the_csv(tmp_path):
    result = runner.invoke(app, smoke(tmp_path, "--tasks", "mqar", "--variants", "mqa"))
    assert result.exit_code == 0, result.output
    run = load_run(next((tmp_path / "out").iterdir()))
    assert run.accuracy is not None and set(ACCURACY_CORE) <= set(run.accuracy.columns)
    assert run.meta["command"] == "accuracy" and run.meta["config"]["mqar_steps"] == 20


def test_report_is_drawn_at_the_end_without_no_report(tmp_path):
    args = smoke(tmp_path, "--tasks", "mqar", "--variants", "mqa")
    result = runner.invoke(app, [a for a in args if a != "--no-report"])
    assert result.exit_code == 0, result.output
    run_dir = next((tmp_path / "out").iterdir())
    assert (run_dir / "report" / "index.html").is_file() and "report:" in result.output
    assert (run_dir / "report" / "accuracy.png").is_file()


def test_same_seed_same_rows(tmp_path):
    args = ("--tasks", "mqar,captions", "--variants", "gqa", "--seeds", "3")
    first = read_csv(runner.invoke(app, smoke(tmp_path / "a", *args)))
    second = read_csv(runner.invoke(app, smoke(tmp_path / "b", *args)))
    assert [(r["accuracy"], r["loss"]) for r in first] == [(r["accuracy"], r["loss"]) for r in second]


class Multimodal(av.GroupedQueryAttention):
    """A multimodal-only stand-in: it needs the visual prefix."""

    def forward(self, x, *, n_visual=0, cache=None):
        if n_visual == 0:
            raise AssertionError("a multimodal variant was run without visual tokens")
        return super().forward(x, n_visual=n_visual, cache=cache)


class Broken(av.GroupedQueryAttention):
    def attend(self, q, k, v, *, n_visual, cache):
        raise RuntimeError("kernel exploded")


def test_multimodal_variant_is_unsupported_on_unimodal_tasks_and_runs_captions(tmp_path, registered):
    name = registered(Multimodal, multimodal=True)
    result = runner.invoke(app, smoke(tmp_path, "--variants", name, "--tasks", "mqar,digits,captions"))
    assert result.exit_code == 0, result.output
    status = {r["task"]: (r["status"], r["error"]) for r in read_csv(result)}
    assert status["mqar"][0] == status["digits"][0] == "unsupported"
    assert "multimodal" in status["mqar"][1] and status["captions"] == ("ok", "")


def test_a_failing_variant_is_an_error_row_and_the_run_goes_on(tmp_path, registered):
    name = registered(Broken)
    result = runner.invoke(app, smoke(tmp_path, "--variants", f"{name},mqa", "--tasks", "mqar"))
    assert result.exit_code == 0, result.output
    rows = {r["variant"]: r for r in read_csv(result)}
    assert rows[name]["status"] == "error" and "kernel exploded" in rows[name]["error"]
    assert rows[name]["accuracy"] == "" and rows["mqa"]["status"] == "ok"


def test_variants_all_expands_to_the_registry(tmp_path):
    result = runner.invoke(app, smoke(tmp_path, "--variants", "all", "--tasks", "mqar"))
    assert result.exit_code == 0, result.output
    assert {r["variant"] for r in read_csv(result)} == set(av.names())


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--tasks", "sudoku"], "tasks='sudoku' is not one of ['mqar', 'digits', 'captions', 'pairs']"),
        (["--variants", "nope"], "unknown variant 'nope'"),
        (["--variants", "gqa:bogus=1"], "unknown option(s) ['bogus']"),
        (["--kv-heads", "3"], "kv_heads [3] must be positive divisors of heads=4"),
        (["--seeds", "a"], "--seeds 'a' must be a comma-separated list of integers"),
        (["--ablate", "zeros"], "ablate='zeros' is not one of"),
        (["--profile", "huge"], "unknown profile 'huge'"),
        (["--dim", "30"], "dim=30 is not divisible by heads=4"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, flags, message):
    result = runner.invoke(app, smoke(tmp_path, *flags))
    assert result.exit_code == 2
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_rows_say_causal_and_causal_safe_and_the_summary_marks_one_seed_and_leaks(tmp_path):
    """kdgqa (not causal-safe) on mqar (a causal task) is marked; one seed reads n=1, not ± 0.000."""
    result = runner.invoke(app, smoke(tmp_path, "--tasks", "mqar", "--variants", "gqa,kdgqa", "--seeds", "0"))
    assert result.exit_code == 0, result.output
    rows = {r["variant"]: r for r in read_csv(result)}
    assert rows["kdgqa"]["causal"] == rows["gqa"]["causal"] == "True"
    assert rows["kdgqa"]["causal_safe"] == "False" and rows["gqa"]["causal_safe"] == "True"
    assert "(n=1)" in result.output and "± 0.000" not in result.output
    assert "kdgqa_g2 †" in result.output and "│ gqa_g2 †" not in result.output
    assert "†: not causal-safe, on a causal task" in result.output
