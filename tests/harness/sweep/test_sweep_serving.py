"""Decode as served: --lengths, --kv-layout, --page-size, --q-len; rows, run.json, bad input."""

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.sweep import lengths
from harness.sweep.config import SweepConfig
from harness.sweep.grid import row_key
from harness.sweep.runner import grid

runner = CliRunner()


def served(tmp_path, *extra):
    """A tiny CPU decode grid, isolated from the repo's bench.toml."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "empty.toml").write_text("")
    return [
        "sweep", "--config", str(tmp_path / "empty.toml"), "--out", str(tmp_path / "out"), "--device", "cpu",
        "--variants", "gqa,kdgqa", "--reference", "none", "--modes", "decode", "--seq-len", "16",
        "--heads", "4", "--kv-heads", "2", "--head-dim", "8", "--repeats", "2", "--warmup", "0",
        "--threads", "1", "--no-report", *extra,
    ]  # fmt: skip


def rows_of(result) -> list[dict]:
    path = result.output.strip().splitlines()[-1].removeprefix("CSV: ").strip()
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("fixed", None),
        ("uniform:3-9", 9),
        ("zipf:1.2:50", 50),
        ("lognormal:3:0.5:40", 40),
    ],
)
def test_draws_are_seeded_and_in_range(text, expected):
    dist = lengths.parse(text)
    a, b = dist.draw(16, 12, seed=3), dist.draw(16, 12, seed=3)
    assert a == b and len(a) == 16 and all(x >= 1 for x in a)
    assert dist.max == expected
    assert max(a) <= (expected or 12)
    if text == "fixed":
        assert a == [12] * 16
    else:
        assert dist.draw(16, 12, seed=4) != a


def test_file_lengths_in_order_repeating(tmp_path):
    path = tmp_path / "lengths.txt"
    path.write_text("5\n17\n3\n")
    assert lengths.parse(f"file:{path}").draw(5, 0, seed=0) == [5, 17, 3, 5, 17]


@pytest.mark.parametrize(
    "text, message",
    [
        ("uniform:0-5", "LO=0 must be a positive integer"),
        ("uniform:9-5", "LO=9 is above HI=5"),
        ("uniform:5", "expected uniform:LO-HI"),
        ("zipf:0:10", "A=0 must be > 0"),
        ("lognormal:1:0:10", "SIGMA=0 must be > 0"),
        ("lognormal:1:1:-10", "MAX=-10 must be a positive integer"),
        ("gauss:1", "unknown distribution 'gauss'"),
        ("file:/no/such/file", "cannot read the length file '/no/such/file'"),
        ("fixed:3", "'fixed' takes no parameters"),
    ],
)
def test_bad_lengths_name_the_value(text, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        lengths.parse(text)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--lengths", "uniform:0-8"], "LO=0 must be a positive integer"),
        (["--lengths", "poisson:3"], "unknown distribution 'poisson'"),
        (["--lengths", "file:/no/such/file"], "cannot read the length file"),
        (["--page-size", "0"], "page_size=0 must be >= 1"),
        (["--kv-layout", "pages"], "kv_layout='pages' is not one of ['padded', 'paged']"),
        (["--q-len", "0"], "q_len=0 must be >= 1"),
        (
            ["--lengths", "uniform:1000000-2000000", "--memory-limit-mb", "64"],
            "over memory_limit_mb=64",
        ),
    ],
)
def test_bad_serving_input_is_one_line_and_exit_2(tmp_path, extra, message):
    result = runner.invoke(app, served(tmp_path, *extra))
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert message in result.stderr
    assert not (tmp_path / "out").exists()  # before any cell runs


def test_padded_and_paged_rows_carry_the_serving_figures(tmp_path):
    by_layout = {}
    for layout in ("padded", "paged"):
        extra = ["--lengths", "uniform:3-40", "--batch", "2,5", "--kv-layout", layout, "--page-size", "8"]
        result = runner.invoke(app, served(tmp_path / layout, *extra, "--q-len", "2"))
        assert result.exit_code == 0, result.output
        by_layout[layout] = rows_of(result)
        run = json.loads(next(Path(tmp_path / layout / "out").glob("*/run.json")).read_text())
        drawn = lengths.parse("uniform:3-40").draw(5, 0, seed=0)
        assert run["lengths"] == {"2": drawn[:2], "5": drawn}
    for padded, paged in zip(by_layout["padded"], by_layout["paged"], strict=True):
        assert padded["status"] == paged["status"] == "ok"
        assert (padded["variant"], padded["batch"]) == (paged["variant"], paged["batch"])
        assert padded["kv_bytes_needed"] == paged["kv_bytes_needed"]
        b, drawn = int(padded["batch"]), lengths.parse("uniform:3-40").draw(int(padded["batch"]), 0, seed=0)
        assert int(padded["seq_len"]) == int(padded["len_max"]) == max(drawn)
        assert int(padded["len_min"]) == min(drawn) and float(padded["len_mean"]) == sum(drawn) / b
        waste, page_waste = float(padded["padding_waste"]), float(paged["padding_waste"])
        assert waste == pytest.approx(b * max(drawn) / sum(drawn))  # the GQA family: k and v only
        pages = sum(-(-n // 8) for n in drawn)
        assert page_waste == pytest.approx(pages * 8 / sum(drawn), rel=1e-6) or padded["variant"] == "kdgqa"
        assert page_waste >= 1 and waste > 1  # the drawn lengths differ: padding is held
        assert padded["kernel"] == "split" and paged["kernel"] == "gather+split"
        tokens = float(padded["tokens_per_s"]) * float(padded["latency_ms_median"]) / 1e3
        assert tokens == pytest.approx(b * 2)  # b requests x q_len 2 per step
        assert padded["q_len"] == "2" and padded["lengths"] == "uniform:3-40"


def test_served_cells_resume_by_their_key(tmp_path):
    cfg = SweepConfig(
        variants=("gqa",), reference="none", modes=("decode", "fwd"), seq_len=(16,), heads=(4,),
        kv_heads=(2,), head_dim=8, batch=(3,), lengths="zipf:1.1:30", kv_layout="paged", page_size=4,
    )  # fmt: skip
    cells, _ = grid(cfg)
    decode = next(c for c in cells if c.mode == "decode")
    fwd = next(c for c in cells if c.mode == "fwd")
    assert decode.lengths and decode.seq_len == max(decode.lengths) and not fwd.lengths
    row = dict(
        variant="gqa", options="", mode="decode", batch="3", seq_len=str(decode.seq_len), n_visual="0",
        n_heads="4", n_kv_heads="2", head_dim="8", dtype="auto", layout="prefix", compile="off",
        lengths="zipf:1.1:30", kv_layout="paged", page_size="4", q_len="1",
    )  # fmt: skip
    assert row_key(row) == decode.key()
    plain = SweepConfig(variants=("gqa",), reference="none", modes=("decode",), seq_len=(16,), heads=(4,),
                        kv_heads=(2,), head_dim=8)  # fmt: skip
    cell = grid(plain)[0][0]
    assert len(cell.key()) == 10  # the plain decode keeps the key of older CSVs
