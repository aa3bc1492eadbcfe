"""What a sweep cell measures: FLOPs, peak memory, KV-cache bytes, SDPA backend, the grid."""

import itertools

import pytest
import torch

import attn_variants as av
from attn_variants.registry import _REGISTRY, register
from harness import measure
from harness.measure import workload
from harness.sweep import runner as sweep
from harness.sweep.grid import grid
from harness.variant_choice import VariantChoice, parse_one, parse_variants

CPU = torch.device("cpu")
_ids = itertools.count()


def tiny_config(tmp_path, **kw):
    base = dict(seq_len=(16,), heads=(4,), kv_heads=(1, 2), modes=("fwd",), batch=1, head_dim=8,
                repeats=2, warmup=0, threads=1, device="cpu", out=str(tmp_path))  # fmt: skip
    return sweep.SweepConfig(**{**base, **kw})


@pytest.mark.parametrize("b, n, h, e", [(2, 64, 4, 16), (1, 33, 2, 8)])
def test_mha_forward_flops_match_the_attention_and_projection_count(b, n, h, e):
    d = h * e
    w = workload.build("mha", av.AttnSpec(d, h), "fwd", batch=b, seq_len=n)
    flops = measure.count_flops(w.step)
    assert flops > 0, "FlopCounterMode counted 0: the fused kernel was not replaced by the math backend"
    attention = 4 * b * h * n * n * e  # q k^T and p v, causal counted as full
    projections = 2 * b * n * d * (4 * d)  # q, k, v, o: each (b n, d) @ (d, d) when g = h
    assert flops == pytest.approx(attention + projections, rel=0.01)


def test_gqa_flops_count_grouped_kv_projections():
    b, n, h, g, e = 1, 32, 4, 1, 8
    d = h * e
    w = workload.build("gqa", av.AttnSpec(d, h, g), "fwd", batch=b, seq_len=n)
    expected = 4 * b * h * n * n * e + 2 * b * n * d * (2 * d + 2 * g * e)
    assert measure.count_flops(w.step) == pytest.approx(expected, rel=0.01)


def test_cpu_peak_memory_is_measured_and_grows_with_n():
    peaks = []
    for n in (64, 256, 1024):
        w = workload.build("mha", av.AttnSpec(64, 4), "fwd", batch=2, seq_len=n)
        w.step()
        peaks.append(measure.probe(w.step, CPU).peak_mem_bytes)
    assert 0 < peaks[0] < peaks[1] < peaks[2], peaks
    # the output alone is b*n*d*4 bytes; the measured peak holds at least that
    assert peaks[2] >= 2 * 1024 * 64 * 4


def test_kv_cache_bytes_halve_from_g2_to_g1(tmp_path):
    df = sweep.run(tiny_config(tmp_path, variants=("gqa",), modes=("decode",), reference="none"))
    by_g = df.set_index("n_kv_heads")["kv_cache_bytes"]
    assert by_g[2] == 2 * by_g[1] == 2 * (2 * 1 * 1 * 16 * 8 * 4)


def test_sdpa_backend_from_op_names():
    assert (
        measure.sdpa_backend(["aten::mm", "aten::_scaled_dot_product_flash_attention_for_cpu"]) == "flash_cpu"
    )
    names = ["aten::_scaled_dot_product_efficient_attention", "aten::_scaled_dot_product_attention_math"]
    assert measure.sdpa_backend(names) == "efficient+math"
    assert measure.sdpa_backend(["aten::bmm", "aten::softmax"]) == "none"
    w = workload.build("gqa", av.AttnSpec(32, 4, 2), "fwd", batch=1, seq_len=8, options={"backend": "eager"})
    assert measure.probe(w.step, CPU).sdpa_backend == "none"
    math = {"backend": "sdpa_math"}
    w = workload.build("gqa", av.AttnSpec(32, 4, 2), "fwd", batch=1, seq_len=8, options=math)
    assert measure.probe(w.step, CPU).sdpa_backend == "math"  # read from the profiler's raw events


def test_the_summary_footer_splits_overhead_from_one_off_start_up(tmp_path):
    from harness.sweep.view import footer

    df = sweep.run(tiny_config(tmp_path, variants=("gqa",), kv_heads=(2,)))
    assert df.attrs["startup_s"] > 0 and df.attrs["wall_s"] > df.attrs["timed_s"] > 0
    line = footer(df)
    startup = f"plus {df.attrs['startup_s']:.1f} s of start-up before the clock"
    assert "harness overhead" in line and startup in line


def test_run_returns_the_csv_as_a_frame_with_speedups(tmp_path):
    df = sweep.run(tiny_config(tmp_path, variants=("gqa",)))
    assert list(df["variant"]) == ["mha", "gqa", "gqa"] and set(df["status"]) == {"ok"}
    assert (tmp_path / df.attrs["run_dir"].split("/")[-1] / "run.json").is_file()
    sp = sweep.with_speedup(df)
    assert sp.loc[sp["variant"] == "mha", "speedup"].tolist() == [1.0]
    assert sp["speedup"].notna().all()
    assert df["tflops"].gt(0).all()


