"""MMCA: fast path vs reference, m = 0 is GQA, no leaks, two softmaxes, decode, SimpleMMCA."""

import math
import re
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

import attn_variants as av
from attn_variants.mmca import reference
from harness.measure import workload

CASES = [  # (b, n, m, d, h, g): several shapes and visual counts, including odd ones
    (2, 16, 0, 64, 8, 2),
    (2, 16, 5, 64, 8, 2),
    (1, 7, 3, 48, 6, 3),
    (3, 9, 8, 32, 4, 1),  # one text token
    (2, 6, 6, 32, 4, 4),  # no text at all
    (1, 1, 0, 32, 4, 2),
    (2, 33, 11, 96, 12, 4),
]
VISUAL = ["self", "full"]


def make(spec, visual_attention="self", backend="sdpa", name="mmca"):
    opts = {"visual_attention": visual_attention} if name == "mmca" else {}
    return av.create(name, spec, backend=backend, **opts).to(torch.float64)


def x_of(b, n, d=64):
    return torch.randn(b, n, d, dtype=torch.float64)


@pytest.mark.parametrize("b, n, m, d, h, g", CASES)
@pytest.mark.parametrize("visual_attention", VISUAL)
@pytest.mark.parametrize("backend", ["sdpa", "eager"])
def test_fast_path_matches_reference(b, n, m, d, h, g, visual_attention, backend):
    module = make(av.AttnSpec(d, h, g, bias=True), visual_attention, backend)
    x = x_of(b, n, d)
    out = module(x, n_visual=m)
    assert out.shape == x.shape
    assert_close(out, reference(module, x, m))


@pytest.mark.parametrize("visual_attention", VISUAL)
def test_non_causal_text_matches_reference(visual_attention):
    module = make(av.AttnSpec(64, 8, 2, causal=False), visual_attention)
    x = x_of(2, 12)
    assert_close(module(x, n_visual=4), reference(module, x, 4))


@pytest.mark.parametrize("visual_attention", VISUAL)
@pytest.mark.parametrize("h, g", [(8, 8), (8, 2), (8, 1)])
def test_no_visual_tokens_is_causal_gqa(visual_attention, h, g):
    spec = av.AttnSpec(64, h, g, bias=True)
    mmca, gqa = make(spec, visual_attention), make(spec, name="gqa")
    gqa.load_state_dict(mmca.state_dict())
    x = x_of(2, 13)
    assert_close(mmca(x), gqa(x))
    assert_close(mmca(x, n_visual=0), gqa(x, n_visual=0))


@pytest.mark.parametrize("visual_attention", VISUAL)
@pytest.mark.parametrize("t", [4, 7, 10])
def test_text_after_t_does_not_leak(visual_attention, t):
    m, n = 4, 11  # text positions 4..10; perturb every token after t
    module = make(av.AttnSpec(64, 8, 2), visual_attention)
    x = x_of(2, n)
    y = x.clone()
    y[:, t + 1 :] += torch.randn_like(y[:, t + 1 :])
    out_x, out_y = module(x, n_visual=m), module(y, n_visual=m)
    assert_close(out_x[:, : t + 1], out_y[:, : t + 1])
    if t + 1 < n:
        assert not torch.allclose(out_x[:, t + 1 :], out_y[:, t + 1 :])


@pytest.mark.parametrize("visual_attention", VISUAL)
def test_text_never_reaches_visual_outputs(visual_attention):
    m = 5
    module = make(av.AttnSpec(64, 8, 2), visual_attention)
    x = x_of(2, 12)
    y = x.clone()
    y[:, m:] = torch.randn_like(y[:, m:])  # every text token changed
    assert_close(module(x, n_visual=m)[:, :m], module(y, n_visual=m)[:, :m])


@pytest.mark.parametrize("j", [0, 2, 4])
def test_self_visual_sees_only_itself_and_full_sees_all(j):
    m = 5
    x = x_of(2, 9)
    y = x.clone()
    y[:, j] += 1.0
    outs = {}
    for va in VISUAL:
        module = make(av.AttnSpec(64, 8, 2), va)
        outs[va] = module(x, n_visual=m), module(y, n_visual=m)
    out_x, out_y = outs["self"]
    others = [i for i in range(m) if i != j]
    assert_close(out_x[:, others], out_y[:, others])
    assert not torch.allclose(out_x[:, j], out_y[:, j])
    assert not torch.allclose(out_x[:, m:], out_y[:, m:])  # text still reads visual token j
    full_x, full_y = outs["full"]
    assert not torch.allclose(full_x[:, others], full_y[:, others])  # "full" mixes visual tokens


