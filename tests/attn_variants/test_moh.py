"""MoH: fast path vs the loop over heads, the official routers' formulas, aux loss, decode, uptraining."""

import pytest
import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.testing import assert_close

import attn_variants as av
from attn_variants.moh import official_state_dict

CASES = [  # (b, n, d, h, g, shared_heads, routed_heads): odd shapes and every router layout
    (2, 16, 64, 8, 2, 4, 2),
    (1, 1, 32, 4, 4, 2, 1),
    (3, 7, 48, 6, 3, 1, 3),  # one shared head: g_s = 1
    (2, 9, 40, 5, 5, 0, 2),  # no shared heads: routed gates only
    (2, 5, 48, 3, 1, 3, 0),  # K = 0: every head shared, gated by softmax(wg_1)
]


def make(spec, dtype=torch.float64, **opts):
    return av.create("moh", spec, **opts).to(dtype)


@pytest.mark.parametrize("b, n, d, h, g, h_s, k", CASES)
@pytest.mark.parametrize("router", ["learned", "qnorm"])
@pytest.mark.parametrize("causal", [True, False])
def test_fast_path_matches_loop_over_heads(b, n, d, h, g, h_s, k, router, causal):
    m = make(av.AttnSpec(d, h, g, causal=causal), shared_heads=h_s, routed_heads=k, router=router)
    x = torch.randn(b, n, d, dtype=torch.float64)
    with torch.no_grad():
        assert_close(m(x), m.reference_forward(x))
    assert m.active_head_frac.item() == pytest.approx((h_s + k) / h)


def official_dit_forward(state, x, h, h_s, k):
    """SkyworkAI/MoH MoH-DiT/models.py MoHAttention.forward, re-derived from its formulas
    (fused qkv and proj, flattened tokens, one_hot top-K mask, einsum gating)."""
    B, N, C = x.shape
    e = C // h
    _x = x.reshape(B * N, C)
    gates = F.softmax(_x @ state["wg.weight"].T, dim=1)
    _, idx = torch.topk(gates, k=k, dim=1)
    mask = F.one_hot(idx, num_classes=gates.shape[1]).sum(dim=1)
    routed = gates * mask
    routed = routed / torch.clamp(routed.sum(1, keepdim=True), min=torch.finfo(routed.dtype).eps)
    routed = routed.reshape(B, N, -1) * k
    qkv = F.linear(x, state["qkv.weight"], state["qkv.bias"]).reshape(B, N, 3, h, e).permute(2, 0, 3, 1, 4)
    q, kk, v = qkv.unbind(0)
    o = F.scaled_dot_product_attention(q, kk, v).transpose(1, 2)  # (B, N, h, e)
    shared = F.softmax(_x @ state["wg_1.weight"].T, dim=1).reshape(B, N, -1) * h_s
    w0 = F.softmax(_x @ state["wg_0.weight"].T, dim=1).reshape(B, N, 2) * 2
    shared = torch.einsum("bn,bne->bne", w0[:, :, 0], shared)
    routed = torch.einsum("bn,bne->bne", w0[:, :, 1], routed)
    o = torch.einsum("bne,bned->bned", torch.cat([shared, routed], dim=2), o).reshape(B, N, C)
    return F.linear(o, state["proj.weight"], state["proj.bias"])


def test_official_dit_state_dict_loads_with_only_the_qkv_proj_rename():
    d, h, h_s, k = 48, 6, 2, 2
    official = {
        "qkv.weight": torch.randn(3 * d, d),
        "qkv.bias": torch.randn(3 * d),
        "proj.weight": torch.randn(d, d),
        "proj.bias": torch.randn(d),
        "wg.weight": torch.randn(h - h_s, d),
        "wg_0.weight": torch.randn(2, d),
        "wg_1.weight": torch.randn(h_s, d),
    }
    official = {name: t.double() for name, t in official.items()}
    m = make(av.AttnSpec(d, h, causal=False, bias=True), shared_heads=h_s, routed_heads=k)
    m.load_state_dict(official_state_dict(official), strict=True)
    x = torch.randn(2, 10, d, dtype=torch.float64)
    with torch.no_grad():
        assert_close(m(x), official_dit_forward(official, x, h, h_s, k))


