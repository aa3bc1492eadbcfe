"""`attnbench sweep` end to end on tiny grids: rows, statuses, resume, bad input."""

import csv

import pytest
import torch
from typer.testing import CliRunner

import attn_variants as av
from harness import config
from harness.cli import app
from harness.records import COLUMNS
from harness.sweep import runner as sweep
from harness.sweep.grid import row_key

runner = CliRunner()
ISSUE_COLUMNS = (
    "run_id timestamp git_commit device device_name torch_version threads dtype variant options mode batch "
    "seq_len n_visual dim n_heads n_kv_heads head_dim latency_ms_median latency_ms_p10 latency_ms_p90 "
    "repeats peak_mem_bytes kv_cache_bytes flops tflops sdpa_backend status error"
).split()


def tiny(tmp_path, *extra, report=False):
    """A tiny CPU grid, isolated from the repo's bench.toml (no report unless asked)."""
    (tmp_path / "empty.toml").write_text("")
    return [
        "sweep", "--config", str(tmp_path / "empty.toml"), "--out", str(tmp_path / "out"), "--device", "cpu",
        "--seq-len", "16,32", "--heads", "4", "--kv-heads", "1,2,3", "--modes", "fwd,decode", "--batch", "1",
        "--head-dim", "8", "--repeats", "2", "--warmup", "0", "--threads", "1",
        *([] if report else ["--no-report"]), *extra,
    ]  # fmt: skip


def read_csv(result):
    path = result.output.strip().splitlines()[-1].removeprefix("CSV: ").strip()
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class Failing(av.GroupedQueryAttention):
    """Fails in `attend` as its `fail` option says; `interrupt_after` builds, raises Ctrl-C."""

    builds = 0
    interrupt_after: int | None = None

    def __init__(self, spec, *, fail="none", backend="sdpa"):
        super().__init__(spec, backend=backend)
        self.fail = fail
        if next(self.parameters()).is_meta:  # the sweep's preflight build: checks options, runs nothing
            return
        Failing.builds += 1
        if Failing.interrupt_after is not None and Failing.builds > Failing.interrupt_after:
            raise KeyboardInterrupt

    def attend(self, q, k, v, *, n_visual, cache):
        if self.fail == "oom":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 PiB")
        if self.fail == "invalid":
            raise ValueError(f"n={q.shape[2]} is not supported by this variant")
        if self.fail == "error":
            raise RuntimeError("kernel exploded")
        return super().attend(q, k, v, n_visual=n_visual, cache=cache)


@pytest.fixture
def failing(temp_variant):
    """A variant registered for one test under a unique name, removed afterwards."""
    Failing.builds, Failing.interrupt_after = 0, None
    return temp_variant(Failing, modes=("fwd",), options={"fail": "none"})


def test_tiny_grid_rows_columns_and_statuses(tmp_path):
    result = runner.invoke(app, tiny(tmp_path, "--variants", "gqa"), env={"COLUMNS": "200"})  # unfolded
    assert result.exit_code == 0, result.output
    rows = read_csv(result)
    assert set(ISSUE_COLUMNS) <= set(rows[0]) and tuple(rows[0]) == COLUMNS
    # per (mode, n): mha (the reference, g=h=4) + gqa g=1,2; (h=4, g=3) is skipped
    assert len(rows) == 2 * 2 * 3
    assert {(r["variant"], r["n_kv_heads"]) for r in rows} == {("mha", "4"), ("gqa", "1"), ("gqa", "2")}
    assert {r["status"] for r in rows} == {"ok"}
    assert all(int(r["flops"]) > 0 and int(r["peak_mem_bytes"]) > 0 for r in rows)
    assert {r["sdpa_backend"] for r in rows} == {"flash_cpu"}
    assert all(len(r["latency_ms_samples"].split(";")) == 2 for r in rows)
    assert "skipped 1 (n_heads, n_kv_heads) pair(s)" in result.output and "(h=4, g=3)" in result.output
    assert "speedup vs mha" in result.output


def test_sweep_draws_its_report_at_the_end(tmp_path):
    result = runner.invoke(app, tiny(tmp_path, "--variants", "gqa", "--modes", "fwd", report=True))
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "out").iterdir()
    assert "report: " in result.output and "index.html" in result.output
    assert (run_dir / "report" / "index.html").exists() and (run_dir / "report" / "latency.png").exists()


def test_summary_keeps_option_labels_in_brackets(tmp_path):
    args = tiny(tmp_path, "--variants", "mmca:visual_attention=full", "--modes", "fwd", "--kv-heads", "2")
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "mmca_g2[visual_attention=full]" in result.output  # rich markup would eat "[...]"


def test_presets_are_deduplicated(tmp_path):
    result = runner.invoke(app, tiny(tmp_path, "--variants", "mha,mqa", "--kv-heads", "1,2,4"))
    assert result.exit_code == 0, result.output
    rows = read_csv(result)
    assert len(rows) == 2 * 2 * 2  # one mha and one mqa cell per (mode, n), not one per g