def scalar_module(name):
    """d = h = g = e = 1 and every projection the identity: q = k = v = x, scale 1."""
    module = make(av.AttnSpec(1, 1, 1), name=name)
    for proj in (module.q_proj, module.k_proj, module.v_proj, module.o_proj):
        proj.weight.data.fill_(1.0)
    return module


def scalar_x(m, text=(0.5, 2.0), visual=1.0):
    return torch.tensor([[visual] * m + list(text)], dtype=torch.float64)[..., None]  # (1, m + 2, 1)


def test_two_softmaxes_hand_computed():
    """Visual tokens are all 1.0, text tokens 0.5 then 2.0; q = k = v = x, scale 1.

    MMCA, last text token (q = 2): text-text weights softmax([1, 4]) over values [0.5, 2],
    plus the visual softmax over m equal keys, which averages them to exactly 1.0. More visual
    keys do not dilute the text-text weights. Concat: one softmax over [m x 2, 1, 4].
    """
    e1, e2, e4 = math.e, math.e**2, math.e**4
    text_text = (0.5 * e1 + 2.0 * e4) / (e1 + e4)
    mmca = scalar_module("mmca")
    for m in (1, 3, 10):
        out = mmca(scalar_x(m), n_visual=m)[0, :, 0]
        expected = [1.0] * m + [0.5 + 1.0, text_text + 1.0]  # visual "self": its own value
        assert_close(out, torch.tensor(expected, dtype=torch.float64))
    concat = scalar_module("concat")
    for m in (1, 3):
        last = concat(scalar_x(m), n_visual=m)[0, -1, 0]
        single = (m * e2 * 1.0 + e1 * 0.5 + e4 * 2.0) / (m * e2 + e1 + e4)
        assert_close(last, torch.tensor(single, dtype=torch.float64))
        assert abs(last.item() - (text_text + 1.0)) > 0.1


def test_concat_is_gqa_reading_one_causal_stream():
    spec = av.AttnSpec(64, 8, 2)
    concat, gqa = make(spec, name="concat"), make(spec, name="gqa")
    gqa.load_state_dict(concat.state_dict())
    x = x_of(2, 10)
    assert_close(concat(x, n_visual=4), gqa(x))
    assert av.info("concat").multimodal and av.info("mmca").multimodal
    assert av.info("mmca").options == {"backend": "sdpa", "visual_attention": "self"}


@pytest.mark.parametrize("visual_attention", VISUAL)
@pytest.mark.parametrize("backend", ["sdpa", "eager"])
@pytest.mark.parametrize(
    "m, prefix, chunks", [(4, 6, [1, 1, 1]), (3, 3, [1, 2, 1]), (0, 5, [1, 1]), (2, 5, [3])]
)
def test_prefill_then_decode_equals_full_forward(visual_attention, backend, m, prefix, chunks):
    module = make(av.AttnSpec(64, 8, 2), visual_attention, backend).eval()
    n = prefix + sum(chunks)
    x = x_of(2, n)
    full = module(x, n_visual=m)
    cache = av.KVCache()
    with torch.no_grad():
        outs = [module(x[:, :prefix], n_visual=m, cache=cache)]
        assert cache.n_visual == m
        start = prefix
        for c in chunks:
            outs.append(module(x[:, start : start + c], cache=cache))
            start += c
    assert_close(torch.cat(outs, dim=1), full)
    assert cache.length == n and cache.n_visual == m


def test_sweep_decode_workload_runs_from_a_multimodal_prefill():
    w = workload.build("mmca", av.AttnSpec(32, 4, 2), "decode", batch=2, seq_len=8, n_visual=2)
    out = w.step()
    assert out.shape == (2, 1, 32)
    assert_close(w.step(), out)


def test_truncating_into_the_visual_tokens_shrinks_n_visual():
    cache = av.KVCache()
    cache.update(torch.zeros(1, 2, 6, 4), torch.zeros(1, 2, 6, 4))
    cache.n_visual = 4
    cache.truncate(5)
    assert cache.n_visual == 4
    cache.truncate(2)
    assert cache.n_visual == 2


