"""The check's comparison on any machine: figures of this machine model, or a commit measured here.

A temporary git repository holds two commits of attn_variants: as it is, and with gqa's forward
run 4 times (grouped heads only, so mha, the reference, and mqa keep their speed). The tiny
shapes run in milliseconds on a shared machine, so, as tests/harness/test_check_cli.py, these
test the plumbing with tolerance 0.3 and a 4x slowdown; the 2x catch on the CI grid is measured
(docs/check.md). Everything is written under pytest's tmp folders; the repository is only read.
"""

import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

import attn_variants
from harness.check import against, sidebyside
from harness.cli import app
from harness.measure import machine

runner = CliRunner()

TINY = """
[check]
seq_len = [32]
heads = [4]
kv_heads = [2]
modes = ["fwd"]
batch = 1
head_dim = 8
rounds = 20
passes = 2
warmup = 1
min_sample_s = 0.01
threads = 1
tolerance = 0.3
"""

SLOWDOWN = """

_forward = GroupedQueryAttention.forward


def _forward_4x(self, x, **kwargs):  # injected by the test: grouped heads do the work 4 times
    for _ in range(3 if 1 < self.spec.n_kv_heads < self.spec.n_heads else 0):
        _forward(self, x, **kwargs)
    return _forward(self, x, **kwargs)


GroupedQueryAttention.forward = _forward_4x
"""

INTEL = "cpu Intel(R) Xeon(R) Platinum 8480+ (GenuineIntel 6/143; avx avx2 fma avx512f amx_tile)"


def git(repo: Path, *args: str) -> str:
    cmd = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false", *args]
    return subprocess.run(cmd, cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """(repository, unchanged, slowed, broken commit): this checkout's attn_variants, then gqa 4x,
    then an attn_variants that raises on import."""
    root = tmp_path_factory.mktemp("repo")
    source = Path(attn_variants.__file__).parent
    shutil.copytree(source, root / "attn_variants", ignore=shutil.ignore_patterns("__pycache__"))
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "base")
    base = git(root, "rev-parse", "HEAD")
    with open(root / "attn_variants" / "grouped.py", "a") as f:
        f.write(SLOWDOWN)
    git(root, "commit", "-q", "-am", "slow")
    slowed = git(root, "rev-parse", "HEAD")
    with open(root / "attn_variants" / "__init__.py", "a") as f:
        f.write("\nraise RuntimeError('this commit does not import')\n")
    git(root, "commit", "-q", "-am", "broken")
    return root, base, slowed, git(root, "rev-parse", "HEAD")


@pytest.fixture
def setup(tmp_path, repo, monkeypatch):
    """(config, baseline path); the check's git history is the temporary repository's."""
    monkeypatch.setattr(against, "repo_root", lambda: repo[0])
    (tmp_path / "bench.toml").write_text(TINY)
    return tmp_path / "bench.toml", tmp_path / "baseline.csv"


def check(setup, *extra):
    config, baseline = setup
    out = config.parent / "out"
    args = ["check", "--config", str(config), "--baseline", str(baseline), "--out", str(out)]
    return runner.invoke(app, [*args, "--variants", "gqa,mqa", *extra])


def as_another_model(setup, commit: str) -> None:
    """The baseline's rows rewritten as if measured on an Intel machine at `commit`, with ratios
    that would fail every cell if they were used."""
    df = pd.read_csv(setup[1], dtype=str, keep_default_na=False)
    df["machine"], df["git_commit"] = INTEL, commit
    df["ratio_samples"] = ";".join(["0.01"] * 20)
    df.to_csv(setup[1], index=False)


