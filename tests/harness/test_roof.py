"""The roofline time of a decode step (harness/measure/roof.py)."""

import pandas as pd
import pytest
import torch

import attn_variants as av
from harness.measure import roof


def test_decode_bytes_are_the_cache_the_weights_and_the_token_in_and_out():
    spec = av.AttnSpec(16, 4, 2)  # q, o: 16 x 16; k, v: 16 x 8 (g*e = 8)
    module = av.create("gqa", spec)
    weights = (2 * 16 * 16 + 2 * 16 * 8) * 4
    assert roof.weight_bytes(module) == weights
    cache = av.info("gqa").kv_cache_bytes(spec, {}, 3, 100, torch.float32)  # 2*b*g*n*e*4
    assert cache == 2 * 3 * 2 * 100 * 4 * 4
    assert roof.decode_bytes(module, cache, 3, 1, torch.float32) == cache + weights + 2 * 3 * 16 * 4


def test_decode_bytes_count_buffers_and_every_parameter():
    """DGQA's state buffers and MoH's router are read by the step too."""
    spec = av.AttnSpec(16, 4, 2)
    base = roof.weight_bytes(av.create("gqa", spec))
    assert roof.weight_bytes(av.create("dgqa", spec)) > base  # norm_cache, allocation, steps
    assert roof.weight_bytes(av.create("moh", spec)) > base  # wg, wg_0, wg_1


def test_roof_is_the_longer_of_moving_and_computing():
    assert roof.roof_s(10e9, 1e9, 10e9, 100e9) == pytest.approx(1.0)  # memory: 1 s against 0.01 s
    assert roof.bound(10e9, 1e9, 10e9, 100e9) == "memory"
    assert roof.roof_s(1e9, 300e9, 10e9, 100e9) == pytest.approx(3.0)  # compute: 3 s against 0.1 s
    assert roof.bound(1e9, 300e9, 10e9, 100e9) == "compute"


def test_roof_refuses_a_peak_that_is_not_positive():
    with pytest.raises(ValueError, match="peak_flops=0"):
        roof.roof_s(1, 1, 1.0, 0)


def test_a_sweep_gives_decode_rows_their_roof_and_other_rows_none(tmp_path):
    """decode_bytes from the registry's cache bytes and the module's weights; roof_s the longer
    of moving them and computing flops_effective at the run's calibrated peaks; roof_util =
    roof_s / median. The peaks come back from the row's own flops_util and bw_util."""
    from harness.sweep import runner as sweep

    cfg = sweep.SweepConfig(seq_len=(16,), heads=(4,), kv_heads=(2,), modes=("fwd", "decode"), batch=2,
                            head_dim=8, repeats=2, warmup=0, threads=1, device="cpu", out=str(tmp_path),
                            variants=("gqa", "mla"), reference="none")  # fmt: skip
    df = sweep.run(cfg).set_index(["variant", "mode"])
    for variant in ("gqa", "mla"):
        row = df.loc[(variant, "decode")]
        module = av.create(variant, av.AttnSpec(32, 4, 2))
        assert row["decode_bytes"] == row["kv_cache_bytes"] + roof.weight_bytes(module) + 2 * 2 * 32 * 4
        t = row["latency_ms_median"] / 1e3
        peak_flops = row["flops_effective"] / t / row["flops_util"]
        peak_bw = row["bytes_moved"] / t / row["bw_util"]
        expected = max(row["decode_bytes"] / peak_bw, row["flops_effective"] / peak_flops)
        assert row["roof_s"] == pytest.approx(expected, rel=1e-6)
        assert row["roof_util"] == pytest.approx(row["roof_s"] / t, rel=1e-6)
        assert df.loc[(variant, "fwd")][["decode_bytes", "roof_s", "roof_util"]].isna().all()
        # what the step holds before it starts: weights, the new token (b, 1, d), the cache
        assert row["resident_bytes"] == roof.weight_bytes(module) + 2 * 32 * 4 + row["kv_cache_bytes"]
        assert row["resident_bytes"] > row["peak_mem_bytes"]  # the transient peak is not the memory
        assert pd.isna(df.loc[(variant, "fwd"), "resident_bytes"])
