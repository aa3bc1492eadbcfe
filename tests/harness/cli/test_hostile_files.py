"""Hostile and mistaken invocations: every file a command reads can be wrong, every output path
too. Each bad case is one line on stderr naming the file or value, exit 2, no traceback, and
nothing written; `--resume` repairs what a kill or an edit left in sweep.csv."""

import csv
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.sweep.grid import row_key

runner = CliRunner()
BASELINE = Path(__file__).resolve().parents[3] / "benchmarks" / "baselines" / "ci-cpu.csv"


@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> Path:
    """One finished tiny sweep (two cells: mha and gqa at n=16), copied by each test."""
    root = tmp_path_factory.mktemp("measured")
    (root / "empty.toml").write_text("")
    args = [
        "sweep", "--config", str(root / "empty.toml"), "--out", str(root / "out"), "--device", "cpu",
        "--variants", "mha,gqa", "--seq-len", "16", "--heads", "2", "--kv-heads", "1", "--modes", "fwd",
        "--batch", "1", "--head-dim", "8", "--repeats", "2", "--warmup", "0", "--threads", "1", "--no-report",
    ]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (run,) = (root / "out").iterdir()
    return run


@pytest.fixture
def run(measured, tmp_path) -> Path:
    """A copy of the measured run, the test's own to break."""
    return Path(shutil.copytree(measured, tmp_path / "run"))


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every file and folder under `folder`, with the files' bytes: what a failed command must leave."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in folder.rglob("*")}


def refused(args: list[str], where: Path) -> str:
    """Run a command that must fail cleanly; its one line on stderr."""
    before = tree(where)
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output
    assert tree(where) == before  # nothing made, nothing changed
    return result.stderr


def rows(run: Path) -> list[dict[str, str]]:
    with open(run / "sweep.csv", newline="") as f:
        return list(csv.DictReader(f))


def lines(run: Path) -> list[str]:
    return (run / "sweep.csv").read_text().splitlines(keepends=True)


# --- resume repairs ------------------------------------------------------------------------------


def cut_last_row(run: Path) -> str:
    text = (run / "sweep.csv").read_text()
    (run / "sweep.csv").write_text(text[: len(text) - len(lines(run)[-1]) // 2])  # killed mid-write
    return "dropped 1 partial row of sweep.csv: line 3"


def garbage_line(run: Path) -> str:
    (run / "sweep.csv").write_text("".join(lines(run)) + "garbage,,zz\n")
    return "dropped 1 partial row of sweep.csv: line 4"


def no_status(run: Path) -> str:
    table = rows(run)
    table[-1]["status"] = ""
    write(run, table)
    return "dropped 1 bad row of sweep.csv: line 3 (has no status)"


def not_a_number(run: Path) -> str:
    table = rows(run)
    table[0]["latency_ms_median"] = "fast"
    write(run, table)
    return "dropped 1 bad row of sweep.csv: line 2 (has latency_ms_median='fast', not a number)"


def repeated(run: Path) -> str:
    (run / "sweep.csv").write_text("".join(lines(run)) + lines(run)[-1])
    return "dropped 1 bad row of sweep.csv: line 4 (repeats the row of line 3"


def write(run: Path, table: list[dict[str, str]]) -> None:
    with open(run / "sweep.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)


@pytest.mark.parametrize("damage", [cut_last_row, garbage_line, no_status, not_a_number, repeated])
def test_resume_drops_what_it_cannot_trust_and_measures_it_again(run, damage):
    kept = {row_key(r): r for r in rows(run)}
    message = damage(run)
    result = runner.invoke(app, ["sweep", "--resume", str(run), "--no-report"])
    assert result.exit_code == 0, result.output
    assert message in " ".join(result.stdout.split())
    after = rows(run)
    assert sorted(row_key(r) for r in after) == sorted(kept)  # one row per cell, none lost
    assert all(r["status"] == "ok" and float(r["latency_ms_median"]) > 0 for r in after)
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]  # the atomic rewrite's file
    again = runner.invoke(app, ["sweep", "--resume", str(run), "--no-report"])
    assert again.exit_code == 0 and "dropped" not in again.stdout  # the repair held
    assert rows(run) == after


# --- a file that cannot be read is an error naming it -----------------------------------------------


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("run.json", b"[]\n", "run.json '{run}/run.json' must hold an object, not list"),
        ("run.json", b'{"run_id": "x", "sta', "run.json '{run}/run.json': line 1 is not valid JSON"),
        ("run.json", b'{"run_id": "x"}', "run.json '{run}/run.json' has no 'config' object"),
        ("sweep.csv", bytes(range(128, 256)), "sweep CSV '{run}/sweep.csv': line 1 is not UTF-8 text"),
        ("sweep.csv", b"variant,mode\ngqa,fwd\n", "sweep CSV '{run}/sweep.csv': line 1, the header, is not"),
    ],
)
def test_resume_names_the_file_it_cannot_read(run, name, content, message):
    (run / name).write_bytes(content)
    assert message.format(run=run) in refused(["sweep", "--resume", str(run)], run.parent)