def test_qnorm_router_is_the_llama3_formula():
    """MoH-LLaMA3: ||q_i|| of the routed heads / their std, softmax, top-K; binary gates."""
    d, h, h_s, k = 64, 8, 4, 2
    m = make(av.AttnSpec(d, h), shared_heads=h_s, routed_heads=k, router="qnorm")
    assert sorted(dict(m.named_parameters())) == [
        "k_proj.weight",
        "o_proj.weight",
        "q_proj.weight",
        "v_proj.weight",
    ]  # no router
    x = torch.randn(2, 7, d, dtype=torch.float64)
    q = m.q_proj(x).view(-1, h, d // h)  # official: query_states.view(-1, num_heads, head_dim)
    logits = torch.stack([torch.norm(q[:, i, :], p=2, dim=1) for i in range(h_s, h)], dim=1)
    gates = F.softmax(logits / logits.std(dim=1, keepdim=True), dim=1)
    mask = F.one_hot(torch.topk(gates, k=k, dim=1).indices, num_classes=h - h_s).sum(dim=1)
    expected = torch.cat([torch.ones(14, h_s, dtype=torch.float64), mask.double()], dim=-1).reshape(2, 7, h)
    m.train()
    got = m.gates(x, m.project(x)[0])
    assert_close(got, expected)
    assert m.aux_loss is None  # the qnorm router has no load-balance loss


def test_aux_loss_is_the_load_balance_loss_and_trains_the_router():
    d, h, h_s, k = 32, 4, 1, 2
    m = make(av.AttnSpec(d, h), shared_heads=h_s, routed_heads=k).train()
    x = torch.randn(3, 6, d, dtype=torch.float64)
    m(x).sum()
    probs = (x @ m.wg.weight.T).softmax(-1).reshape(-1, h - h_s)  # P_i over the 18 tokens
    mask = F.one_hot(probs.topk(k, dim=-1).indices, h - h_s).sum(1).double()  # f_i
    expected = (h - h_s) * (probs.mean(0) * mask.mean(0)).sum()
    assert_close(m.aux_loss, expected)
    m.aux_loss.backward()
    assert m.wg.weight.grad is not None and m.wg.weight.grad.abs().sum() > 0
    m.eval()
    with torch.no_grad():
        m(x)
    assert m.aux_loss is None  # only a training forward sets it


@pytest.mark.parametrize("router", ["learned", "qnorm"])
@pytest.mark.parametrize("b, n, d, h, g, h_s, k", CASES[:4])
def test_prefill_then_decode_equals_full_forward(router, b, n, d, h, g, h_s, k):
    m = make(av.AttnSpec(d, h, g), shared_heads=h_s, routed_heads=k, router=router).eval()
    x = torch.randn(b, n + 3, d, dtype=torch.float64)
    cache = av.KVCache()
    with torch.no_grad():
        full = m(x)
        parts = [m(x[:, :n], cache=cache)] + [m(x[:, i : i + 1], cache=cache) for i in range(n, n + 3)]
        assert_close(torch.cat(parts, dim=1), full)
        ref_cache = av.KVCache()
        ref = [m.reference_forward(x[:, :n], cache=ref_cache), m.reference_forward(x[:, n:], cache=ref_cache)]
        assert_close(torch.cat(ref, dim=1), full)
    assert cache.nbytes == 2 * b * g * (n + 3) * (d // h) * 8  # the GQA cache, unchanged


@pytest.mark.parametrize("router", ["learned", "qnorm"])
@pytest.mark.parametrize("t", [0, 5, 10])
def test_causal_no_leak(router, t):
    m = make(av.AttnSpec(64, 8, 2), router=router)
    x = torch.randn(2, 11, 64, dtype=torch.float64)
    y = x.clone()
    y[:, t + 1 :] += torch.randn_like(y[:, t + 1 :])
    with torch.no_grad():
        assert_close(m(x)[:, : t + 1], m(y)[:, : t + 1])


def test_all_heads_on_is_gqa():
    """qnorm with every routed head chosen gates every head by 1: exactly GQA."""
    spec = av.AttnSpec(48, 6, 2)
    m = make(spec, shared_heads=2, routed_heads=4, router="qnorm")
    gqa = av.create("gqa", spec).double()
    gqa.load_state_dict(m.state_dict())
    x = torch.randn(2, 9, 48, dtype=torch.float64)
    assert_close(m(x), gqa(x))


@pytest.mark.parametrize(
    "opts, match",
    [
        (
            dict(shared_heads=2, routed_heads=7),
            r"routed_heads=7 must be in \[0, n_heads - shared_heads = 8 - 2\]",
        ),
        (dict(shared_heads=9), r"shared_heads=9 must be an integer in \[0, n_heads=8\]"),
        (dict(shared_heads=4, routed_heads=0), "routed_heads=0 needs shared_heads=n_heads=8"),
        (dict(router="random"), "router='random' is not one of"),
        (dict(aux_loss_coef=-1.0), "aux_loss_coef=-1.0"),
    ],
)
def test_bad_options_raise(opts, match):
    with pytest.raises(ValueError, match=match):
        av.create("moh", av.AttnSpec(64, 8, 2), **opts)


def test_defaults_follow_moh_llama3():
    m = av.create("moh", av.AttnSpec(64, 8, 2))
    assert (m.shared_heads, m.routed_heads, m.router) == (4, 2, "learned")  # 50% shared + 25% routed
    single = av.create("moh", av.AttnSpec(16, 1))
    assert (single.shared_heads, single.routed_heads) == (1, 0)  # one head: shared, gate 1


def test_from_mha_keeps_projections_and_adds_a_fresh_router():
    torch.manual_seed(0)
    mha = av.create("mha", av.AttnSpec(64, 8))
    moh = av.from_mha(mha, 2, variant="moh", router="learned")
    assert isinstance(moh, av.MixtureOfHeadsAttention) and moh.spec.n_kv_heads == 2
    assert_close(moh.q_proj.weight, mha.q_proj.weight)
    assert_close(moh.o_proj.weight, mha.o_proj.weight)
    assert_close(moh.k_proj.weight[:8], mha.k_proj.weight[:32].reshape(4, 8, 64).mean(0))
    assert moh.wg.weight.shape == (4, 64)
    with pytest.raises(ValueError, match="'mla' cannot be uptrained from MHA"):
        av.from_mha(mha, 2, variant="mla")


@pytest.mark.parametrize("router", ["learned", "qnorm"])
def test_runs_on_meta_and_fake_tensors(router):
    with torch.device("meta"):
        m = av.create("moh", av.AttnSpec(64, 8, 2), router=router).train()
        assert m(torch.randn(2, 5, 64)).shape == (2, 5, 64)
    with FakeTensorMode():
        m = av.create("moh", av.AttnSpec(64, 8, 2), router=router).eval()
        cache = av.KVCache()
        m(torch.randn(2, 5, 64), cache=cache)
        assert m(torch.randn(2, 1, 64), cache=cache).shape == (2, 1, 64)


def test_compiles_without_graph_breaks_in_training():
    """torch.compile(fullgraph=True) captures the router, the aux loss and the gating whole."""
    m = av.create("moh", av.AttnSpec(64, 8, 2)).train()
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
    x = torch.randn(2, 6, 64)
    assert_close(compiled(x), m(x))
    assert m.aux_loss is not None and m.active_head_frac is not None


def test_fast_path_matches_loop_on_device(device):
    """float32 on CPU, or CUDA where there is one (skipped without)."""
    m = av.create("moh", av.AttnSpec(128, 8, 2)).to(device).eval()
    x = torch.randn(2, 33, 128, device=device)
    with torch.no_grad():
        assert_close(m(x), m.reference_forward(x), atol=1e-4, rtol=1e-3)
