"""`attnbench generate` end to end at the ci profile: rows in the CSV, run.json, bad input."""

import json
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from harness.cli import app

runner = CliRunner()
REPO_TOML = Path(__file__).resolve().parents[3] / "bench.toml"


def smoke(tmp_path, *extra):
    return ["generate", "--config", str(REPO_TOML), "--profile", "ci", "--out", str(tmp_path), "--no-report",
            "--new-tokens", "3", "--share-steps", "2", *extra]  # fmt: skip


def test_generate_writes_a_row_per_variant_and_context(tmp_path):
    result = runner.invoke(app, smoke(tmp_path, "--variants", "gqa,pgqa", "--context", "16,24"))
    assert result.exit_code == 0, result.output
    csv_path = Path(result.output.strip().splitlines()[-1].removeprefix("CSV: ").strip())
    df = pd.read_csv(csv_path)
    assert list(zip(df["variant"], df["context"], df["status"], strict=True)) == [
        ("mha", 16, "ok"), ("mha", 24, "ok"), ("gqa", 16, "ok"), ("gqa", 24, "ok"),
        ("pgqa", 16, "unsupported"), ("pgqa", 24, "unsupported"),
    ]  # fmt: skip
    meta = json.loads((csv_path.parent / "run.json").read_text())
    assert meta["config"]["context"] == [16, 24] and meta["config"]["layers"] == 2  # the ci profile
    assert "gqa P=24: tpot" in result.output and "speedup" in result.output


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    for extra, message in (
        (["--variants", "nope"], "unknown variant 'nope'"),
        (["--context", "16,x"], "--context '16,x' must be a comma-separated list of integers"),
        (["--compile", "on"], "compile='on' is not one of"),
        (["--new-tokens", "0"], "new_tokens=0 must be >= 1"),
    ):
        result = runner.invoke(app, smoke(tmp_path, *extra))
        assert result.exit_code == 2, (extra, result.output)
        assert message in result.output and "Traceback" not in result.output