def test_threads_are_set_for_the_run_and_restored(tmp_path):
    before = torch.get_num_threads()
    df = sweep.run(tiny_config(tmp_path, variants=("gqa",), kv_heads=(2,), threads=1))
    assert set(df["threads"]) == {1} and torch.get_num_threads() == before


@pytest.fixture
def multimodal():
    name = f"_test_mm_{next(_ids)}"
    register(name, description="test", paper="-", multimodal=True)(av.GroupedQueryAttention)
    yield name
    del _REGISTRY[name]


def test_multimodal_variants_get_visual_tokens_from_registry_metadata(tmp_path, multimodal):
    cells, _ = grid(tiny_config(tmp_path, variants=(multimodal, "gqa"), seq_len=(10, 64)))
    n_visual = {(c.choice.name, c.seq_len): c.n_visual for c in cells}
    assert n_visual[(multimodal, 10)] == 2 and n_visual[(multimodal, 64)] == 16  # round(0.25 n)
    assert n_visual[("gqa", 64)] == 0


def test_variant_options_are_parsed_to_the_default_type(multimodal):
    assert parse_one("gqa:backend=eager") == VariantChoice("gqa", (("backend", "eager"),))
    assert parse_one("gqa:backend=eager").label(2) == "gqa_g2[backend=eager]"
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['x'\] for variant 'gqa'"):
        parse_one("gqa:x=1")
    with pytest.raises(ValueError, match="is not key=value"):
        parse_one("gqa:eager")
    assert parse_variants(["gqa", "gqa", "mha"], reference="mha") == [
        VariantChoice("mha"),
        VariantChoice("gqa"),
    ]
    assert multimodal in {c.name for c in parse_variants(["all"])}


def test_bool_int_and_float_options_parse_from_text():
    name = f"_test_opts_{next(_ids)}"
    register(name, description="test", paper="-", options={"flag": True, "k": 2, "beta": 0.9})(
        av.GroupedQueryAttention
    )
    try:
        choice = parse_one(f"{name}:flag=false:k=3:beta=0.5")
        assert dict(choice.options) == {"flag": False, "k": 3, "beta": 0.5}
        assert choice.options_text == "beta=0.5;flag=false;k=3"
        with pytest.raises(ValueError, match=r"k='x' must be of type int"):
            parse_one(f"{name}:k=x")
        with pytest.raises(ValueError, match="must be a boolean"):
            parse_one(f"{name}:flag=maybe")
    finally:
        del _REGISTRY[name]


@pytest.mark.parametrize("text, value", [("7", 7), ("-3", -3), ("none", None), ("0.5", 0.5), ("abc", "abc")])
def test_options_with_a_none_default_parse_as_literals(text, value):
    """pgqa's seed defaults to None: `pgqa:seed=7` must reach the module as 7, not '7'."""
    choice = parse_one(f"pgqa:seed={text}")
    assert choice.options == (("seed", value),)
    if isinstance(value, int | None):
        assert av.create("pgqa", av.AttnSpec(32, 4, 2), **dict(choice.options)).seed == value


def test_warm_up_runs_until_both_its_calls_and_its_time_are_spent():
    import time

    from harness.measure import timing

    cpu = torch.device("cpu")
    assert timing.warm_up(lambda: time.sleep(0.001), cpu, calls=3, seconds=0.0) == 3
    start = time.perf_counter()
    made = timing.warm_up(lambda: time.sleep(0.001), cpu, calls=1, seconds=0.03)
    assert time.perf_counter() - start >= 0.03 and 3 <= made <= 31  # ~1 ms a call (sleep may overrun)
    assert timing.warm_up(lambda: time.sleep(0.02), cpu, calls=4, seconds=0.01) == 4  # calls bind
    with pytest.raises(ValueError, match="seconds=-1"):
        timing.warm_up(lambda: None, cpu, calls=0, seconds=-1)


def test_a_short_step_is_warmed_up_by_time_and_the_row_says_how_many_calls(tmp_path):
    """A decode step takes well under a millisecond here: 0.05 s of warm-up is many more calls
    than `warmup`; warmup_s=0 keeps exactly `warmup` calls."""
    base = dict(variants=("gqa",), modes=("decode",), reference="none", warmup=2)
    timed = sweep.run(tiny_config(tmp_path / "a", warmup_s=0.05, **base))
    plain = sweep.run(tiny_config(tmp_path / "b", warmup_s=0.0, **base))
    assert (plain["warmup_calls"] == 2).all()
    assert (timed["warmup_calls"] > 2).all()
    per_call = timed["latency_ms_median"] / 1e3
    assert (timed["warmup_calls"] * per_call >= 0.02).all()  # filled the time, not a fixed count
    with pytest.raises(ValueError, match="warmup_s=-0.1 must be >= 0"):
        tiny_config(tmp_path, warmup_s=-0.1)
