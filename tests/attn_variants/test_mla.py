"""MLA: naive vs absorbed vs SDPA forms, DeepSeek's official formulas, cache, decode, causality."""

import math

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.testing import assert_close

import attn_variants as av

SHAPES = [  # (b, n, d, h, options): several shapes, odd ones included
    (2, 16, 64, 4, {}),
    (1, 1, 32, 2, {}),
    (3, 7, 48, 3, dict(kv_lora_rank=20, qk_rope_head_dim=6, v_head_dim=10)),
    (2, 13, 64, 8, dict(q_lora_rank=24, qk_nope_head_dim=0)),
    (1, 9, 40, 5, dict(q_lora_rank=12, kv_lora_rank=7, qk_nope_head_dim=3, qk_rope_head_dim=2, v_head_dim=5)),
]
FORMS = [("sdpa", "never"), ("sdpa", "always"), ("eager", "never"), ("eager", "always")]


def make(spec, dtype=torch.float64, **opts):
    return av.create("mla", spec, **opts).to(dtype)


def official_forward(m, x, start=0, k_cache=None, v_cache=None):
    """DeepSeek-V3 inference/model.py MLA (attn_impl='naive'), re-derived from its formulas:
    complex RoPE from precompute_freqs_cis, einsum scores with softmax_scale, additive mask."""
    t, h = m.dims, m.spec.n_heads
    b, n, _ = x.shape
    q = m.wq(x) if t.q_lora_rank == 0 else m.wq_b(m.q_norm(m.wq_a(x)))
    q = q.view(b, n, h, t.qk_head_dim)
    q_nope, q_pe = torch.split(q, [t.qk_nope_head_dim, t.qk_rope_head_dim], dim=-1)
    r = t.qk_rope_head_dim
    freqs = 1.0 / (t.rope_theta ** (torch.arange(0, r, 2, dtype=torch.float64) / r))
    freqs_cis = torch.polar(
        torch.ones(n, r // 2, dtype=torch.float64), torch.outer(torch.arange(start, start + n), freqs)
    )

    def rope(z):  # z (b, n, heads, r)
        zc = torch.view_as_complex(z.contiguous().reshape(*z.shape[:-1], -1, 2))  # official: z.float()
        return torch.view_as_real(zc * freqs_cis.view(1, n, 1, -1)).flatten(3)

    q_pe = rope(q_pe)
    kv, k_pe = torch.split(m.wkv_a(x), [t.kv_lora_rank, r], dim=-1)
    k_pe = rope(k_pe.unsqueeze(2))
    kv = m.wkv_b(m.kv_norm(kv)).view(b, n, h, t.qk_nope_head_dim + t.v_head_dim)
    k_nope, v = torch.split(kv, [t.qk_nope_head_dim, t.v_head_dim], dim=-1)
    k = torch.cat([k_nope, k_pe.expand(-1, -1, h, -1)], dim=-1)
    k = k if k_cache is None else torch.cat([k_cache, k], dim=1)
    v = v if v_cache is None else torch.cat([v_cache, v], dim=1)
    scores = torch.einsum("bshd,bthd->bsht", torch.cat([q_nope, q_pe], -1), k) * t.qk_head_dim**-0.5
    if m.spec.causal:
        s = k.shape[1]
        mask = torch.full((n, s), float("-inf"), dtype=x.dtype).triu_(s - n + 1)
        scores = scores + mask.unsqueeze(1)
    out = torch.einsum("bsht,bthd->bshd", scores.softmax(dim=-1), v)
    return m.wo(out.flatten(2)), k, v


@pytest.mark.parametrize("b, n, d, h, opts", SHAPES)
@pytest.mark.parametrize("causal", [True, False])
def test_forms_and_backends_agree_float64(b, n, d, h, opts, causal):
    spec = av.AttnSpec(d, h, causal=causal)
    ref = make(spec, backend="eager", absorb="never", **opts)
    x = torch.randn(b, n, d, dtype=torch.float64)
    expected = ref(x)
    for backend, absorb in FORMS:
        m = make(spec, backend=backend, absorb=absorb, **opts)
        m.load_state_dict(ref.state_dict())
        assert_close(m(x), expected, msg=lambda s, f=(backend, absorb): f"{f}: {s}")


@pytest.mark.parametrize("b, n, d, h, opts", SHAPES)
def test_matches_official_formulas(b, n, d, h, opts):
    """Our real-arithmetic RoPE and both forms equal DeepSeek's complex-number, einsum MLA."""
    m = make(av.AttnSpec(d, h), **opts)
    x = torch.randn(b, n, d, dtype=torch.float64)
    with torch.no_grad():
        expected, _, _ = official_forward(m, x)
        assert_close(m(x), expected)
        assert_close(make_like(m, absorb="always")(x), expected)


def make_like(m, **opts):
    twin = make(m.spec, **{**dict(m.dims.__dict__), "absorb": m.absorb, **opts})
    twin.load_state_dict(m.state_dict())
    return twin


def test_official_state_dict_loads_strict():
    """Official names and shapes (DeepSeek-V3 MLA), both query layouts, no conversion."""
    d, h, nope, rope, v, kv_lora, q_lora = 64, 4, 16, 8, 16, 64, 32
    official = {
        "wq_a.weight": torch.randn(q_lora, d),
        "q_norm.weight": torch.rand(q_lora) + 0.5,
        "wq_b.weight": torch.randn(h * (nope + rope), q_lora),
        "wkv_a.weight": torch.randn(kv_lora + rope, d),
        "kv_norm.weight": torch.rand(kv_lora) + 0.5,
        "wkv_b.weight": torch.randn(h * (nope + v), kv_lora),
        "wo.weight": torch.randn(d, h * v),
    }
    m = av.create("mla", av.AttnSpec(d, h), q_lora_rank=q_lora)
    m.load_state_dict(official, strict=True)
    assert m.kv_norm.eps == 1e-6 and m.q_norm.eps == 1e-6
    no_q_lora = {k: t for k, t in official.items() if not k.startswith(("wq_a", "q_norm", "wq_b"))}
    no_q_lora["wq.weight"] = torch.randn(h * (nope + rope), d)
    av.create("mla", av.AttnSpec(d, h)).load_state_dict(no_q_lora, strict=True)
    assert not any(p.endswith("bias") for p in m.state_dict())


@pytest.mark.parametrize("absorb", ["decode", "always", "never"])
@pytest.mark.parametrize("b, n, d, h, opts", SHAPES[:3] + SHAPES[4:])
def test_prefill_then_decode_equals_full_forward(absorb, b, n, d, h, opts):
    m = make(av.AttnSpec(d, h), absorb=absorb, **opts).eval()
    x = torch.randn(b, n + 3, d, dtype=torch.float64)
    cache = av.KVCache()
    with torch.no_grad():
        full = m(x)
        parts = [m(x[:, :n], cache=cache)] + [m(x[:, i : i + 1], cache=cache) for i in range(n, n + 3)]
    assert_close(torch.cat(parts, dim=1), full)
    t = m.dims
    assert cache.fields == {"kv": (b, n + 3, t.kv_lora_rank), "pe": (b, n + 3, t.qk_rope_head_dim)}
    assert cache.nbytes == b * (n + 3) * (t.kv_lora_rank + t.qk_rope_head_dim) * 8


def test_chunked_prefill_and_official_cache_agree():
    m = make(av.AttnSpec(48, 3)).eval()
    x = torch.randn(2, 11, 48, dtype=torch.float64)
    cache = av.KVCache()
    with torch.no_grad():
        first, k, v = official_forward(m, x[:, :6])
        second, _, _ = official_forward(m, x[:, 6:], start=6, k_cache=k, v_cache=v)
        ours = torch.cat([m(x[:, :6], cache=cache), m(x[:, 6:], cache=cache)], dim=1)
    assert_close(ours, torch.cat([first, second], dim=1))
    assert_close(ours, m(x))


@pytest.mark.parametrize("backend, absorb", FORMS)
@pytest.mark.parametrize("t", [0, 4, 9])
def test_causal_no_leak(backend, absorb, t):
    m = make(av.AttnSpec(64, 4), backend=backend, absorb=absorb)
    x = torch.randn(2, 11, 64, dtype=torch.float64)
    y = x.clone()
    y[:, t + 1 :] += torch.randn_like(y[:, t + 1 :])
    assert_close(m(x)[:, : t + 1], m(y)[:, : t + 1])


def test_cache_bytes_and_registry():
    entry = av.info("mla")
    spec = av.AttnSpec(512, 8, 2)
    assert not entry.uses_kv_heads and av.info("gqa").uses_kv_heads
    assert entry.resolve(spec).n_kv_heads == 8  # g fixed: the sweep runs mla once per (n, h)
    assert entry.cache_elements(spec) == 4 * 64 + 32  # kv_lora + rope, whatever g was asked for
    assert entry.kv_heads_equiv(spec) == pytest.approx(2.25)  # DeepSeek-V2's "2.25 groups"
    assert entry.kv_cache_bytes(spec, {"kv_lora_rank": 100}, 3, 10, torch.bfloat16) == 3 * 10 * 132 * 2
    assert av.info("gqa").kv_cache_bytes(spec, {}, 3, 10, torch.float32) == 2 * 3 * 2 * 10 * 64 * 4
    m = av.create("mla", spec).eval()
    cache = av.KVCache()
    with torch.no_grad():
        m(torch.randn(3, 10, 512), cache=cache)
    assert cache.nbytes == entry.kv_cache_bytes(spec, {}, 3, 10, torch.float32)


@pytest.mark.parametrize(
    "opts, match",
    [
        (dict(qk_rope_head_dim=7), "qk_rope_head_dim=7 must be even"),
        (dict(kv_lora_rank=0), "kv_lora_rank=0"),
        (dict(q_lora_rank=-1), "q_lora_rank=-1"),
        (dict(absorb="sometimes"), "absorb='sometimes'"),
        (dict(rope_theta=0.0), "rope_theta=0.0"),
        (dict(backend="nope"), "unknown backend"),
    ],
)
def test_bad_options_raise(opts, match):
    with pytest.raises(ValueError, match=match):
        av.create("mla", av.AttnSpec(64, 4), **opts)


def test_bias_and_odd_default_rope_raise():
    with pytest.raises(ValueError, match="bias=True"):
        av.create("mla", av.AttnSpec(64, 4, bias=True))
    with pytest.raises(ValueError, match="qk_rope_head_dim=3 must be even"):
        av.create("mla", av.AttnSpec(24, 4))  # e = 6: the default rope = e/2 = 3 is odd


@pytest.mark.parametrize("absorb", ["never", "always"])
def test_runs_on_meta_and_fake_tensors(absorb):
    with torch.device("meta"):
        m = av.create("mla", av.AttnSpec(64, 4), absorb=absorb)
        assert m(torch.randn(2, 5, 64)).shape == (2, 5, 64)
    with FakeTensorMode():
        m = av.create("mla", av.AttnSpec(64, 4), absorb=absorb)
        cache = av.KVCache()
        m(torch.randn(2, 5, 64), cache=cache)
        assert m(torch.randn(2, 1, 64), cache=cache).shape == (2, 1, 64)


def test_rope_is_relative():
    """Scores of RoPE'd pairs depend only on the position difference (RoPE's defining property)."""
    q, k = torch.randn(1, 1, 8, dtype=torch.float64), torch.randn(1, 1, 8, dtype=torch.float64)

    def score(p_q, p_k):
        rq = av.mla.apply_rotary_emb(q, torch.tensor([p_q]), 1e4)
        rk = av.mla.apply_rotary_emb(k, torch.tensor([p_k]), 1e4)
        return (rq * rk).sum()

    assert_close(score(5, 2), score(103, 100))
    assert not math.isclose(score(5, 2).item(), score(5, 4).item())
    assert_close(av.mla.apply_rotary_emb(q, torch.tensor([0]), 1e4), q)


def test_compiles_without_graph_breaks():
    """torch.compile(fullgraph=True) captures an absorbed decode step (cache read, RoPE at the
    cached position, latent attention) whole."""
    m = av.create("mla", av.AttnSpec(32, 2)).eval()
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
    x, step, cache = torch.randn(1, 5, 32), torch.randn(1, 1, 32), av.KVCache()
    with torch.no_grad():
        m(x, cache=cache)
        assert_close(compiled(step, cache=cache)[:, -1], m(torch.cat([x, step], 1))[:, -1])


def test_forms_agree_on_device(device):
    """float32 on CPU, or CUDA where there is one (skipped without): naive sdpa == absorbed."""
    naive = av.create("mla", av.AttnSpec(128, 4), absorb="never").to(device)
    absorbed = av.create("mla", av.AttnSpec(128, 4), absorb="always").to(device)
    absorbed.load_state_dict(naive.state_dict())
    x = torch.randn(2, 33, 128, device=device)
    with torch.no_grad():
        assert_close(absorbed(x), naive(x), atol=1e-4, rtol=1e-3)
