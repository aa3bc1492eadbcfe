"""The layout of harness/, read from the code (ast): one folder per command or layer, no import
circle, no import hidden behind `if TYPE_CHECKING:`, at most 10 modules a folder, and measurement
code that does not import reports/ (the statistics both share live in benchstats/)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HARNESS = REPO / "harness"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in HARNESS.rglob("*.py")}


def imported(name: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The harness modules an import statement of module `name` names (a package: its __init__)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in MODULES]
    base = name.split(".")
    if node.level:
        is_package = MODULES[name].name == "__init__.py"
        base = base[: len(base) - node.level + is_package]
        target = ".".join([*base, *([node.module] if node.module else [])])
    else:
        target = node.module or ""
    named = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES]
    return named or ([target] if target in MODULES else [])


def edges() -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        nodes = [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
        graph[name] = {t for n in nodes for t in imported(name, n) if t != name}
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import circle (a list of modules, first == last), or [] if there is none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str]:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt, [*path, nxt])):
                return found
        state[node] = 2
        return []

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return []


def test_the_import_graph_has_no_circle():
    graph = edges()
    # A package's __init__ that imports its own modules is not a circle: Python runs it first.
    for name in graph:
        graph[name] = {t for t in graph[name] if not name.startswith(t + ".")}
    assert cycle(graph) == []


def test_the_cycle_finder_finds_one():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) == []


def test_no_import_hides_behind_type_checking():
    hidden = [
        name
        for name, path in MODULES.items()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
    ]
    assert hidden == []


def test_every_folder_holds_at_most_ten_modules():
    folders: dict[Path, list[str]] = {}
    for path in MODULES.values():
        if path.name != "__init__.py":
            folders.setdefault(path.parent, []).append(path.name)
    assert {str(f.relative_to(REPO)): len(m) for f, m in folders.items() if len(m) > 10} == {}
    assert len(folders) >= 6  # harness/ and its subpackages, not one flat folder


@pytest.mark.parametrize("module", ["harness.measure.timing", "harness.sweep.runner", "harness.check.view"])
def test_measurement_code_does_not_import_reports(module):
    """Checked in a fresh interpreter: what importing the module really loads."""
    code = f"import sys, {module}; print(sorted({{m.split('.')[0] for m in sys.modules}} & {{'reports'}}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"
