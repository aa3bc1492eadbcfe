"""`attnbench selftest` on CPU: the table, the exit code, a wrong fast path caught, probes skipped."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import attn_variants as av
from harness import selftest
from harness.cli import app
from harness.measure import calibrate


@pytest.fixture(autouse=True)
def _small(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(calibrate, "MATMUL_K", {"cpu": 128})
    monkeypatch.setattr(calibrate, "COPY_BYTES", {"cpu": 2**22})
    monkeypatch.setattr(calibrate, "MIN_SECONDS", 0.01)
    monkeypatch.setattr(selftest.av, "names", lambda: ["gqa", "mmca"])  # two families keep it fast


def test_selftest_on_cpu_passes_and_writes_its_table(tmp_path):
    result = CliRunner().invoke(app, ["selftest", "--device", "cpu", "--out", str(tmp_path / "st")])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "st" / "selftest.csv")
    variants = table[table["part"] == "variant"]
    assert len(variants) == 2 * 3 * 2  # gqa, mmca x fwd, fwd_bwd, decode x float32, bfloat16
    assert set(variants["status"]) == {"ok"}
    probes = table[table["part"] == "kernel probe"]
    assert len(probes) == 3 and set(probes["status"]) == {"skipped"}
    assert table.set_index("part").loc[["sweep", "check"], "status"].tolist() == ["ok", "ok"]


def test_a_wrong_fast_path_fails_the_selftest(tmp_path, monkeypatch):
    """sdpa made 1% off for one variant: its lines FAIL, the others stay ok, exit code 1."""
    real = selftest._output

    def off(name, mode, dtype, device, n, backend):
        out = real(name, mode, dtype, device, n, backend)
        return out * 1.01 if (name, backend) == ("mmca", "sdpa") else out

    monkeypatch.setattr(selftest, "_output", off)
    outcomes = [selftest.compare_variant(n, "fwd", "float32", torch.device("cpu")) for n in ("gqa", "mmca")]
    assert [o.status for o in outcomes] == ["ok", "FAIL"]
    assert selftest.report(outcomes, tmp_path, console=_Quiet()) == 1


def test_probe_tensors_have_the_layouts_they_ask_about():
    """The probes test what they name: a stride-0 head axis, and non-contiguous cache slices."""
    q, k, _ = selftest._stride0_query(torch.device("cpu"))
    assert q.stride(1) == 0
    q, k, v = selftest._cache_slices(torch.device("cpu"))
    assert not k.is_contiguous() and not v.is_contiguous() and k.shape[2] == 1025


class _Quiet:
    def print(self, *args, **kwargs) -> None:
        pass


def test_tolerances_cover_both_dtypes():
    assert set(selftest.TOLERANCES) == {"float32", "bfloat16"}
    assert av.info("gqa").options["backend"] == "sdpa"  # the fast path is the default backend
