"""What `attnbench check` compares a run with: figures of this machine model, or a commit measured here.

The committed baseline stands for one commit (its `git_commit` column) and holds, per machine
model (harness/measure/machine.py), the ratios measured there. The check uses the figures of its own
model; when the file has none (another CPU, another GPU, another thread count, torch build or
reference) it measures the baseline's commit itself on this machine, side by side with this
checkout (harness/check/sidebyside.py), as asv's `continuous BASE HEAD` does. `prefer = "commit"`
(the `ci` profile) measures the commit here even where the file has this model's figures, which
then serve only when the commit is not in the clone. `--against REV` forces the side-by-side
comparison with any commit. Figures from another model are never used.

The base is the commit's `attn_variants/`, taken with `git archive` into a temporary folder
(nothing is written to the repository) and put first on a child process's `sys.path`; the
harness that measures both sides is this checkout's, so only the variants differ, as in asv,
which runs one benchmark suite against each commit's build.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd

import attn_variants

from .ratios import CheckConfig

PACKAGE = "attn_variants"  # what a base commit contributes: the variants, not the instrument
# `python -c`, not `-m`: `-m` would put the working folder (maybe this checkout) first on sys.path.
CHILD = (
    "import sys, runpy; sys.path[:0] = {paths!r}; "
    "runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"
)


@dataclass(frozen=True)
class Plan:
    """The comparison a check makes: committed figures (`rows`), or `commit` measured here."""

    kind: Literal["figures", "measure"]
    commit: str  # the figures' git_commit, or the full hash of the commit measured here
    machine: str  # this machine's model
    why: str = ""  # why a commit is measured here
    rows: pd.DataFrame | None = None  # the same-model figures

    def describe(self) -> str:
        """'same-model baseline (...)' or 'measured base <commit> here (...)': printed by the check."""
        if self.kind == "figures":
            return f"same-model baseline ({self.machine}, commit {self.commit})"
        return f"measured base {self.commit[:12]} here, side by side ({self.why})"


def repo_root() -> Path | None:
    """The git checkout this code runs from, or None (an installed wheel, an export)."""
    out = git(["rev-parse", "--show-toplevel"], Path(attn_variants.__file__).resolve().parent)
    return Path(out) if out else None


def git(args: list[str], cwd: Path) -> str | None:
    """git's stdout, stripped, or None when git is missing or fails."""
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def resolve(rev: str, repo: Path | None) -> str | None:
    """The full hash of commit `rev` in `repo` ('abc-dirty' is 'abc'), or None if it is not there."""
    rev = rev.removesuffix("-dirty")
    if repo is None or not rev or rev == "unknown":
        return None
    return git(["rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], repo)


def same_model(df: pd.DataFrame, env: Mapping[str, object], cfg: CheckConfig) -> pd.DataFrame:
    """The rows measured on this machine model, thread count (CPU), torch build and reference."""
    keep = (df["machine"] == str(env["machine"])) & (df["reference"] == cfg.reference)
    keep &= df["torch_version"] == str(env["torch_version"])
    if env["device"] == "cpu":  # on a GPU the host's core count does not move the ratios
        keep &= df["threads"] == str(env["threads"])
    return df[keep]


def choose(df: pd.DataFrame | None, env: Mapping[str, object], cfg: CheckConfig, path: Path) -> Plan:
    """The comparison to make; ValueError (exit 2, one line) when there is none."""
    here, repo = str(env["machine"]), repo_root()
    if cfg.against:
        commit = resolve(cfg.against, repo)
        if commit is None:
            raise ValueError(f"--against {cfg.against}: {cfg.against} {unreachable(cfg.against, repo)}")
        return Plan("measure", commit, here, f"--against {cfg.against}")
    if df is None:
        raise ValueError(f"no baseline at {str(path)!r} and no --against REV: nothing to compare with")
    rows = same_model(df, env, cfg)
    wanted = baseline_commit(df)
    commit = resolve(wanted, repo)
    if commit is not None and cfg.prefer == "commit":
        return Plan("measure", commit, here, "prefer = commit")
    if len(rows):
        return Plan("figures", ",".join(sorted(set(rows["git_commit"]))), here, rows=rows)
    why = f"{path} has no figures for {describe_env(env, cfg)}; it has {figures_held(df)}"
    if commit is None:
        raise ValueError(
            f"{why}, and its commit {wanted} {unreachable(wanted, repo)}: nothing to compare with here. "
            "Fetch the history (git fetch --unshallow), name a commit with --against REV, or measure "
            "figures here with --update-baseline"
        )
    return Plan("measure", commit, here, why)


def baseline_commit(df: pd.DataFrame) -> str:
    """The commit the file stands for: its rows' `git_commit` (the latest row's, if several)."""
    if df.empty:
        return "unknown"
    return str(df.sort_values("date")["git_commit"].iloc[-1])


def describe_env(env: Mapping[str, object], cfg: CheckConfig) -> str:
    threads = f", threads={env['threads']}" if env["device"] == "cpu" else ""
    return f"{env['machine']}{threads}, torch {env['torch_version']}, vs {cfg.reference}"


def figures_held(df: pd.DataFrame) -> str:
    """The distinct (machine, threads, torch, reference) the file holds figures for."""
    cols = ["machine", "threads", "torch_version", "reference"]
    held = df[cols].drop_duplicates().to_dict("records")
    text = [f"{r['machine'] or 'an unrecorded model'}, threads={r['threads']}, torch {r['torch_version']}, "
            f"vs {r['reference']}" for r in held]  # fmt: skip
    return "; ".join(text) or "no rows"


def unreachable(rev: str, repo: Path | None) -> str:
    """Why `rev` cannot be measured here, for the one-line error."""
    if repo is None:
        return "cannot be measured: this code does not run from a git checkout"
    shallow = git(["rev-parse", "--is-shallow-repository"], repo) == "true"
    return "is not in this clone" + (" (a shallow clone)" if shallow else "")


@contextlib.contextmanager
def checkout(commit: str, repo: Path | None = None) -> Iterator[Path]:
    """A temporary folder holding `commit`'s attn_variants/ (git archive; the repository is only
    read). ValueError if the commit has no such folder."""
    repo = repo if repo is not None else repo_root()
    if repo is None:
        raise ValueError(f"cannot measure {commit}: this code does not run from a git checkout")
    with tempfile.TemporaryDirectory(prefix="attnbench-base-") as tmp:
        cmd = ["git", "archive", "--format=tar", commit, PACKAGE]
        proc = subprocess.Popen(cmd, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None and proc.stderr is not None
        try:
            with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                extract(tar, Path(tmp))
        except tarfile.TarError:
            pass  # git failed and wrote no archive: reported below with git's own message
        err = proc.stderr.read().decode(errors="replace").strip()
        if proc.wait() != 0 or not Path(tmp, PACKAGE, "__init__.py").is_file():
            why = err or "not in that commit"
            raise ValueError(f"cannot take {PACKAGE}/ from commit {commit[:12]}: {why}")
        yield Path(tmp)


def extract(tar: tarfile.TarFile, dest: Path) -> None:
    """Extract with the 'data' filter where this Python has it (no links out, no devices)."""
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, filter="data")
    else:  # pragma: no cover (Python < 3.10.12): git archive of our own repository
        tar.extractall(dest)  # noqa: S202


def package_root(module) -> Path:
    """The folder that holds a package: what goes on a child's sys.path to import it."""
    return Path(module.__file__).resolve().parents[1]


def head_variants() -> Path:
    """The folder whose attn_variants is this process's: the head of a side-by-side comparison."""
    return package_root(attn_variants)


def child_command(module: str, variants_root: Path) -> list[str]:
    """`python -c ...` running `module` as __main__ with `variants_root`'s attn_variants and this
    process's harness first on sys.path (arguments may follow)."""
    import harness

    paths = [str(Path(variants_root).resolve()), str(package_root(harness))]
    return [sys.executable, "-c", CHILD.format(paths=paths, module=module)]