def test_the_model_names_the_cpu_and_its_isa():
    amd = {"vendor_id": "AuthenticAMD", "cpu family": "25", "model": "1", "model name": "AMD EPYC",
           "flags": "fpu sse avx2 avx fma sha_ni"}  # fmt: skip
    intel = {**amd, "vendor_id": "GenuineIntel", "cpu family": "6", "model": "143",
             "flags": "avx avx2 fma avx512f avx512_bf16 amx_tile amx_bf16"}  # fmt: skip
    assert machine.cpu_model(amd) == "cpu AMD EPYC (AuthenticAMD 25/1; avx avx2 fma)"
    assert machine.cpu_model(intel) == (
        "cpu AMD EPYC (GenuineIntel 6/143; avx avx2 fma avx512f avx512_bf16 amx_tile amx_bf16)"
    )
    zen4 = {**amd, "model": "17", "flags": amd["flags"] + " avx512f"}  # same name, another generation
    assert machine.cpu_model(zen4) != machine.cpu_model(amd)
    assert (
        machine.of({"device": "cuda", "device_name": "NVIDIA H100 80GB HBM3"}) == "cuda NVIDIA H100 80GB HBM3"
    )


def test_same_model_figures_are_used_and_say_so(setup):
    assert check(setup, "--update-baseline").exit_code == 0
    df = pd.read_csv(setup[1], dtype=str)
    assert set(df["machine"]) == {machine.cpu_model(machine.read_cpuinfo())}
    result = check(setup, "--plan")
    assert result.exit_code == 0 and "comparison: same-model baseline (cpu " in result.output


def test_prefer_commit_measures_the_commit_and_falls_back_to_same_model_figures(setup, repo):
    assert check(setup, "--update-baseline").exit_code == 0
    df = pd.read_csv(setup[1], dtype=str, keep_default_na=False)
    df.assign(git_commit=repo[1][:12]).to_csv(setup[1], index=False)
    result = check(setup, "--prefer", "commit", "--plan")
    assert result.exit_code == 0, result.output
    assert f"comparison: measured base {repo[1][:12]} here, side by side (prefer = commit)" in result.output
    df.assign(git_commit="0123456789ab").to_csv(setup[1], index=False)  # not in the clone
    result = check(setup, "--prefer", "commit", "--plan")
    assert result.exit_code == 0 and "comparison: same-model baseline (cpu " in result.output


def test_another_models_figures_without_a_reachable_commit_are_one_line_and_exit_2(setup):
    assert check(setup, "--update-baseline").exit_code == 0
    as_another_model(setup, "0123456789ab")
    result = check(setup)
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and "REGRESSED" not in result.output
    assert "has no figures for cpu " in result.output and "Intel(R) Xeon(R)" in result.output
    assert "its commit 0123456789ab is not in this clone" in result.output


def test_another_models_figures_are_not_used_the_commit_is_measured_and_unchanged_code_passes(setup, repo):
    assert check(setup, "--update-baseline").exit_code == 0
    as_another_model(setup, repo[1][:12])  # the commit holds this checkout's attn_variants
    result = check(setup)
    assert result.exit_code == 0, result.output
    assert f"comparison: measured base {repo[1][:12]} here, side by side" in result.output
    assert "2 ok" in result.output and "REGRESSED" not in result.output
    base = pd.read_csv(next((setup[0].parent / "out").glob("*/base.csv")), dtype=str)
    assert set(base["git_commit"]) == {repo[1][:12]} and set(base["status"]) == {"ok"}


def test_a_commit_with_an_injected_slowdown_is_caught(setup, repo, tmp_path, monkeypatch):
    """The head is the slowed commit, the base the unchanged one: gqa named, mqa not."""
    with against.checkout(repo[2], repo[0]) as slowed:
        head = tmp_path / "head"
        shutil.copytree(slowed, head)
    monkeypatch.setattr(against, "head_variants", lambda: head)
    result = check(setup, "--against", repo[1])
    assert result.exit_code == 1, result.output
    regressed = [line for line in result.output.splitlines() if line.startswith("REGRESSED")]
    assert len(regressed) == 1 and regressed[0].startswith("REGRESSED gqa_g2 fwd n=32 h=4: base ratio")
    assert "1 ok, 1 REGRESSED" in result.output