def test_bad_options_and_inputs_name_the_values():
    spec = av.AttnSpec(64, 8, 2)
    valid = r"visual_attention='cross' is not valid; choose one of \['self', 'full'\]"
    with pytest.raises(ValueError, match=valid):
        av.create("mmca", spec, visual_attention="cross")
    module = av.create("mmca", spec)
    with pytest.raises(ValueError, match="n_visual=7 must be in"):
        module(torch.randn(1, 5, 64), n_visual=7)
    cache = av.KVCache()
    with torch.no_grad():
        module(torch.randn(1, 5, 64), n_visual=2, cache=cache)
        with pytest.raises(ValueError, match="n_visual=1 with a KV cache already holding 5 tokens"):
            module(torch.randn(1, 1, 64), n_visual=1, cache=cache)
    assert cache.length == 5  # the refused call left the cache alone
    with pytest.raises(ValueError, match=r"v \(2, 3, 64\) and t \(1, 4, 64\)"):
        av.SimpleMMCA(64, 8)(torch.randn(2, 3, 64), torch.randn(1, 4, 64))


def test_self_dropout_drops_the_single_weight():
    module = av.create("mmca", av.AttnSpec(32, 4, 2, dropout=0.5)).train()
    v = torch.randn(2, 2, 6, 8) + 5.0  # (b, g, m, e), no zeros
    out = module._visual(torch.randn(2, 4, 6, 8), v, v)  # (b, h, m, e)
    want = v.repeat_interleave(2, dim=1)  # (b, h, m, e)
    kept = out[..., 0] != 0  # (b, h, m)
    assert 0 < kept.sum() < kept.numel()
    assert_close(out[kept], 2.0 * want[kept])  # kept weights scale by 1 / (1 - p)
    assert (out[~kept] == 0).all()


def test_gradients_flow_through_both_modalities():
    module = av.create("mmca", av.AttnSpec(64, 8, 2), visual_attention="full")
    x = torch.randn(2, 10, 64, requires_grad=True)
    module(x, n_visual=4).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad[:, :4].abs().sum() > 0


def readme_example() -> str:
    """The python block of docs/variants.md's mmca section: the test runs exactly what users read."""
    page = (Path(__file__).parents[2] / "docs" / "variants.md").read_text()
    section = page.split("## mmca: multi-modal causal attention", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_runs_with_the_right_shapes():
    scope = {}
    exec(readme_example(), scope)
    assert scope["visual_out"].shape == (32, 10, 512)
    assert scope["text_out"].shape == (32, 7, 512)


def test_simple_mmca_is_the_registered_module_on_the_concatenation():
    attn = av.SimpleMMCA(dim=64, heads=8, kv_heads=2, visual_attention="full").double()
    v, t = x_of(3, 5), x_of(3, 2)
    visual_out, text_out = attn(v, t)
    full = reference(attn.attn, torch.cat([v, t], dim=1), 5)
    assert_close(visual_out, full[:, :5])
    assert_close(text_out, full[:, 5:])


def test_seed_import_path_runs_the_seed_example():
    """The seed README's literal example; `mmca_mgqa` is installed by `pip install -e .`."""
    seed = pytest.importorskip("mmca_mgqa.attention", reason="mapped at install: pip install -e .")
    dim, head, seq_len, batch_size = 512, 8, 10, 32
    attn = seed.SimpleMMCA(dim=dim, heads=head)
    v = torch.randn(batch_size, seq_len, dim)
    t = torch.randn(batch_size, seq_len, dim)
    tokens = attn(v, t)
    assert [o.shape for o in tokens] == [(batch_size, seq_len, dim)] * 2  # the seed returned [0] of each


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_runs_on_device(device, dtype):
    tol = dict(atol=3e-2, rtol=3e-2) if dtype == torch.bfloat16 else dict(atol=1e-5, rtol=1e-4)
    ref = make(av.AttnSpec(64, 8, 2)).to(device)
    fast = av.create("mmca", av.AttnSpec(64, 8, 2)).to(device, dtype)
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(2, 16, 64, device=device, dtype=torch.float64)
    assert_close(fast(x.to(dtype), n_visual=5).double(), reference(ref, x, 5), **tol)


def test_from_mha_uptrains_into_mmca():
    mha = make(av.AttnSpec(64, 8, bias=True), name="mha")
    mmca = av.from_mha(mha, 2, variant="mmca", visual_attention="full")
    assert isinstance(mmca, av.MultiModalCausalAttention) and mmca.visual_attention == "full"
    x = x_of(2, 10)
    assert_close(mmca(x), av.from_mha(mha, 2)(x))  # m = 0: the uptrained gqa
    assert_close(mmca(x, n_visual=3), reference(mmca, x, 3))
