"""`attnbench compare RUN_A RUN_B` through typer's CliRunner: output, exit codes, bad input."""

import inspect

import pytest
from typer.testing import CliRunner

from harness import compare_runs
from harness.cli import app
from harness.cli.tools import compare_command
from reports import comparison
from tests.reports.ab_runs import FASTER, cell_mask, pair, write_pair

runner = CliRunner()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return write_pair(tmp_path_factory.mktemp("ab"))


def invoke(*args):
    return runner.invoke(app, ["compare", *map(str, args)])


def test_prints_the_table_and_exits_0_with_a_slower_cell(runs):
    result = invoke(*runs)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "A = run-a, B = run-b." and lines[1].startswith("B/A: median latency ratio")
    slow = next(line for line in lines if "gqa fwd n=256 g=2 " in line)
    assert "slower" in slow and "1.5×" in slow
    assert "faster" in next(line for line in lines if "mqa decode n=128 g=1 " in line)
    assert "1 slower, 1 faster, 30 same, 4 not run." in result.output
    assert "environments differ" not in result.output


def test_fail_on_slower_exits_1_naming_the_cell(runs):
    result = invoke(*runs, "--fail-on-slower")
    assert result.exit_code == 1
    assert "FAIL: slower in B or stopped running (1): gqa fwd n=256 g=2" in result.output


def test_fail_on_slower_exits_0_when_nothing_is_slower(tmp_path):
    result = invoke(*write_pair(tmp_path, *pair(slower=1 / 1.5)), "--fail-on-slower")
    assert result.exit_code == 0, result.output
    assert "FAIL" not in result.output and "2 faster, 30 same, 4 not run." in result.output


def test_threshold_turns_a_real_change_into_same(runs):
    result = invoke(*runs, "--threshold", "0.6", "--fail-on-slower")
    assert result.exit_code == 0
    assert "32 same, 4 not run." in result.output and "±0.6" in result.output


def test_different_environment_is_one_header_line(tmp_path):
    a, b = pair()
    b = b.assign(threads=1, torch_version="2.14.0")
    result = invoke(*write_pair(tmp_path, a, b))
    assert result.exit_code == 0
    env = [line for line in result.output.splitlines() if "environments differ" in line]
    assert env == [
        "environments differ: torch_version 2.13.0 vs 2.14.0; threads 2 vs 1; the ratios include that, "
        "not only the code."
    ]
    assert "slower" in result.output  # ratios and verdicts are still shown


def test_unmatched_and_stopped_cells_are_listed(tmp_path):
    a, b = pair()
    b = b.copy()
    b.loc[cell_mask(b, FASTER), "status"] = "error"
    b = b[~((b["variant"] == "mha") & (b["mode"] == "fwd"))]
    result = invoke(*write_pair(tmp_path, a, b), "--fail-on-slower")
    assert result.exit_code == 1
    rows = [line for line in result.output.splitlines() if "only in A" in line and "│" in line]
    assert [row.split("│")[1].strip() for row in rows] == ["mha fwd n=128 g=8", "mha fwd n=256 g=8"]
    assert "2 only in A." in result.output
    assert "A ok, B error" in result.output
    assert (
        "FAIL: slower in B or stopped running (2): " in result.output
        and "mqa decode n=128 g=1" in result.output.splitlines()[-1]
    )


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: None, "holds no sweep.csv or accuracy.csv"),
        (
            lambda d: (d / "accuracy.csv").write_text("task,variant,accuracy,status\nmqar,gqa,0.9,ok\n"),
            "no sweep.csv",
        ),
        (lambda d: (d / "sweep.csv").write_text("variant,mode\ngqa,fwd\n"), "missing required columns"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, runs, make, message):
    make(tmp_path)
    result = invoke(tmp_path, runs[1])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("flag", [["--alpha", "0"], ["--threshold", "1.5"]])
def test_bad_settings_exit_2(runs, flag):
    result = invoke(*runs, *flag)
    assert result.exit_code == 2 and "must both be in (0, 1)" in result.output


def test_cli_defaults_are_the_reports_defaults():
    """The flags' defaults (written out in harness/cli/tools.py so --help shows them) are the report's."""
    flags = inspect.signature(compare_command).parameters
    api = inspect.signature(compare_runs.main).parameters
    assert flags["threshold"].default == api["threshold"].default == comparison.THRESHOLD == 0.05
    assert flags["alpha"].default == api["alpha"].default == comparison.ALPHA == 0.01


def test_a_folder_of_repeated_runs_is_one_side(tmp_path):
    """Each argument may be a folder of run folders: the verdict then rests on the drift between
    the runs of a side (header: runs per side, its sd and df), not on the threshold alone."""
    from tests.reports.ab_runs import drifted_runs
    from tests.reports.fabricate import sweep_frame, write_run

    base = sweep_frame(seq_lens=(128,), oom_at=None)
    for side, scale in (("before", 1.0), ("after", 1.10)):
        for i, run in enumerate(drifted_runs(base, 3, sd=0.01, seed=len(side), scale=scale)):
            write_run(tmp_path / side / f"run{i}", sweep=run)
    result = invoke(tmp_path / "before", tmp_path / "after", "--fail-on-slower")
    assert result.exit_code == 1, result.output
    assert "(3 vs 3 runs; <1: B faster)" in result.output and "df 64" in result.output
    assert "16 slower, 2 not run." in result.output
    one = invoke(tmp_path / "before" / "run0", tmp_path / "after" / "run0")
    assert one.exit_code == 0 and "cannot be estimated" in one.output