def test_compare_and_report_name_the_bad_file_and_line(run, measured):
    (run / "sweep.csv").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(128, 256)))
    assert "line 1 is not UTF-8 text" in refused(["compare", str(run), str(measured)], run.parent)
    (run / "sweep.csv").write_bytes((measured / "sweep.csv").read_bytes()[:-40])
    assert f"sweep CSV '{run}/sweep.csv': line 3 has " in refused(["report", str(run)], run.parent)
    text = (measured / "sweep.csv").read_text()
    (run / "sweep.csv").write_text(text + text.splitlines(keepends=True)[1])
    assert "line 4 repeats the row of line 2" in refused(["compare", str(measured), str(run)], run.parent)
    (run / "sweep.csv").write_text(text)
    (run / "run.json").write_text("{")
    assert f"run.json '{run}/run.json': line 1 is not valid JSON" in refused(["report", str(run)], run.parent)


def test_a_bad_accuracy_csv_is_named(run):
    (run / "accuracy.csv").write_text("task,variant,accuracy,status\nmqar,gqa,0.5,ok\nmqar,mha,high,ok\n")
    message = refused(["report", str(run)], run.parent)
    assert f"accuracy CSV '{run}/accuracy.csv': line 3 has accuracy='high', not a number" in message


def baseline_lines(n: int) -> str:
    return "".join(BASELINE.read_text().splitlines(keepends=True)[:n])


@pytest.mark.parametrize(
    "content, message",
    [
        ("cell,variant\nx,y\n", "line 1 (the header) is missing required columns ['options'"),
        (None, "line 2 has seq_len='zz128', not an integer"),
        ("", "is empty: no header, no rows"),
        (b"\xff\xfe\x00garbage", "line 1 is not UTF-8 text (byte 0xff)"),
        ("short", "line 2 has 3 fields, the header 28"),
    ],
)
def test_check_names_a_bad_baseline_before_it_writes(tmp_path, content, message):
    path = tmp_path / "baseline.csv"
    if content is None:
        first, second = baseline_lines(2).splitlines(keepends=True)
        path.write_text(first + second.replace(",128,", ",zz128,", 1))
    elif content == "short":
        path.write_text(baseline_lines(1) + "a,b,c\n")
    else:
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    (tmp_path / "empty.toml").write_text("")
    args = ["check", "--config", str(tmp_path / "empty.toml"), "--baseline", str(path)]
    args += ["--out", str(tmp_path / "results"), "--variants", "gqa", "--modes", "fwd"]
    out = refused(args, tmp_path)
    assert f"check baseline '{path}'" in out and message in out


# --- output paths -----------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["sweep", "accuracy", "check", "generate", "decide", "selftest"])
def test_an_empty_out_is_refused(tmp_path, command, monkeypatch):
    monkeypatch.chdir(tmp_path)  # were '' read as '.', the run would land here
    (tmp_path / "empty.toml").write_text("")
    message = refused([command, "--config", str(tmp_path / "empty.toml"), "--out", ""], tmp_path)
    assert "'' is empty: name a folder" in message


@pytest.mark.parametrize(
    "out, message",
    [
        ("", "--out '' is empty"),
        ("/proc/attnbench-x", "output folder '/proc/attnbench-x' is not writable"),
        ("{tmp}/a-file", "output folder '{tmp}/a-file' is an existing file, not a folder"),
    ],
)
def test_report_checks_its_out_before_drawing(run, out, message):
    (run.parent / "a-file").write_text("keep me")
    args = ["report", str(run), "--out", out.format(tmp=run.parent)]
    assert message.format(tmp=run.parent) in refused(args, run.parent)


# --- settings -----------------------------------------------------------------------------------


def test_a_profile_without_the_commands_table_names_those_with_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    message = refused(["sweep", "--profile", "ci-instructions"], tmp_path)
    assert "profile 'ci-instructions' has no [profiles.ci-instructions.sweep] table" in message
    assert "profiles with one: ['ci', 'decide', 'gpu', 'quick']" in message


@pytest.mark.parametrize(
    "content, message",
    [
        (b"4\n8\nx\n", "line 3 is 'x', not a length >= 1"),
        (b"4\n0\n", "line 2 is '0', not a length >= 1"),
        (b"\n\n", "holds no length"),
        (b"4\n\xff\n", "line 2 is not UTF-8 text"),
    ],
)
def test_a_bad_length_file_names_its_line(tmp_path, content, message):
    path = tmp_path / "lengths.txt"
    path.write_bytes(content)
    (tmp_path / "empty.toml").write_text("")
    args = ["sweep", "--config", str(tmp_path / "empty.toml"), "--out", str(tmp_path / "out")]
    out = refused([*args, "--modes", "decode", "--lengths", f"file:{path}"], tmp_path)
    assert f"the length file '{path}'" in out and message in out


def test_a_binary_bench_toml_is_named(tmp_path):
    (tmp_path / "bench.toml").write_bytes(b"\x00\xff\xfe")
    message = refused(["sweep", "--config", str(tmp_path / "bench.toml")], tmp_path)
    assert f"config file '{tmp_path}/bench.toml' cannot be read" in message


def test_resume_drops_a_last_row_cut_inside_its_last_field(run):
    text = (run / "sweep.csv").read_text()
    (run / "sweep.csv").write_text(text.rstrip("\r\n")[:-1])  # the field count looks whole
    result = runner.invoke(app, ["sweep", "--resume", str(run), "--no-report"])
    assert result.exit_code == 0, result.output
    assert "dropped 1 partial row of sweep.csv: line 3 (has no line end: cut short)" in result.stdout
    assert all(r["attempts"] == "1" for r in rows(run)) and len(rows(run)) == 2
