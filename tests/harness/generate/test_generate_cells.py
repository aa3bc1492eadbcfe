"""Generate cells: the rows, their timings' consistency, attention's share, refusals and failures."""

import dataclasses
import time

import pandas as pd
import pytest
import torch
from torch import nn

from harness import config
from harness.generate import loop, run, share
from harness.generate.cell import refusal
from harness.generate.decoder import Decoder, DecoderConfig

TINY = dict(context=(16, 48), new_tokens=5, layers=2, dim=32, heads=4, kv_heads=2, vocab=64, share_steps=3)


def tiny_run(tmp_path, **kw) -> pd.DataFrame:
    cfg = run.GenerateConfig(**{**TINY, "reference": "none", "device": "cpu", "out": str(tmp_path), **kw})
    return run.run(cfg, run_dir=tmp_path / "r")


def test_rows_per_variant_and_context_with_consistent_clocks(tmp_path):
    df = tiny_run(tmp_path, variants=("gqa", "mla"))
    assert list(zip(df["variant"], df["context"], strict=True)) == [
        ("gqa", 16), ("gqa", 48), ("mla", 16), ("mla", 48),
    ]  # fmt: skip
    assert (df["status"] == "ok").all(), df["error"].tolist()
    steps = df["tpot_samples_ms"].map(lambda s: [float(x) / 1e3 for x in s.split(";")])
    assert (steps.map(len) == 4).all()  # T - 1 decode steps
    inside = df["ttft_s"] + steps.map(sum)
    # every timed call lies inside the one clock; how closely they add up to it is a goal measured
    # by benchmarks/generate_goals.py (a preempted gap between two steps is no bug)
    assert (inside <= df["wall_s"]).all()
    assert (df["tpot_p10_s"] <= df["tpot_s"]).all() and (df["tpot_s"] <= df["tpot_p90_s"]).all()
    assert (df["tpot_cpu_s"] > 0).all() and (df["tpot_cpu_s"] <= df["tpot_s"] + 1e-4).all()  # CPU <= wall
    decode_s = (df["new_tokens"] - 1) * df["tpot_mean_s"]
    pd.testing.assert_series_equal(df["tokens_per_s"], df["batch"] * 4 / decode_s, check_names=False)
    assert (df["cache_bytes"] == df["kv_cache_bytes"]).all() and (df["peak_mem_bytes"] > 0).all()
    assert df["attn_share"].between(0, 1).all() and (df["attn_s"] > 0).all()
    assert set(df["attn_share_method"]) == {share.THREAD_TIME}  # one thread (tests/conftest.py)
    assert (tmp_path / "r" / "run.json").is_file()
    assert len(pd.read_csv(tmp_path / "r" / run.CSV)) == 4  # every row flushed to the CSV


def test_non_causal_safe_variants_are_status_rows_and_the_run_goes_on(tmp_path):
    df = tiny_run(tmp_path, variants=("kdgqa", "gqa"), context=(16,))
    kd = df[df["variant"] == "kdgqa"].iloc[0]
    assert kd["status"] == "unsupported" and "not causal-safe" in kd["error"]
    assert df[df["variant"] == "gqa"]["status"].tolist() == ["ok"]


def test_a_failing_cell_is_a_row_and_the_run_goes_on(tmp_path, monkeypatch):
    real = loop.generate

    def failing(model, prompt, *a, **kw):
        if prompt.shape[1] == 16:
            raise RuntimeError("boom at P=16")
        return real(model, prompt, *a, **kw)

    monkeypatch.setattr(loop, "generate", failing)
    df = tiny_run(tmp_path, variants=("gqa",))
    assert df["status"].tolist() == ["error", "ok"]
    assert df["error"].iloc[0] == "RuntimeError: boom at P=16"


class Slow(nn.Module):
    """Wraps a module and spins for `seconds` of this thread's CPU time before it: a known amount
    of work in a known place (a sleep would be no work to a CPU-time clock)."""

    def __init__(self, inner: nn.Module, seconds: float) -> None:
        super().__init__()
        self.inner, self.seconds = inner, seconds

    def forward(self, *args, **kwargs):
        end = time.thread_time_ns() + int(self.seconds * 1e9)
        while time.thread_time_ns() < end:
            pass
        return self.inner(*args, **kwargs)


@pytest.mark.parametrize("where, low, high", [("attn", 0.8, 1.0), ("mlp", 0.0, 0.2)])
def test_attention_share_finds_the_time_where_it_is(where, low, high):
    """Time put into the attention calls shows in the share; time put into the MLPs does not."""
    model = Decoder(DecoderConfig("gqa", vocab=64, dim=32, n_heads=4, n_kv_heads=2, layers=2)).eval()
    for block in model.blocks:
        setattr(block, where, Slow(getattr(block, where), 0.02))
    prompt = torch.randint(0, 64, (1, 8))
    gen = loop.generate(model, prompt, 2)
    got = share.measure(model, gen.caches, loop.decode_step(model), gen.tokens[:, -1:], repeats=3)
    assert low <= got.attn_share <= high, got
    assert 0.8 < got.attn_step_ratio < 1.25, got  # the brackets cost little beside 40 ms of work
    assert gen.caches[0].length == 8 + 1  # the share pass left the caches as it found them


def test_the_share_clock_follows_the_device_and_threads():
    assert share.method(torch.device("cpu")) == share.THREAD_TIME  # one thread (tests/conftest.py)
    torch.set_num_threads(2)
    assert share.method(torch.device("cpu")) == share.WALL_TIME  # workers' CPU time is not this thread's
    assert share.method(torch.device("cuda")) == share.CUDA_EVENTS


def test_refusal_names_the_reason():
    assert refusal("gqa") == ""
    assert "not causal-safe" in refusal("pgqa")


def test_config_from_bench_toml_and_bad_values(tmp_path):
    toml = tmp_path / "bench.toml"
    toml.write_text("[generate]\ncontext = [64, 128]\n[profiles.big.generate]\nlayers = 16\n")
    cfg = config.load(run.GenerateConfig, "generate", path=toml, profile="big", overrides={"batch": 3})
    assert (cfg.context, cfg.layers, cfg.batch) == ((64, 128), 16, 3)
    with pytest.raises(ValueError, match="new_tokens=0"):
        run.GenerateConfig(new_tokens=0)
    with pytest.raises(ValueError, match="compile='on'"):
        config.build(run.GenerateConfig, {"compile": "on"})


def test_a_cell_on_each_device(tmp_path, device):
    """The whole cell where it would run on a GPU machine (CUDA events, allocator peaks)."""
    cfg = run.GenerateConfig(**{**TINY, "context": (24,), "device": device.type, "out": str(tmp_path)})
    df = run.run(dataclasses.replace(cfg, variants=("gqa",), reference="none"), run_dir=tmp_path / "r")
    assert df["status"].tolist() == ["ok"], df["error"].tolist()
    assert df["attn_share_method"].iloc[0] == share.method(device)
    assert 0 < df["attn_share"].iloc[0] < 1 and df["peak_mem_bytes"].iloc[0] > 0
