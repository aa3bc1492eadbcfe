"""Readers of the files attnbench reads back, each checked as it is read.

A run's sweep.csv, accuracy.csv and generate.csv, a check baseline, run.json, a length file:
any of them can be cut short by a kill, edited by hand or be the wrong file. Every reader here
checks the encoding, the header, each row's field count, types and status, and that each key
has one row, and raises one ValueError naming the file, the line and what is wrong (the CLI
prints it on one line and exits 2). `--resume` reads with `repair=True` instead: a bad row is
dropped and named, and `rewrite` writes the good rows back atomically.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

Key = Callable[[Mapping[str, str]], tuple[str, ...]]


@dataclass(frozen=True)
class Spec:
    """What a CSV kind must hold. `required`: columns it cannot do without; `exact`: the header it
    must have (None: extra or older columns are fine); `integers`/`floats`: typed columns ('' is
    an unmeasured value); `choices`: a column's valid values; `key`: one row per key."""

    what: str  # 'sweep CSV', as the errors name the file
    required: tuple[str, ...]
    integers: frozenset[str] = frozenset()
    floats: frozenset[str] = frozenset()
    samples: frozenset[str] = frozenset()  # ';'-separated numbers
    filled: frozenset[str] = frozenset()  # never empty
    choices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    key: tuple[str, ...] | Key = ()
    exact: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Table:
    """A CSV read and checked: its header, its rows as text, the line each row starts on, and in
    repair mode the rows dropped as (line, what was wrong)."""

    path: Path
    columns: tuple[str, ...]
    rows: tuple[dict[str, str], ...]
    lines: tuple[int, ...]
    dropped: tuple[tuple[int, str], ...] = ()
    text: str | None = field(default=None, repr=False)  # the file's text, when every row was kept

    def frame(self, **read_csv: Any) -> Any:
        """The rows as a pandas DataFrame, parsed as `pd.read_csv(**read_csv)` parses a file."""
        import pandas as pd

        text = self.text if self.text is not None else _csv_text(self.columns, self.rows)
        return pd.read_csv(io.StringIO(text), **read_csv)

    def dropped_line(self) -> str:
        """'dropped 2 partial rows of sweep.csv: lines 7, 9 (has 41 fields, the header 49: ...)'."""
        n, lines = len(self.dropped), ", ".join(str(line) for line, _ in self.dropped)
        first = self.dropped[0][1]
        rows = "row" if n == 1 else "rows"
        kind = "partial" if all("cut short" in why for _, why in self.dropped) else "bad"
        return f"dropped {n} {kind} {rows} of {self.path.name}: line{'s' * (n > 1)} {lines} ({first})"


def read_text(path: Path, what: str) -> str:
    """The file as UTF-8 text; ValueError naming it if it cannot be read or is not text."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ValueError(f"cannot read {what} {str(path)!r}: {err.strerror or err}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise ValueError(
            f"{what} {str(path)!r}: line {line} is not UTF-8 text (byte {data[err.start]:#04x}); "
            "is it the right file?"
        ) from None
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise ValueError(f"{what} {str(path)!r}: line {line} holds a NUL byte; is it the right file?")
    return text


def read_table(path: Path, spec: Spec, *, repair: bool = False) -> Table:
    """Read and check a CSV (`spec`). A bad row raises ValueError naming the file and its line;
    with `repair` it is left out and listed in `dropped` (as is a second row of a key)."""
    path = Path(path)
    text = read_text(path, spec.what)
    where = f"{spec.what} {str(path)!r}"
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = tuple(next(reader))
    except StopIteration:
        raise ValueError(f"{where} is empty: no header, no rows") from None
    _check_header(header, spec, where)
    spec = _present(spec, header)
    rows, lines, dropped, seen = [], [], [], {}
    for start, record in _records(reader, where):
        row = dict(zip(header, record, strict=False))
        problem = _row_problem(record, header, row, spec) or _repeat(row, start, spec, seen)
        if problem and not repair:
            raise ValueError(f"{where}: line {start} {problem}")
        if problem:
            dropped.append((start, problem))
            continue
        rows.append(row)
        lines.append(start)
    if repair and rows and not text.endswith("\n") and lines[-1] == start_of_last(text):
        rows.pop()  # a kill mid-write can cut a row inside its last field: its count looks whole
        dropped.append((lines.pop(), "has no line end: cut short"))
    return Table(path, header, tuple(rows), tuple(lines), tuple(dropped), None if dropped else text)


def _present(spec: Spec, header: tuple[str, ...]) -> Spec:
    """`spec` with its typed and checked columns cut to those the header has (checked once, not per row)."""
    names = set(header)
    return replace(
        spec,
        integers=spec.integers & names,
        floats=spec.floats & names,
        samples=spec.samples & names,
        filled=spec.filled & names,
        choices={c: v for c, v in spec.choices.items() if c in names},
    )


def _records(reader: Any, where: str) -> Iterator[tuple[int, list[str]]]:
    """(the line a record starts on, its fields) after the header; blank lines skipped."""
    end = reader.line_num
    while True:
        try:
            record = next(reader, None)
        except csv.Error as err:
            raise ValueError(f"{where}: line {end + 1}: {err}") from None
        start, end = end + 1, reader.line_num
        if record is None:
            return
        if record:
            yield start, record


def start_of_last(text: str) -> int:
    """The line number the text's last line starts on."""
    return text.count("\n", 0, text.rstrip("\r\n").rfind("\n") + 1) + 1


