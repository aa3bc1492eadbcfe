"""GLA: the official module's math with the same weights, naive vs absorbed forms, backends,
cache, decode, causality."""

import math

import pytest
import torch
from torch import nn
from torch.testing import assert_close

import attn_variants as av

SHAPES = [  # (b, n, d, h, options): several shapes, odd ones included
    (2, 16, 64, 4, {}),
    (1, 1, 32, 2, {}),
    (3, 7, 48, 6, dict(rope_dim=2, kv_proj_dim=10, q_proj_dim=12)),
    (2, 13, 64, 8, dict(n_latent_heads=4, rope_theta=500.0)),
    (1, 9, 40, 5, dict(n_latent_heads=1, rope_dim=8)),  # L = 1: MLA-like, one latent; r = e
    (2, 5, 36, 6, dict(n_latent_heads=3, kv_proj_dim=21, rope_dim=2)),  # odd latent widths (7 each), e = 6
]
FORMS = [("sdpa", "never"), ("sdpa", "always"), ("eager", "never"), ("eager", "always")]


class LlamaRMSNorm(nn.Module):
    """The official RMSNorm (float32 there; the input dtype here, so float64 checks are exact)."""

    def __init__(self, size, eps=1e-6):
        super().__init__()
        self.weight, self.variance_epsilon = nn.Parameter(torch.ones(size)), eps

    def forward(self, z):
        return self.weight * z * torch.rsqrt(z.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)


