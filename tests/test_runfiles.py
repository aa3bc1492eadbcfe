"""runfiles/: the checked readers every command reads its files with."""

import dataclasses
import typing

import pytest

import runfiles
from harness import records
from harness.accuracy.runner import AccuracyRow
from harness.generate.cell import GenerateRow
from runfiles import kinds


def typed(row_type: type, kind: type) -> frozenset[str]:
    hints = typing.get_type_hints(row_type)
    return frozenset(
        f.name
        for f in dataclasses.fields(row_type)
        if kind in (hints[f.name], *typing.get_args(hints[f.name]))
    )


@pytest.mark.parametrize(
    "spec, row_type",
    [(kinds.SWEEP, records.Row), (kinds.ACCURACY, AccuracyRow), (kinds.GENERATE, GenerateRow)],
)
def test_the_specs_type_the_columns_the_rows_have(spec, row_type):
    """reports/ reads the CSVs without importing harness: the specs' lists must follow the rows."""
    assert spec.integers == typed(row_type, int)
    assert spec.floats == typed(row_type, float)
    names = {f.name for f in dataclasses.fields(row_type)}
    assert set(spec.required) | set(spec.samples) <= names
    assert set(spec.key if isinstance(spec.key, tuple) else ()) <= names
    assert kinds.STATUSES == records.STATUSES


SPEC = runfiles.Spec("test CSV", required=("a", "status"), integers=frozenset("a"), floats=frozenset("b"),
                     samples=frozenset({"s"}), choices={"status": ("ok", "error")}, key=("a",))  # fmt: skip


@pytest.mark.parametrize(
    "text, message",
    [
        ("a,b\n1,2\n", "line 1 (the header) is missing required columns ['status']"),
        ("a,a,status\n", "line 1 names column(s) ['a'] twice"),
        ("a,b,status,s\n1,2,ok,\n1.5,2,ok,\n", "line 3 has a='1.5', not an integer"),
        ("a,b,status,s\n1,x,ok,\n", "line 2 has b='x', not a number"),
        ("a,b,status,s\n1,2,ok,1;y\n", "line 2 has 'y' among its s, not a number"),
        ("a,b,status,s\n1,2,fine,\n", "line 2 has status='fine', not one of ['ok', 'error']"),
        ("a,b,status,s\n\n1,2,ok,\n1,3,ok,\n", "line 4 repeats the row of line 3 (1)"),
        ('a,b,status,s\n"1,2\nok\n', "line 2 has 1 fields, the header 4"),
    ],
)
def test_a_bad_csv_names_its_line(tmp_path, text, message):
    path = tmp_path / "t.csv"
    path.write_text(text)
    with pytest.raises(ValueError) as err:
        runfiles.read_table(path, SPEC)
    assert str(err.value).startswith(f"test CSV '{path}'") and message in str(err.value)


def test_repair_keeps_the_good_rows_and_rewrites_atomically(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b,status,s\n1,2,ok,1;2\n2,x,ok,\n1,5,ok,\n3,4,error,\n4,4")
    table = runfiles.read_table(path, SPEC, repair=True)
    assert [r["a"] for r in table.rows] == ["1", "3"] and table.lines == (2, 5)
    assert [line for line, _ in table.dropped] == [3, 4, 6]
    assert table.dropped_line().startswith("dropped 3 bad rows of t.csv: lines 3, 4, 6 (has b='x'")
    runfiles.rewrite(table)
    assert path.read_bytes() == b"a,b,status,s\r\n1,2,ok,1;2\r\n3,4,error,\r\n"
    assert [p.name for p in tmp_path.iterdir()] == ["t.csv"]
    assert list(table.frame()["a"]) == [1, 3]


def test_json_and_folders(tmp_path):
    (tmp_path / "r.json").write_text('{"config": []}')
    with pytest.raises(ValueError, match=r"run.json '.*r.json' has no 'config' object"):
        runfiles.read_run_json(tmp_path / "r.json")
    with pytest.raises(ValueError, match=r"cannot read run.json '.*nope.json': No such file"):
        runfiles.read_run_json(tmp_path / "nope.json")
    with pytest.raises(ValueError, match="output folder '' is empty: name a folder"):
        runfiles.writable_folder("")
    assert runfiles.writable_folder(tmp_path / "a" / "b").is_dir()
