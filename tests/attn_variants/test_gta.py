"""GTA: the official module's math with the same weights, backends, cache, decode, causality."""

import math

import pytest
import torch
from torch import nn
from torch.testing import assert_close

import attn_variants as av

SHAPES = [  # (b, n, d, h, g, options): several shapes, odd ones included
    (2, 16, 64, 4, 2, {}),
    (1, 1, 32, 2, 1, {}),
    (3, 7, 48, 6, 3, dict(rope_dim=2)),
    (2, 13, 64, 8, 8, dict(rope_dim=8, rope_theta=500.0)),  # r = e: the key is all rope
    (1, 9, 40, 5, 1, dict(rope_dim=4)),
]


class OfficialGTA(nn.Module):
    """Dao-AILab/grouped-latent-attention `LlamaFlashGTA.forward`, re-derived for a test: the
    same parameters, HF's LlamaRotaryEmbedding/rotate_half over rope_dim, the rope key repeated
    to every head, K = [tied[:e-r]; rope key], V = [tied[:e-r]; tied[e-r:]], repeat_kv on
    dim 2, and flash_attn_func written out (softmax scale 1/sqrt(e), causal). The official
    computes cos/sin in float32; here in the input dtype (float64), so the check is exact."""

    def __init__(self, d, h, g, r, theta, bias):
        super().__init__()
        self.h, self.g, self.e, self.r = h, g, d // h, r
        self.q_proj = nn.Linear(d, h * self.e, bias=bias)
        self.kv_proj = nn.Linear(d, g * self.e, bias=bias)
        self.o_proj = nn.Linear(h * self.e, d, bias=bias)
        self.W_rope_k = nn.Linear(d, r)
        inv_freq = 1.0 / (theta ** (torch.arange(0, r, 2, dtype=torch.int64).double() / r))
        self.register_buffer("inv_freq", inv_freq, persistent=False)  # as LlamaRotaryEmbedding

    def rope(self, z, position_ids):  # z (b, l, heads, r); HF apply_rotary_pos_emb, unsqueeze_dim=2
        freqs = position_ids[:, None].double() * self.inv_freq  # (l, r/2)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos()[None, :, None], emb.sin()[None, :, None]
        half = z.shape[-1] // 2
        rotated = torch.cat((-z[..., half:], z[..., :half]), dim=-1)
        return z * cos + rotated * sin

    def forward(self, x, causal=True):
        bsz, q_len, _ = x.shape
        pos = torch.arange(q_len)
        q = self.q_proj(x).view(bsz, q_len, self.h, self.e)
        kv = self.kv_proj(x).view(bsz, q_len, self.g, self.e)
        query, query_rope = torch.split(q, [self.e - self.r, self.r], dim=-1)
        key_rope = self.W_rope_k(x).view(bsz, q_len, 1, self.r).expand(bsz, q_len, self.h, self.r)
        query_rope, key_rope = self.rope(query_rope, pos), self.rope(key_rope, pos)
        q = torch.cat([query, query_rope], dim=-1)
        tied, value = torch.split(kv, [self.e - self.r, self.r], dim=-1)
        tied = tied.repeat_interleave(self.h // self.g, dim=2)  # repeat_kv(dim=2)
        value = value.repeat_interleave(self.h // self.g, dim=2)
        k, v = torch.cat([tied, key_rope], dim=-1), torch.cat([tied, value], dim=-1)  # (b, l, h, e)
        scores = torch.einsum("blhe,bshe->bhls", q, k) / math.sqrt(q.shape[-1])
        if causal:
            scores = scores.masked_fill(torch.ones(q_len, q_len).triu(1).bool(), float("-inf"))
        out = torch.einsum("bhls,bshe->blhe", scores.softmax(-1), v)
        return self.o_proj(out.reshape(bsz, q_len, -1))


def official_twin(m):
    spec = m.spec
    twin = OfficialGTA(spec.dim, spec.n_heads, spec.n_kv_heads, m.rope_dim, m.rope_theta, spec.bias).double()
    twin.load_state_dict(m.state_dict(), strict=True)  # the same names and shapes, both ways
    return twin


def make(spec, dtype=torch.float64, **opts):
    return av.create("gta", spec, **opts).to(dtype)


@pytest.mark.parametrize("b, n, d, h, g, opts", SHAPES)
@pytest.mark.parametrize("causal, bias", [(True, False), (False, True)])
def test_matches_the_official_module_float64(b, n, d, h, g, opts, causal, bias):
    spec = av.AttnSpec(d, h, g, causal=causal, bias=bias)
    x = torch.randn(b, n, d, dtype=torch.float64)
    for backend in ("sdpa", "eager"):
        m = make(spec, backend=backend, **opts)
        with torch.no_grad():
            assert_close(m(x), official_twin(m)(x, causal=causal), msg=lambda s, k=backend: f"{k}: {s}")


def test_official_state_dict_loads_strict():
    """The official parameter names and shapes (q_proj, kv_proj, W_rope_k with bias, o_proj)."""
    d, h, g, r = 64, 8, 2, 4
    official = OfficialGTA(d, h, g, r, 1e4, bias=False).state_dict()
    assert set(official) == {
        "q_proj.weight",
        "kv_proj.weight",
        "o_proj.weight",
        "W_rope_k.weight",
        "W_rope_k.bias",
    }
    m = av.create("gta", av.AttnSpec(d, h, g))
    m.load_state_dict(official, strict=True)
    assert m.rope_dim == 4  # default e/2
    assert dict(m.state_dict()).keys() == official.keys()


@pytest.mark.parametrize("backend", ["sdpa", "eager"])
@pytest.mark.parametrize("b, n, d, h, g, opts", SHAPES)
def test_prefill_then_decode_equals_full_forward(backend, b, n, d, h, g, opts):
    m = make(av.AttnSpec(d, h, g), backend=backend, **opts).eval()
    x = torch.randn(b, n + 3, d, dtype=torch.float64)
    cache = av.KVCache()
    with torch.no_grad():
        full = m(x)
        parts = [m(x[:, :n], cache=cache)] + [m(x[:, i : i + 1], cache=cache) for i in range(n, n + 3)]
    assert_close(torch.cat(parts, dim=1), full)
    e, r = d // h, m.rope_dim
    assert cache.fields == {"kv": (b, g, n + 3, e), "pe": (b, 1, n + 3, r)}  # ONE rope key per token
    assert cache.nbytes == b * (n + 3) * (g * e + r) * 8
    assert cache.nbytes == av.info("gta").kv_cache_bytes(m.spec, opts, b, n + 3, torch.float64)


def test_chunked_prefill_equals_one_forward():
    m = make(av.AttnSpec(48, 6, 2)).eval()
    x = torch.randn(2, 11, 48, dtype=torch.float64)
    cache = av.KVCache()
    with torch.no_grad():
        assert_close(torch.cat([m(x[:, :4], cache=cache), m(x[:, 4:], cache=cache)], dim=1), m(x))


@pytest.mark.parametrize("backend", ["sdpa", "eager"])
@pytest.mark.parametrize("t", [0, 4, 9])
def test_causal_no_leak(backend, t):
    m = make(av.AttnSpec(64, 4, 2), backend=backend)
    x = torch.randn(2, 11, 64, dtype=torch.float64)
    y = x.clone()
    y[:, t + 1 :] += torch.randn_like(y[:, t + 1 :])
    assert_close(m(x)[:, : t + 1], m(y)[:, : t + 1])
    assert not torch.allclose(m(x)[:, t + 1 :], m(y)[:, t + 1 :])


def test_gradients_reach_every_parameter():
    m = make(av.AttnSpec(32, 4, 2))
    m(torch.randn(2, 5, 32, dtype=torch.float64)).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())


def test_tied_value_is_the_whole_state_and_key_its_head_plus_rope():
    """The weights of a softmax sum to one: when every token has the same tied state, each query
    head returns its KV head's whole state (V is all e numbers), whatever the scores."""
    m = make(av.AttnSpec(32, 4, 2)).eval()
    with torch.no_grad():
        m.kv_proj.weight.zero_()
        m.kv_proj.bias = nn.Parameter(torch.arange(16, dtype=torch.float64))  # every token's tied state
        q = torch.randn(1, 4, 3, 8, dtype=torch.float64)
        tied = m.kv_proj(torch.zeros(1, 3, 32, dtype=torch.float64)).view(1, 3, 2, 8).transpose(1, 2)
        out = m.attend(q, tied, torch.randn(1, 1, 3, 4, dtype=torch.float64))
    assert_close(out, tied[:, [0, 0, 1, 1]])  # query head i reads tied head i // (h/g)


@pytest.mark.parametrize(
    "opts, match",
    [
        (dict(rope_dim=3), "rope_dim=3 must be a positive even integer"),
        (dict(rope_dim=0), "rope_dim=0"),
        (dict(rope_dim=10), "rope_dim=10 is larger than the head dim e=8"),
        (dict(rope_theta=0.0), "rope_theta=0.0"),
        (dict(backend="nope"), "unknown backend"),
        (dict(flavour=1), r"unknown option\(s\) \['flavour'\]"),
    ],
)
def test_bad_options_raise(opts, match):
    with pytest.raises(ValueError, match=match):
        av.create("gta", av.AttnSpec(32, 4, 2), **opts)


def test_registry_entry():
    entry = av.info("gta")
    assert entry.paper == "https://arxiv.org/abs/2505.21487" and entry.uses_kv_heads
    assert entry.modes == ("fwd", "fwd_bwd", "decode")
    assert dict(entry.options) == {"backend": "sdpa", "rope_dim": None, "rope_theta": 10000.0}
    spec = av.AttnSpec(512, 8, 2)  # e = 64
    assert entry.cache_elements(spec) == 2 * 64 + 32
    assert entry.kv_heads_equiv(spec) == pytest.approx(1.25)


def test_forward_on_device(device):
    """float32 on CPU, or CUDA where there is one (skipped without): sdpa == eager."""
    fast = av.create("gta", av.AttnSpec(128, 8, 2)).to(device)
    ref = av.create("gta", av.AttnSpec(128, 8, 2), backend="eager").to(device)
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(2, 33, 128, device=device)
    with torch.no_grad():
        assert_close(fast(x), ref(x), atol=1e-4, rtol=1e-3)
