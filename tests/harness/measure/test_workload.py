import pytest
import torch

import attn_variants as av
from harness.measure import timing, workload


@pytest.mark.parametrize("mode", ["fwd", "fwd_bwd", "decode"])
def test_every_mode_runs_and_reports_cache_bytes(mode):
    w = workload.build("gqa", av.AttnSpec(32, 4, 2), mode, batch=2, seq_len=8)
    out = w.step()
    assert out.shape == ((2, 1, 32) if mode == "decode" else (2, 8, 32))
    assert w.kv_cache_bytes == 2 * 2 * 2 * 8 * 8 * 4


def test_decode_step_is_repeatable_from_the_same_cache():
    w = workload.build("mha", av.AttnSpec(32, 4), "decode", batch=1, seq_len=6)
    torch.testing.assert_close(w.step(), w.step())


def test_presets_resolve_the_spec():
    assert workload.build("mqa", av.AttnSpec(32, 4, 4), "fwd", batch=1, seq_len=4).spec.n_kv_heads == 1


def test_bad_mode_and_sizes():
    with pytest.raises(ValueError, match="unknown mode 'train'"):
        workload.build("gqa", av.AttnSpec(32, 4), "train", batch=1, seq_len=4)
    with pytest.raises(ValueError, match="batch=0 and seq_len=4 must be positive"):
        workload.build("gqa", av.AttnSpec(32, 4), "fwd", batch=0, seq_len=4)


def test_timing_keeps_every_sample_and_summarizes():
    calls = []
    samples = timing.sample(lambda: calls.append(1), torch.device("cpu"), warmup=2, repeats=5)
    assert len(calls) == 7 and len(samples) == 5 and all(s >= 0 for s in samples)
    s = timing.summarize([1.0, 2.0, 3.0, 4.0, 5.0])
    assert (s.median, s.n) == (3.0, 5)
    assert s.p10 == pytest.approx(1.4) and s.p90 == pytest.approx(4.6)
    with pytest.raises(ValueError):
        timing.summarize([])
