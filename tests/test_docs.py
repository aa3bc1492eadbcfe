"""The user docs say what the code does: README.md's variant and command tables, the column
tables of docs/, the set-up line against .ci/run, every relative link, and the worked example of
docs/adding-a-variant.md, run as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

import attn_variants as av
from harness.accuracy.runner import COLUMNS as ACCURACY_COLUMNS
from harness.cli import app
from harness.records import COLUMNS as SWEEP_COLUMNS

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))


def section(path: Path, heading: str) -> str:
    """The text under `## heading` (a prefix of the heading line) up to the next `## `."""
    text = path.read_text()
    assert f"\n## {heading}" in text, f"{path.name} has no section '## {heading}'"
    return text.split(f"\n## {heading}", 1)[1].split("\n## ", 1)[0]


def table_rows(text: str) -> list[list[str]]:
    """Each body row of the Markdown tables in `text`, as its cells (header and rule skipped)."""
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not re.match(r"\|\s*-", line):
            rows.append([cell.strip() for cell in line.strip().strip("|").split(" | ")])
    return rows[1:] if rows else rows


def builtin_variants() -> list[str]:
    """Registered names whose class ships in attn_variants (not test- or plugin-registered ones)."""
    return [n for n in av.names() if av.info(n).cls.__module__.startswith("attn_variants.")]


def expected_variant_cells(name: str) -> tuple[str, str]:
    """The README's modes and options cells for variant `name`, from the registry."""
    entry = av.info(name)
    options = ", ".join(f"`{k}={v!r}`" for k, v in entry.options.items() if k != "backend")
    return ", ".join(entry.modes), options


def test_readme_variant_table_is_the_registry():
    rows = {r[0].strip("`"): r for r in table_rows(section(README, "The variants"))}
    assert sorted(rows) == builtin_variants(), "README's variant table must list every registered variant"
    for name, row in rows.items():
        paper = av.info(name).paper
        assert f"]({paper})" in row[2], f"README row for {name}: the paper cell should link {paper}"
        want = expected_variant_cells(name)
        assert tuple(row[3:5]) == want, f"README row for {name}: modes, options should be {want}"


def test_readme_lists_every_command_and_no_other():
    commands = sorted(typer.main.get_command(app).commands)
    listed = sorted(r[0].strip("`") for r in table_rows(section(README, "Commands")))
    assert listed == commands


def test_readme_setup_installs_what_ci_installs():
    """The set-up line and .ci/run pin the same torch and install the same extras."""
    setup = section(README, "Set-up")
    ci = (ROOT / ".ci" / "run").read_text()
    torch_pin = re.search(r"torch==([\d.]+)", ci).group(1)
    extras = re.search(r'pip install -q -e "(\.\[[\w,]+\])"', ci).group(1)
    assert f"pip install torch=={torch_pin}" in setup
    assert f'pip install -e "{extras}"' in setup
    assert "python -m pytest -q" in setup and "python -m pytest -q" in ci


def test_readme_is_short():
    assert README.read_text().count("\n") <= 250


@pytest.mark.parametrize(
    "page, columns",
    [("sweep.md", SWEEP_COLUMNS), ("accuracy.md", ACCURACY_COLUMNS)],
    ids=["sweep", "accuracy"],
)
def test_every_csv_column_is_documented(page, columns):
    first_cells = " ".join(r[0] for r in table_rows(section(ROOT / "docs" / page, "Columns")))
    named = set(re.findall(r"`(\w+)`", first_cells))
    assert set(columns) - named == set(), f"docs/{page} does not describe these columns"
    assert named - set(columns) == set(), f"docs/{page} describes columns the CSV does not have"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.name)
def test_relative_links_and_anchors_exist(page):
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"\w+://", target):
            continue
        file, _, anchor = target.partition("#")
        path = (page.parent / file).resolve() if file else page
        assert path.exists(), f"{page.name} links to missing {file}"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", path.read_text(), re.M)
            anchors = {slug(h) for h in headings}
            assert anchor in anchors, f"{page.name}: no heading for #{anchor} in {path.name}"


def test_the_adding_a_variant_example_runs(tmp_path):
    """Both python blocks of docs/adding-a-variant.md, in a fresh process (the example registers a
    variant, which must not leak into this one)."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "adding-a-variant.md").read_text(), re.S)
    assert len(blocks) == 2
    ran = "assert (rows.status == 'ok').all() and set(rows.variant) == {'mha', 'gqa_tempered'}"
    code = f"{blocks[0]}{blocks[1]}\n{ran}\n"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'attn_variants' / 'compat'}"}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.name)
def test_every_test_and_script_a_command_names_exists(page):
    """`python -m pytest ...` and `python <script>.py` in the docs name files that exist."""
    text = page.read_text()
    commands = re.findall(r"python -m pytest[^`\n]*|python [\w/]+\.py", text)
    paths = {p.split("::")[0] for c in commands for p in c.split() if re.match(r"(tests|benchmarks)/", p)}
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert not missing, f"{page.name} names files that do not exist: {missing}"
