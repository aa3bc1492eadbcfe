"""The installed tool works in any folder: built-in defaults and their lookup order, `init`,
`--version`, input checked before any cell runs, and the import graph (issue 14).

Every CLI test here runs from an empty temporary folder (`monkeypatch.chdir`), as a user of a
pip-installed `attnbench` would; none passes --config unless it tests --config.
"""

import ast
import csv
import json
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from typer.testing import CliRunner

import attn_variants as av
import harness
from harness import config
from harness.accuracy import config as accuracy_config
from harness.accuracy import tasks
from harness.accuracy.runner import AccuracyConfig
from harness.check.ratios import CheckConfig
from harness.cli import app
from harness.decide import DecideConfig
from harness.sweep.runner import SweepConfig

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]
# A sweep small enough for seconds: the built-in `ci` profile, one mode, one length.
TINY_SWEEP = ["sweep", "--profile", "ci", "--modes", "fwd", "--seq-len", "32", "--no-report"]
TINY_CHECK = ["check", "--profile", "ci", "--variants", "gqa", "--modes", "fwd", "--rounds", "10"]
TINY_ACCURACY = ["accuracy", "--profile", "ci", "--tasks", "mqar", "--variants", "gqa", "--no-report"]


@pytest.fixture
def empty(tmp_path, monkeypatch):
    """An empty working folder (no bench.toml), as after `cd "$(mktemp -d)"`."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def ok(args):
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return result


def only_run(folder: Path) -> Path:
    (run_dir,) = (folder / "results").iterdir()
    return run_dir


# --- built-in defaults: one source of truth ------------------------------------------------


def test_packaged_defaults_are_the_top_level_bench_toml():
    """One file: harness/bench.toml is a link to ../bench.toml, so the packaged defaults are the
    top-level file byte for byte (.ci/wheel checks the same of an installed wheel)."""
    packaged = REPO / "harness" / "bench.toml"
    assert packaged.is_symlink() and packaged.resolve() == (REPO / "bench.toml").resolve()
    assert config.defaults_text().encode() == (REPO / "bench.toml").read_bytes()
    assert 'harness = ["bench.toml"]' in (REPO / "pyproject.toml").read_text()  # package-data


@pytest.mark.parametrize(
    ("cls", "section"),
    [(SweepConfig, "sweep"), (AccuracyConfig, "accuracy"), (CheckConfig, "check"), (DecideConfig, "decide")],
)
def test_every_builtin_profile_builds(cls, section, empty):
    builtin = config.find()
    assert builtin.source == "built-in defaults"
    profiles = [None, *(p for p, tables in builtin.data["profiles"].items() if section in tables)]
    for profile in profiles:
        assert isinstance(config.load(cls, section, settings=builtin, profile=profile), cls)


# --- lookup order: --config FILE, then ./bench.toml, then the built-in defaults -------------


def test_lookup_order(empty):
    assert config.find().source == "built-in defaults"
    (empty / "bench.toml").write_text("[sweep]\nbatch = 3\n")
    here = config.find()
    assert (here.source, here.path) == ("./bench.toml", str(empty / "bench.toml"))
    assert config.load(SweepConfig, "sweep").batch == 3
    (empty / "other.toml").write_text("[sweep]\nbatch = 5\n")
    given = config.find(Path("other.toml"))
    assert (given.source, given.path) == ("--config", str(empty / "other.toml"))
    assert config.load(SweepConfig, "sweep", path=Path("other.toml")).batch == 5
    with pytest.raises(ValueError, match="config file 'missing.toml' does not exist"):
        config.find(Path("missing.toml"))  # a named file must exist, even with ./bench.toml here


def test_run_json_records_which_settings_were_used(empty):
    ok([*TINY_SWEEP, "--variants", "gqa", "--reference", "none"])
    builtin = json.loads((only_run(empty) / "run.json").read_text())["settings"]
    assert builtin["source"] == "built-in defaults" and builtin["profile"] == "ci"
    assert Path(builtin["path"]).name == "bench.toml"
    (empty / "bench.toml").write_text("[sweep]\nhead_dim = 4\n[profiles.ci.sweep]\nthreads = 1\n")
    (empty / "results").rename(empty / "first")
    ok([*TINY_SWEEP, "--variants", "gqa", "--reference", "none"])
    run_dir = only_run(empty)
    record = json.loads((run_dir / "run.json").read_text())
    assert record["settings"] == {
        "source": "./bench.toml",
        "path": str(empty / "bench.toml"),
        "profile": "ci",
    }
    rows = list(csv.DictReader(open(run_dir / "sweep.csv")))
    assert {r["head_dim"] for r in rows} == {"4"} and record["config"]["head_dim"] == 4


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("nope.toml", "config file 'nope.toml' does not exist (write one with `attnbench init nope.toml`)"),
        ("folder.toml", "config file 'folder.toml' cannot be read: Is a directory"),
        ("binary.toml", "config file 'binary.toml' cannot be read: not UTF-8 text"),
        ("broken.toml", "config file 'broken.toml' is not valid TOML"),
    ],
)
def test_unreadable_config_file_is_one_line_and_exit_2(empty, name, message):
    (empty / "folder.toml").mkdir()
    (empty / "binary.toml").write_bytes(b"\xff\xfe")
    (empty / "broken.toml").write_text("[sweep\n")
    result = runner.invoke(app, ["sweep", "--config", name])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert message in result.stderr


# --- every command from an empty folder ---------------------------------------------------


def test_version(empty):
    result = ok(["--version"])
    assert result.output.startswith(f"attnbench {harness.__version__} (torch ")


def test_list_sweep_and_report_from_an_empty_folder(empty):
    assert "mmca" in ok(["list"]).output
    ok([*TINY_SWEEP, "--variants", "gqa,mmca"])
    run_dir = only_run(empty)
    assert {p.name for p in run_dir.iterdir()} == {"sweep.csv", "run.json", "benchmark.json"}
    rows = list(csv.DictReader(open(run_dir / "sweep.csv")))
    assert {r["variant"] for r in rows} == {"mha", "gqa", "mmca"} and {r["status"] for r in rows} == {"ok"}
    ok(["report", str(run_dir)])
    assert (run_dir / "report" / "index.html").exists()


def test_accuracy_from_an_empty_folder(empty):
    ok(TINY_ACCURACY)
    run_dir = only_run(empty)
    rows = list(csv.DictReader(open(run_dir / "accuracy.csv")))
    assert {(r["variant"], r["status"]) for r in rows} == {("gqa", "ok")}
    assert json.loads((run_dir / "run.json").read_text())["settings"]["source"] == "built-in defaults"


def test_check_from_an_empty_folder(empty):
    """No baseline yet: one line saying how to take one; then take it, then check against it."""
    missing = runner.invoke(app, TINY_CHECK)
    assert missing.exit_code == 2 and "--update-baseline" in missing.stderr
    ok([*TINY_CHECK, "--update-baseline"])
    assert (empty / "benchmarks" / "baselines" / "ci-cpu.csv").is_file()  # bench.toml's path, here
    result = runner.invoke(app, TINY_CHECK)
    assert result.exit_code in (0, 1), result.output  # 1 only if this noisy machine made a real regression
    assert "2 cell(s)" in result.output
    runs = sorted((empty / "results").iterdir())
    assert len(runs) == 2 and all(
        (r / "check.csv").is_file() and (r / "benchmark.json").is_file() for r in runs
    )


# --- init ---------------------------------------------------------------------------------


def test_init_writes_the_defaults_with_comments_and_refuses_to_overwrite(empty):
    result = ok(["init"])
    written = empty / "bench.toml"
    assert written.read_text() == config.defaults_text() and "\n# " in written.read_text()
    assert "commands run in this folder read it" in result.output
    assert config.find().source == "./bench.toml"
    written.write_text("[sweep]\nbatch = 7\n")  # the user's edits
    refused = runner.invoke(app, ["init"])
    assert refused.exit_code == 2 and refused.stderr.count("\n") == 1
    assert "'bench.toml' exists; keep it, or overwrite it with --force" in refused.stderr
    assert written.read_text() == "[sweep]\nbatch = 7\n"
    ok(["init", "--force"])
    assert written.read_text() == config.defaults_text()


def test_init_into_a_folder_or_a_named_file(empty):
    (empty / "project").mkdir()
    ok(["init", "project"])
    assert (empty / "project" / "bench.toml").read_text() == config.defaults_text()
    result = ok(["init", "configs/gpu.toml"])
    assert "--config configs/gpu.toml" in result.output
    assert config.load(SweepConfig, "sweep", path=Path("configs/gpu.toml"), profile="gpu").device == "cuda"


# --- input checked before any cell runs ---------------------------------------------------

COMMANDS = {  # each with "--variants gqa", replaced by the variant under test
    "sweep": [*TINY_SWEEP, "--variants", "gqa"],
    "accuracy": TINY_ACCURACY,
    "check": [*TINY_CHECK, "--update-baseline"],
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(
    ("variant", "message"),
    [
        ("mmca:visual_attention=bogus", "variant 'mmca:visual_attention=bogus' cannot be built: "),
        ("pgqa:seed=x", "variant 'pgqa:seed=x' cannot be built: seed='x' must be an integer or None"),
    ],
)
def test_bad_option_value_exits_2_before_any_cell(empty, command, variant, message):
    swap = {"gqa": variant, "mqar": "captions"}  # mmca runs captions only (it needs visual tokens)
    args = [swap.get(a, a) for a in COMMANDS[command]]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert message in result.stderr
    assert list(empty.iterdir()) == []  # no run folder, no baseline: nothing ran


@pytest.mark.parametrize("command", COMMANDS)
def test_unwritable_out_exits_2_before_any_cell(empty, command):
    (empty / "a_file").write_text("")
    args = [*COMMANDS[command], "--out", "a_file/runs"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stderr == "error: output folder 'a_file/runs' is not writable: Not a directory\n"


@pytest.mark.skipif(sys.platform == "win32" or __import__("os").geteuid() == 0, reason="root writes anywhere")
def test_read_only_out_exits_2(empty):
    (empty / "locked").mkdir(mode=0o500)
    result = runner.invoke(app, [*TINY_SWEEP, "--variants", "gqa", "--out", "locked/runs"])
    assert result.exit_code == 2 and "is not writable: Permission denied" in result.stderr


class FussyAtOneGroup(av.GroupedQueryAttention):
    """Refuses g=1 when built (a shape it cannot take), accepts other shapes."""

    def __init__(self, spec, *, backend="sdpa"):
        if spec.n_kv_heads == 1:
            raise ValueError("n_kv_heads=1 is not supported by this variant")
        super().__init__(spec, backend=backend)


def test_a_variant_refused_at_some_shapes_only_becomes_invalid_rows(empty, temp_variant):
    """The preflight refuses a variant that builds at none of the run's shapes; one that builds
    at some keeps today's behaviour: its other cells are `invalid` rows and the sweep goes on."""
    name = temp_variant(FussyAtOneGroup, modes=("fwd",))
    ok([*TINY_SWEEP, "--variants", name, "--kv-heads", "1,2", "--reference", "none"])
    rows = list(csv.DictReader(open(only_run(empty) / "sweep.csv")))
    assert {(r["n_kv_heads"], r["status"]) for r in rows} == {("1", "invalid"), ("2", "ok")}
    refused = runner.invoke(app, [*TINY_SWEEP, "--variants", name, "--kv-heads", "1", "--out", "b"])
    assert refused.exit_code == 2 and "n_kv_heads=1 is not supported" in refused.stderr


# --- the import graph -----------------------------------------------------------------------


def test_tasks_do_not_import_the_accuracy_runner():
    """harness/accuracy/tasks read AccuracyConfig from harness/accuracy/config.py: no import circle, not
    even one hidden behind `if TYPE_CHECKING:` (read from the source, every task module)."""
    code = "import sys, harness.accuracy.tasks; print('harness.accuracy.runner' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "False"
    for path in (REPO / "harness" / "accuracy" / "tasks").glob("*.py"):
        imports = [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ImportFrom)]
        assert not [n.module for n in imports if n.level == 2 and n.module == "runner"], path.name


def test_task_names_match_the_task_table():
    assert (
        set(typing.get_args(accuracy_config.TaskName)) == set(accuracy_config.TASK_NAMES) == set(tasks.TASKS)
    )
