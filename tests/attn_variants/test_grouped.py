"""GQA family: fast path vs reference, taxonomy, causality, decode, cache, uptraining (the shape
and gradient properties every variant shares are tests/attn_variants/test_contract.py's)."""

import pytest
import torch
from torch.testing import assert_close

import attn_variants as av

SHAPES = [  # (b, n, d, h, g): several shapes, including odd ones
    (2, 16, 64, 8, 2),
    (1, 1, 32, 4, 4),
    (3, 7, 48, 6, 3),
    (2, 33, 96, 12, 1),
]


def make(name, spec, dtype=torch.float64, **opts):
    return av.create(name, spec, **opts).to(dtype)


@pytest.mark.parametrize("b, n, d, h, g", SHAPES)
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("dtype, tol", [(torch.float64, {}), (torch.float32, dict(atol=1e-5, rtol=1e-4))])
def test_sdpa_matches_eager(b, n, d, h, g, causal, dtype, tol):
    spec = av.AttnSpec(d, h, g, causal=causal, bias=True)
    fast = make("gqa", spec, dtype)
    ref = make("gqa", spec, dtype, backend="eager")
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(b, n, d, dtype=dtype)
    assert_close(fast(x), ref(x), **tol)


def test_gqa_with_g_equal_h_is_mha_and_g_one_is_mqa():
    x = torch.randn(2, 12, 64, dtype=torch.float64)
    mha = make("mha", av.AttnSpec(64, 8))
    gqa_h = make("gqa", av.AttnSpec(64, 8, 8))
    gqa_h.load_state_dict(mha.state_dict())
    assert_close(gqa_h(x), mha(x))
    mqa = make("mqa", av.AttnSpec(64, 8))
    gqa_1 = make("gqa", av.AttnSpec(64, 8, 1))
    gqa_1.load_state_dict(mqa.state_dict())
    assert_close(gqa_1(x), mqa(x))


@pytest.mark.parametrize("backend", ["sdpa", "eager"])
@pytest.mark.parametrize("t", [0, 5, 10])
def test_causal_no_leak(backend, t):
    torch.manual_seed(t)
    module = make("gqa", av.AttnSpec(64, 8, 2), backend=backend)
    x = torch.randn(2, 11, 64, dtype=torch.float64)
    y = x.clone()
    y[:, t + 1 :] += torch.randn_like(y[:, t + 1 :])
    out_x, out_y = module(x), module(y)
    assert_close(out_x[:, : t + 1], out_y[:, : t + 1])
    if t + 1 < x.shape[1]:
        assert not torch.allclose(out_x[:, t + 1 :], out_y[:, t + 1 :])


def test_non_causal_does_see_the_future():
    module = make("gqa", av.AttnSpec(64, 8, 2, causal=False))
    x = torch.randn(1, 6, 64, dtype=torch.float64)
    y = x.clone()
    y[:, -1] += 1.0
    assert not torch.allclose(module(x)[:, 0], module(y)[:, 0])


@pytest.mark.parametrize("backend", ["sdpa", "eager"])
@pytest.mark.parametrize("prefix, chunks", [(5, [1, 1, 1, 1]), (1, [3, 1, 4]), (7, [2, 2])])
def test_prefill_then_decode_equals_full_forward(backend, prefix, chunks):
    module = make("gqa", av.AttnSpec(64, 8, 2), backend=backend).eval()
    n = prefix + sum(chunks)
    x = torch.randn(2, n, 64, dtype=torch.float64)
    full = module(x)
    cache = av.KVCache()
    with torch.no_grad():
        outs = [module(x[:, :prefix], cache=cache)]
        start = prefix
        for c in chunks:
            outs.append(module(x[:, start : start + c], cache=cache))
            start += c
    assert_close(torch.cat(outs, dim=1), full)
    assert cache.length == n