def test_failing_cells_become_rows_and_the_sweep_goes_on(tmp_path, failing):
    variants = f"gqa,{failing}:fail=error,{failing}:fail=oom,{failing}:fail=invalid"
    result = runner.invoke(app, tiny(tmp_path, "--variants", variants, "--kv-heads", "2"))
    assert result.exit_code == 0, result.output
    rows = read_csv(result)
    by = {(r["variant"], r["options"], r["mode"]): r for r in rows if r["seq_len"] == "16"}
    assert by[(failing, "fail=error", "fwd")]["status"] == "error"
    assert "RuntimeError: kernel exploded" in by[(failing, "fail=error", "fwd")]["error"]
    assert by[(failing, "fail=oom", "fwd")]["status"] == "oom"
    assert by[(failing, "fail=invalid", "fwd")]["status"] == "invalid"
    assert by[(failing, "fail=error", "decode")]["status"] == "unsupported"
    assert by[(failing, "fail=error", "fwd")]["latency_ms_median"] == ""
    assert by[("gqa", "", "decode")]["status"] == "ok" and by[("mha", "", "fwd")]["status"] == "ok"


def test_interrupted_run_keeps_rows_and_resume_finishes_without_duplicates(tmp_path, failing):
    args = tiny(tmp_path, "--variants", failing, "--kv-heads", "1,2", "--modes", "fwd")
    Failing.interrupt_after = 2  # Ctrl-C while building the third cell of this variant
    result = runner.invoke(app, args)
    assert result.exit_code == 130, result.output
    assert "--resume" in result.output
    (run_dir,) = (tmp_path / "out").iterdir()
    kept = list(csv.DictReader(open(run_dir / "sweep.csv")))
    assert 0 < len(kept) < 6  # mha + 2 g per n, 2 n
    Failing.interrupt_after = None
    builds_before = Failing.builds
    result = runner.invoke(app, ["sweep", "--resume", str(run_dir)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(open(run_dir / "sweep.csv")))
    keys = [row_key(r) for r in rows]
    assert len(rows) == 6 and len(set(keys)) == 6
    assert rows[: len(kept)] == kept  # earlier rows untouched
    assert Failing.builds - builds_before == sum(r["variant"] == failing for r in rows[len(kept) :])


def test_resume_rejects_other_flags(tmp_path):
    result = runner.invoke(app, ["sweep", "--resume", str(tmp_path), "--batch", "2"])
    assert result.exit_code == 2
    assert "--resume takes its settings from run.json; drop ['batch']" in result.stderr


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--variants", "nope"], "unknown variant 'nope'; valid variants: ["),
        (["--variants", "gqa:bogus=1"], "unknown option(s) ['bogus'] for variant 'gqa'"),
        (["--seq-len", ""], "empty grid: seq_len has no values"),
        (["--seq-len=-16"], "seq_len values must be positive; got [-16]"),
        (["--seq-len", "16,x"], "--seq-len '16,x' must be a comma-separated list of integers"),
        (["--batch", "0"], "batch=0 must be >= 1"),
        (["--heads", "3", "--kv-heads", "2"], "empty grid: no valid (n_heads, n_kv_heads) pair"),
        (
            ["--dtype", "fp8"],
            "dtype='fp8' is not one of ['auto', 'float32', 'float64', 'float16', 'bfloat16']",
        ),
        (["--device", "tpu"], "device='tpu' is not one of ['auto', 'cpu', 'cuda']"),
        (["--modes", "train"], "modes='train' is not one of ['fwd', 'fwd_bwd', 'decode']"),
        (["--profile", "nope"], "unknown profile 'nope'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, extra, message):
    result = runner.invoke(app, tiny(tmp_path, *extra))
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert message in result.stderr
    assert not (tmp_path / "out").exists()


def test_malformed_bench_toml_names_the_problem(tmp_path):
    bad = tmp_path / "bench.toml"
    for text, message in [
        ("[sweep\n", "is not valid TOML"),
        ("[sweep]\nrepeat = 3\n", "unknown key(s) ['repeat']"),
    ]:
        bad.write_text(text)
        result = runner.invoke(app, ["sweep", "--config", str(bad)])
        assert result.exit_code == 2 and message in result.stderr, result.stderr


def test_repo_profiles_load():
    quick = config.load(sweep.SweepConfig, "sweep", profile="quick")
    assert quick.threads == 1 and quick.seq_len == (128, 512)
    gpu = config.load(sweep.SweepConfig, "sweep", profile="gpu")
    assert (gpu.dtype, gpu.device, max(gpu.seq_len)) == ("bfloat16", "cuda", 16384)
    assert config.load(sweep.SweepConfig, "sweep", profile="ci").device == "cpu"