class OfficialGLA(nn.Module):
    """Dao-AILab/grouped-latent-attention `LlamaFlashGLA.forward` (no cache), re-derived for a
    test and generalised from its 2 latent heads to L: zero-filled key/value states, each latent
    slice normalised and up-projected to (h/L) heads of [key e; value e], RoPE (HF convention,
    frequencies over r) on the last r query dims and the shared rope key, flash_attn_func
    written out (scale 1/sqrt(e + r), causal), the first e output dims per head to o_proj."""

    def __init__(self, d, h, r, theta, bias, L=2, kv=None, q_lat=None):
        super().__init__()
        self.h, self.e, self.r, self.L = h, d // h, r, L
        e = self.e
        self.kv_proj_dim, self.q_proj_dim = kv or 4 * e, q_lat or 8 * e
        self.o_proj = nn.Linear(h * e, d, bias=bias)
        self.q_norm = LlamaRMSNorm(self.q_proj_dim)
        self.W_dQ = nn.Linear(d, self.q_proj_dim)
        self.W_uQ_rope = nn.Linear(self.q_proj_dim, h * (e + r))
        self.W_dKV = nn.Linear(d, self.kv_proj_dim + r)
        for i in range(1, L + 1):
            setattr(self, f"kv_norm_{i}", LlamaRMSNorm(self.kv_proj_dim // L))
            setattr(self, f"W_ukv_{i}", nn.Linear(self.kv_proj_dim // L, h // L * 2 * e))
        inv_freq = 1.0 / (theta ** (torch.arange(0, r, 2, dtype=torch.int64).double() / r))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def rope(self, z, pos):  # z (b, l, heads, r)
        freqs = pos[:, None].double() * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        half = z.shape[-1] // 2
        return (
            z * emb.cos()[None, :, None]
            + torch.cat((-z[..., half:], z[..., :half]), -1) * emb.sin()[None, :, None]
        )

    def forward(self, x, causal=True):
        bsz, q_len, _ = x.shape
        h, e, r, L = self.h, self.e, self.r, self.L
        q = self.W_uQ_rope(self.q_norm(self.W_dQ(x))).view(bsz, q_len, h, e + r)
        compressed_kv, key_rope = torch.split(self.W_dKV(x), [self.kv_proj_dim, r], dim=-1)
        key_rope = key_rope.view(bsz, q_len, 1, r)
        key_states, value_states = torch.zeros_like(q), torch.zeros_like(q)
        width, per = self.kv_proj_dim // L, h // L
        for i in range(L):
            part = getattr(self, f"kv_norm_{i + 1}")(compressed_kv[..., i * width : (i + 1) * width])
            up = getattr(self, f"W_ukv_{i + 1}")(part).view(bsz, q_len, per, 2 * e)
            key_states[:, :, i * per : (i + 1) * per, :e] = up[..., :e]
            value_states[:, :, i * per : (i + 1) * per, :e] = up[..., e:]
        pos = torch.arange(q_len)
        q = torch.cat([q[..., :e], self.rope(q[..., e:], pos)], dim=-1)
        key_states[..., e:] = self.rope(key_rope, pos)
        scores = torch.einsum("blhe,bshe->bhls", q, key_states) / math.sqrt(e + r)
        if causal:
            scores = scores.masked_fill(torch.ones(q_len, q_len).triu(1).bool(), float("-inf"))
        out = torch.einsum("bhls,bshe->blhe", scores.softmax(-1), value_states)[..., :e]
        return self.o_proj(out.reshape(bsz, q_len, -1))


def official_twin(m):
    t, spec = m.dims, m.spec
    twin = OfficialGLA(
        spec.dim,
        spec.n_heads,
        t.rope_dim,
        m.rope_theta,
        spec.bias,
        t.n_latent_heads,
        t.kv_proj_dim,
        t.q_proj_dim,
    ).double()
    twin.load_state_dict(m.state_dict(), strict=True)  # the same names and shapes, both ways
    return twin


def make(spec, dtype=torch.float64, **opts):
    return av.create("gla", spec, **opts).to(dtype)


def make_like(m, **opts):
    twin = make(m.spec, **{**m.dims.__dict__, "rope_theta": m.rope_theta, "absorb": m.absorb, **opts})
    twin.load_state_dict(m.state_dict())
    return twin


@pytest.mark.parametrize("b, n, d, h, opts", SHAPES)
@pytest.mark.parametrize("causal, bias", [(True, False), (False, True)])
def test_every_form_matches_the_official_module_float64(b, n, d, h, opts, causal, bias):
    ref = make(av.AttnSpec(d, h, causal=causal, bias=bias), **opts)
    x = torch.randn(b, n, d, dtype=torch.float64)
    with torch.no_grad():
        expected = official_twin(ref)(x, causal=causal)
        for backend, absorb in FORMS:
            out = make_like(ref, backend=backend, absorb=absorb)(x)
            assert_close(out, expected, msg=lambda s, f=(backend, absorb): f"{f}: {s}")


def test_official_state_dict_loads_strict():
    """The official names and shapes at the official sizes (L = 2, kv = 4e, q_lat = 8e, r = e/2)."""
    d, h = 64, 4
    official = OfficialGLA(d, h, 8, 1e4, bias=False).state_dict()
    shapes = {k: tuple(v.shape) for k, v in official.items()}
    assert shapes["W_dKV.weight"] == (4 * 16 + 8, d) and shapes["W_ukv_1.weight"] == (h * 16, 2 * 16)
    assert shapes["W_uQ_rope.weight"] == (h * (16 + 8), 8 * 16) and shapes["kv_norm_2.weight"] == (32,)
    m = av.create("gla", av.AttnSpec(d, h))
    m.load_state_dict(official, strict=True)
    assert m.state_dict().keys() == official.keys()
    assert m.kv_norm_1.eps == m.kv_norm_2.eps == m.q_norm.eps == 1e-6


@pytest.mark.parametrize("absorb", ["decode", "always", "never"])
@pytest.mark.parametrize("backend", ["sdpa", "eager"])
@pytest.mark.parametrize("b, n, d, h, opts", SHAPES)
def test_prefill_then_decode_equals_full_forward(absorb, backend, b, n, d, h, opts):
    m = make(av.AttnSpec(d, h), absorb=absorb, backend=backend, **opts).eval()
    x = torch.randn(b, n + 3, d, dtype=torch.float64)
    cache = av.KVCache()
    with torch.no_grad():
        full = m(x)
        parts = [m(x[:, :n], cache=cache)] + [m(x[:, i : i + 1], cache=cache) for i in range(n, n + 3)]
    assert_close(torch.cat(parts, dim=1), full)
    t = m.dims
    assert cache.fields == {"kv": (b, t.n_latent_heads, n + 3, t.latent_dim), "pe": (b, 1, n + 3, t.rope_dim)}
    assert cache.nbytes == b * (n + 3) * (t.kv_proj_dim + t.rope_dim) * 8
    assert cache.nbytes == av.info("gla").kv_cache_bytes(m.spec, opts, b, n + 3, torch.float64)


def test_default_cache_is_4e_plus_half_e():
    m = make(av.AttnSpec(64, 4)).eval()  # e = 16: 4e + e/2 = 72 numbers a token
    cache = av.KVCache()
    with torch.no_grad():
        m(torch.randn(2, 5, 64, dtype=torch.float64), cache=cache)
    assert cache.nbytes == 2 * 5 * 72 * 8 == av.info("gla").kv_cache_bytes(m.spec, {}, 2, 5, torch.float64)


@pytest.mark.parametrize("backend, absorb", FORMS)
@pytest.mark.parametrize("t", [0, 4, 9])
def test_causal_no_leak(backend, absorb, t):
    m = make(av.AttnSpec(64, 4), backend=backend, absorb=absorb)
    x = torch.randn(2, 11, 64, dtype=torch.float64)
    y = x.clone()
    y[:, t + 1 :] += torch.randn_like(y[:, t + 1 :])
    assert_close(m(x)[:, : t + 1], m(y)[:, : t + 1])
    assert not torch.allclose(m(x)[:, t + 1 :], m(y)[:, t + 1 :])


def test_each_half_of_the_heads_reads_its_own_latent():
    """Zeroing latent 2's up-projection changes only the heads [h/2, h) (GLA-2's split)."""
    m = make(av.AttnSpec(32, 4)).eval()
    q, q_pe = torch.randn(1, 4, 3, 8, dtype=torch.float64), torch.randn(1, 4, 3, 4, dtype=torch.float64)
    c, k_pe = torch.randn(1, 2, 3, 16, dtype=torch.float64), torch.randn(1, 1, 3, 4, dtype=torch.float64)
    with torch.no_grad():
        before = m.attend_naive(q, q_pe, c, k_pe)
        c2 = c.clone()
        c2[:, 1] += 1.0
        after = m.attend_naive(q, q_pe, c2, k_pe)
    assert_close(after[:, :2], before[:, :2])
    assert not torch.allclose(after[:, 2:], before[:, 2:])


def test_gradients_reach_every_parameter():
    for absorb in ("never", "always"):
        m = make(av.AttnSpec(32, 4), absorb=absorb)
        m(torch.randn(2, 5, 32, dtype=torch.float64)).square().sum().backward()
        # the absorbed form drops W_ukv's key bias exactly (softmax ignores a per-row constant)
        skip = {"W_ukv_1.bias", "W_ukv_2.bias"} if absorb == "always" else set()
        for name, p in m.named_parameters():
            assert name in skip or (p.grad is not None and p.grad.abs().sum() > 0), (absorb, name)


@pytest.mark.parametrize(
    "opts, match",
    [
        (dict(rope_dim=3), "rope_dim=3 must be a positive even integer"),
        (dict(n_latent_heads=3), "n_heads=4 is not divisible by n_latent_heads=3"),
        (dict(kv_proj_dim=9), "kv_proj_dim=9 is not divisible by n_latent_heads=2"),
        (dict(q_proj_dim=0), "q_proj_dim=0 must be a positive integer"),
        (dict(absorb="sometimes"), "absorb='sometimes'"),
        (dict(rope_theta=-1.0), "rope_theta=-1.0"),
        (dict(backend="nope"), "unknown backend"),
    ],
)
def test_bad_options_raise(opts, match):
    with pytest.raises(ValueError, match=match):
        av.create("gla", av.AttnSpec(32, 4), **opts)


def test_registry_entry():
    entry = av.info("gla")
    assert entry.paper == "https://arxiv.org/abs/2505.21487" and not entry.uses_kv_heads
    assert entry.modes == ("fwd", "fwd_bwd", "decode")
    assert dict(entry.options) == {
        "backend": "sdpa", "n_latent_heads": 2, "kv_proj_dim": None, "q_proj_dim": None, "rope_dim": None,
        "rope_theta": 10000.0, "absorb": "decode",
    }  # fmt: skip
    spec = av.AttnSpec(512, 8, 2)  # e = 64
    assert entry.resolve(spec).n_kv_heads == 8  # g means nothing to gla: the sweep runs it once per (n, h)
    assert entry.cache_elements(spec) == 4 * 64 + 32
    assert entry.kv_heads_equiv(spec) == pytest.approx(2.25)


def test_forms_agree_on_device(device):
    """float32 on CPU, or CUDA where there is one (skipped without): naive sdpa == absorbed."""
    naive = av.create("gla", av.AttnSpec(128, 4), absorb="never").to(device)
    absorbed = av.create("gla", av.AttnSpec(128, 4), absorb="always").to(device)
    absorbed.load_state_dict(naive.state_dict())
    x = torch.randn(2, 33, 128, device=device)
    with torch.no_grad():
        assert_close(absorbed(x), naive(x), atol=1e-4, rtol=1e-3)