def _check_header(header: tuple[str, ...], spec: Spec, where: str) -> None:
    if spec.exact is not None and header != spec.exact:
        missing = [c for c in spec.exact if c not in header]
        extra = [c for c in header if c not in spec.exact]
        raise ValueError(
            f"{where}: line 1, the header, is not the {spec.what}'s: missing {missing}, unknown {extra}"
            + ("" if missing or extra else ", in another order")
        )
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:
        raise ValueError(f"{where}: line 1 names column(s) {repeated} twice")
    missing = [c for c in spec.required if c not in header]
    if missing:
        raise ValueError(f"{where}: line 1 (the header) is missing required columns {missing}")


def _row_problem(record: list[str], header: tuple[str, ...], row: dict[str, str], spec: Spec) -> str:
    """What is wrong with one row ('' if nothing)."""
    if len(record) != len(header):
        return f"has {len(record)} fields, the header {len(header)}: cut short or garbled"
    empty = [c for c in sorted(spec.filled) if not row[c]]
    if empty:
        return f"has no {empty[0]}"
    for column, valid in spec.choices.items():
        if row[column] not in valid:
            value = row[column]
            return f"has no {column}" if not value else f"has {column}={value!r}, not one of {list(valid)}"
    for column in spec.integers:
        if row[column] and not _is_integer(row[column]):
            return f"has {column}={row[column]!r}, not an integer"
    for column in spec.floats:
        if row[column] and not _is_float(row[column]):
            return f"has {column}={row[column]!r}, not a number"
    for column in spec.samples:
        bad = next((x for x in row[column].split(";") if row[column] and not _is_float(x)), None)
        if bad is not None:
            return f"has {bad!r} among its {column}, not a number"
    return ""


def _repeat(row: dict[str, str], line: int, spec: Spec, seen: dict[tuple[str, ...], int]) -> str:
    """'' the first time a key is seen; else which line held it first."""
    if not spec.key:
        return ""
    key = spec.key(row) if callable(spec.key) else tuple(row.get(c, "") for c in spec.key)
    if key in seen:
        return f"repeats the row of line {seen[key]} ({', '.join(filter(None, key))})"
    seen[key] = line
    return ""


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_integer(text: str) -> bool:
    if text.lower() in ("true", "false"):
        return False
    try:
        return float(text).is_integer()
    except (ValueError, OverflowError):
        return False


def _csv_text(columns: tuple[str, ...], rows: tuple[dict[str, str], ...]) -> str:
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def rewrite(table: Table) -> None:
    """Write `table`'s rows back to its file atomically: a temporary file beside it, then
    os.replace, so a kill during the rewrite leaves the old file or the new one, never half."""
    write_atomic(table.path, _csv_text(table.columns, table.rows))


def write_atomic(path: Path, text: str) -> None:
    """`text` into `path` by way of a temporary file in the same folder and os.replace."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path, what: str, kind: type = dict) -> Any:
    """A JSON file that must hold a `kind` (an object: dict, a list: list); ValueError naming it."""
    text = read_text(path, what)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{what} {str(path)!r}: line {err.lineno} is not valid JSON: {err.msg}") from None
    if not isinstance(value, kind):
        wanted = "an object" if kind is dict else "a list"
        raise ValueError(f"{what} {str(path)!r} must hold {wanted}, not {type(value).__name__}")
    return value


def read_run_json(path: Path) -> dict[str, Any]:
    """run.json: an object whose `config` is an object; ValueError naming the file otherwise."""
    record = read_json(path, "run.json")
    if not isinstance(record.get("config"), dict):
        raise ValueError(f"run.json {str(path)!r} has no 'config' object; it holds keys {sorted(record)[:8]}")
    return record


def read_lengths(path: Path) -> tuple[int, ...]:
    """A length file: one integer >= 1 per line (blank lines skipped); ValueError naming the line."""
    text = read_text(path, "the length file")
    values = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if not _is_integer(line.strip()) or float(line) < 1:
            raise ValueError(
                f"the length file {str(path)!r}: line {number} is {line.strip()!r}, not a length >= 1"
            )
        values.append(int(float(line)))
    if not values:
        raise ValueError(f"the length file {str(path)!r} holds no length (one integer >= 1 per line)")
    return tuple(values)


def writable_folder(folder: str | Path, what: str = "output folder") -> Path:
    """Make `folder` and write a scratch file in it; ValueError naming it if it is empty, an
    existing file, or cannot be made or written. The last check before a command writes."""
    if not str(folder).strip():
        raise ValueError(f"{what} {str(folder)!r} is empty: name a folder, e.g. results")
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{what} {str(path)!r} is an existing file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise ValueError(f"{what} {str(path)!r} is not writable: {err.strerror or err}") from None
    return path