def test_each_side_imports_its_own_commit(repo, tmp_path):
    cfg = sidebyside.CheckConfig(variants=("gqa",), seq_len=(32,), heads=(4,), kv_heads=(2,), modes=("fwd",))
    with against.checkout(repo[2], repo[0]) as base:
        side = sidebyside.Side("base", cfg, base)
        side.start()
        side.close()
        assert (base / "attn_variants" / "grouped.py").read_text().endswith(SLOWDOWN)
    with pytest.raises(ValueError, match="cannot take attn_variants/ from commit"):
        with against.checkout(repo[1], tmp_path):  # not a repository
            pass


def test_against_a_revision_not_in_the_history_is_one_line_and_exit_2(setup):
    result = check(setup, "--against", "no-such-branch")
    assert result.exit_code == 2
    assert result.output.strip() == "error: --against no-such-branch: no-such-branch is not in this clone"


def test_a_base_whose_variants_do_not_import_is_one_line_and_exit_2(setup, repo):
    result = check(setup, "--against", repo[3])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 2 and lines[0].startswith("comparison: measured base")
    assert lines[1].startswith("error: cannot measure the base") and "this commit does not import" in lines[1]


def test_against_and_update_baseline_do_not_go_together(setup, repo):
    result = check(setup, "--against", repo[1], "--update-baseline")
    assert result.exit_code == 2 and "choose one" in result.output


def test_update_keeps_other_models_rows_of_the_same_commit_only(setup, monkeypatch):
    from harness import measure

    monkeypatch.setattr(measure, "git_commit", lambda: "abcdef123456")  # a commit moving under the test
    assert check(setup, "--update-baseline").exit_code == 0
    df = pd.read_csv(setup[1], dtype=str, keep_default_na=False)
    df.assign(machine=INTEL).to_csv(setup[1], index=False)  # the same commit, another model
    assert check(setup, "--update-baseline").exit_code == 0
    both = pd.read_csv(setup[1], dtype=str)
    assert sorted(set(both["machine"])) == sorted({INTEL, machine.cpu_model(machine.read_cpuinfo())})
    both.assign(git_commit="0123456789ab").to_csv(setup[1], index=False)  # now of another commit
    assert check(setup, "--update-baseline").exit_code == 0
    assert set(pd.read_csv(setup[1], dtype=str)["machine"]) == {machine.cpu_model(machine.read_cpuinfo())}


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_instruction_counts_against_a_commit_count_both_and_name_the_slowed_cell(
    setup, repo, tmp_path, monkeypatch
):
    """--metric instructions --against REV: both commits counted once, side by side (one valgrind each)."""
    with against.checkout(repo[2], repo[0]) as slowed:
        shutil.copytree(slowed, tmp_path / "head")
    monkeypatch.setattr(against, "head_variants", lambda: tmp_path / "head")
    flags = ("--metric", "instructions", "--against", repo[1][:12], "--modes", "fwd")
    result = check(setup, *flags)
    assert result.exit_code == 1, result.output
    assert f"comparison: measured base {repo[1][:12]} here (both commits counted once)" in result.output
    assert "REGRESSED gqa_g2 fwd n=32 h=4" in result.output and "REGRESSED mqa" not in result.output
    (run,) = (setup[0].parent / "out").iterdir()
    rows = pd.read_csv(run / "instructions.csv", dtype=str, keep_default_na=False)
    ratios = dict(zip(rows["variant"], rows["ratio"].astype(float), strict=True))
    # mqa's code is the same on both sides; one fwd count at n=32 moves by up to ~2.4% with the
    # process's malloc and dict history (instructions_child.py), and a clean-clone CI run saw
    # 0.98985 once: the bound is that spread, not the check's 1% tolerance. The slowed cell is 3x.
    assert ratios["gqa"] > 3 and abs(ratios["mqa"] - 1) < 0.03, ratios