@pytest.mark.parametrize("name, g", [("mha", 8), ("gqa", 2), ("mqa", 1)])
def test_cache_holds_g_heads_and_its_bytes_match_the_formula(name, g):
    b, n, d, h = 3, 10, 64, 8
    e = d // h
    module = av.create(name, av.AttnSpec(d, h, 2)).eval()
    cache = av.KVCache()
    with torch.no_grad():
        module(torch.randn(b, n, d), cache=cache)
    assert cache.keys.shape == (b, g, n, e)
    assert cache.nbytes == 2 * b * g * n * e * 4
    analytic = av.info(name).kv_cache_bytes  # the registry's formula, what the sweep records
    assert cache.nbytes == analytic(av.AttnSpec(d, h, 2), {}, b, n, torch.float32)
    assert analytic(av.AttnSpec(d, h, 2), {}, b, n, torch.bfloat16) == cache.nbytes // 2


def test_cache_grows_past_its_capacity_and_truncates():
    cache = av.KVCache()
    for step in range(1, 20):
        k = torch.full((1, 2, 1, 4), float(step))
        keys, _ = cache.update(k, k)
    assert keys[0, 0, :, 0].tolist() == [float(s) for s in range(1, 20)]
    cache.truncate(3)
    assert cache.keys.shape[2] == 3
    with pytest.raises(ValueError, match="length=7 must be in"):
        cache.truncate(7)
    with pytest.raises(ValueError, match="do not match the cache"):
        cache.update(torch.zeros(1, 3, 1, 4), torch.zeros(1, 3, 1, 4))


def test_bad_input_shapes_name_values():
    module = av.create("gqa", av.AttnSpec(64, 8, 2))
    with pytest.raises(ValueError, match=r"x has shape \(2, 5, 32\); expected \(b, n, d=64\)"):
        module(torch.randn(2, 5, 32))
    with pytest.raises(ValueError, match="n_visual=9 must be in"):
        module(torch.randn(2, 5, 64), n_visual=9)


def test_from_mha_with_g_equal_h_reproduces_mha():
    mha = make("mha", av.AttnSpec(64, 8, bias=True))
    x = torch.randn(2, 10, 64, dtype=torch.float64)
    assert_close(av.from_mha(mha, 8)(x), mha(x))


@pytest.mark.parametrize("g", [1, 2, 4])
def test_from_mha_mean_pools_each_group(g):
    h, e, d = 8, 8, 64
    mha = make("mha", av.AttnSpec(d, h, bias=True))
    gqa = av.from_mha(mha, g)
    assert gqa.spec.n_kv_heads == g
    for proj in ("k_proj", "v_proj"):
        src, dst = getattr(mha, proj), getattr(gqa, proj)
        w = src.weight.view(h, e, d)
        for j in range(g):
            heads = w[j * (h // g) : (j + 1) * (h // g)]  # the group's source heads
            assert_close(dst.weight.view(g, e, d)[j], heads.mean(0))
            assert_close(
                dst.bias.view(g, e)[j], src.bias.view(h, e)[j * (h // g) : (j + 1) * (h // g)].mean(0)
            )
    assert_close(gqa.q_proj.weight, mha.q_proj.weight)
    assert_close(gqa.o_proj.bias, mha.o_proj.bias)


def test_from_mha_refuses_a_grouped_source():
    with pytest.raises(ValueError, match="needs an MHA module"):
        av.from_mha(av.create("gqa", av.AttnSpec(64, 8, 2)), 1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_runs_on_device(device, dtype):
    tol = dict(atol=3e-2, rtol=3e-2) if dtype == torch.bfloat16 else dict(atol=1e-5, rtol=1e-4)
    spec = av.AttnSpec(64, 8, 2)
    ref = av.create("gqa", spec, backend="eager").to(device, torch.float64)
    fast = av.create("gqa", spec).to(device, dtype)
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(2, 16, 64, device=device, dtype=torch.float64)
    assert_close(fast(x.to(dtype)).double(), ref(x), **tol)
