"""Static uneven grouping for gqa: a plain per-head reference, the fused plan's call count,
the cache, decode, leaks, and from_mha's three ways of choosing the groups."""

import itertools

import pytest
import torch
from torch.testing import assert_close

import attn_variants as av
from attn_variants import decode
from attn_variants import grouping as gp

CASES = [  # (b, n, h, g, grouping): sizes that differ, odd lengths, permuted uniform groups
    (2, 9, 4, 2, (0, 0, 0, 1)),
    (1, 1, 6, 3, (2, 0, 1, 0, 0, 2)),
    (3, 17, 8, 4, (1, 1, 0, 2, 2, 2, 3, 1)),
    (2, 5, 4, 2, (0, 1, 0, 1)),  # one size class, heads interleaved
    (1, 13, 5, 5, (4, 3, 2, 1, 0)),  # g = h, heads reversed
]


def reference(m, x, grouping):
    """Each query head i attends with KV head grouping[i], softmax written out (float64)."""
    spec = m.spec
    b, n, _ = x.shape
    h, g, e = spec.n_heads, spec.n_kv_heads, spec.head_dim
    q = m.q_proj(x).view(b, n, h, e)
    k, v = m.k_proj(x).view(b, n, g, e), m.v_proj(x).view(b, n, g, e)
    heads = []
    for i in range(h):
        scores = q[:, :, i] @ k[:, :, grouping[i]].transpose(1, 2) * e**-0.5  # (b, n, n)
        if spec.causal:
            scores = scores.masked_fill(torch.ones(n, n).triu(1).bool(), float("-inf"))
        heads.append(scores.softmax(-1) @ v[:, :, grouping[i]])  # (b, n, e)
    return m.o_proj(torch.cat(heads, dim=-1))


def make(h, g, grouping, backend="sdpa", causal=True):
    spec = av.AttnSpec(8 * h, h, g, causal=causal, bias=True)
    return av.create("gqa", spec, grouping=grouping, backend=backend).double()


@pytest.mark.parametrize("b, n, h, g, grouping", CASES)
@pytest.mark.parametrize("backend, causal", [("sdpa", True), ("eager", True), ("sdpa", False)])
def test_matches_the_per_head_reference_float64(b, n, h, g, grouping, backend, causal):
    m = make(h, g, grouping, backend, causal)
    x = torch.randn(b, n, 8 * h, dtype=torch.float64)
    with torch.no_grad():
        assert_close(m(x), reference(m, x, grouping))


@pytest.mark.parametrize("b, n, h, g, grouping", CASES)
def test_one_backend_call_per_distinct_group_size(b, n, h, g, grouping):
    m = make(h, g, grouping)
    calls = []
    inner = m.backend
    m.backend = lambda q, k, v, **kw: calls.append((q.shape[1], k.shape[1])) or inner(q, k, v, **kw)
    with torch.no_grad():
        m(torch.randn(b, n, 8 * h, dtype=torch.float64))
    sizes = sorted({grouping.count(j) for j in range(g)})
    assert calls == [
        (s * sum(grouping.count(j) == s for j in range(g)), sum(grouping.count(j) == s for j in range(g)))
        for s in sizes
    ]


def test_a_decode_step_takes_the_decode_path_per_size_class(monkeypatch):
    """With a cache, each size class goes through decode.attend (the registry's decode path)."""
    calls = []
    real = decode.attend

    def recording(q, k, v, **kwargs):
        calls.append((q.shape[1], k.shape[1]))
        return real(q, k, v, **kwargs)

    monkeypatch.setattr(decode, "attend", recording)
    m = make(8, 4, (1, 1, 0, 2, 2, 2, 3, 1)).eval()  # sizes 1, 3, 3, 1: classes (1, 2), (3, 2)
    cache = av.KVCache()
    with torch.no_grad():
        cache.fill(m, torch.randn(1, 6, 64, dtype=torch.float64))
        m(torch.randn(1, 1, 64, dtype=torch.float64), cache=cache)
    assert calls == [(2, 2), (6, 2)]


@pytest.mark.parametrize("b, n, h, g, grouping", CASES)
def test_prefill_then_decode_and_the_cache_holds_g_heads(b, n, h, g, grouping):
    m = make(h, g, grouping).eval()
    x = torch.randn(b, n + 3, 8 * h, dtype=torch.float64)
    cache = av.KVCache()
    with torch.no_grad():
        parts = [m(x[:, :n], cache=cache)] + [m(x[:, i : i + 1], cache=cache) for i in range(n, n + 3)]
        assert_close(torch.cat(parts, dim=1), m(x))
    assert cache.fields == {"k": (b, g, n + 3, 8), "v": (b, g, n + 3, 8)}
    assert cache.nbytes == av.info("gqa").kv_cache_bytes(
        m.spec, {"grouping": grouping}, b, n + 3, torch.float64
    )


@pytest.mark.parametrize("t", [0, 5])
def test_causal_no_leak(t):
    m = make(8, 4, CASES[2][4])
    x = torch.randn(2, 11, 64, dtype=torch.float64)
    y = x.clone()
    y[:, t + 1 :] += torch.randn_like(y[:, t + 1 :])
    assert_close(m(x)[:, : t + 1], m(y)[:, : t + 1])


def test_neighbour_grouping_is_plain_gqa_and_the_state_dict_is_gqas():
    plain = av.create("gqa", av.AttnSpec(32, 4, 2)).double()
    same = av.create("gqa", av.AttnSpec(32, 4, 2), grouping=(0, 0, 1, 1)).double()
    assert same.layout is None  # the fast path untouched
    uneven = av.create("gqa", av.AttnSpec(32, 4, 2), grouping="0-1-1-1").double()
    assert uneven.grouping == (0, 1, 1, 1) and uneven.state_dict().keys() == plain.state_dict().keys()
    same.load_state_dict(plain.state_dict(), strict=True)
    x = torch.randn(2, 7, 32, dtype=torch.float64)
    assert torch.equal(same(x), plain(x))


@pytest.mark.parametrize(
    "grouping, match",
    [
        ((0, 0, 1), "must give each of the h=4 query heads a KV head in \\[0, 2\\)"),
        ((0, 0, 2, 1), "in \\[0, 2\\)"),
        ((0, 0, 0, 0), "leaves KV head\\(s\\) \\[1\\] with no query head"),
        ("0-x-1-1", "is not KV-head ids joined by '-'"),
    ],
)
def test_bad_groupings_raise(grouping, match):
    with pytest.raises(ValueError, match=match):
        av.create("gqa", av.AttnSpec(32, 4, 2), grouping=grouping)


def brute_force(gram, h, g):
    best = min(
        (labels for labels in itertools.product(range(g), repeat=h) if len(set(labels)) == g),
        key=lambda labels: gp.group_error(gram, labels, g),
    )
    return gp.group_error(gram, best, g)


@pytest.mark.parametrize("seed", range(4))
def test_choose_finds_the_least_error_grouping(seed):
    torch.manual_seed(seed)
    feats = torch.randn(7, 5, dtype=torch.float64) * torch.rand(7, 1, dtype=torch.float64) * 3
    gram = feats @ feats.T
    chosen = gp.choose(feats, 3)
    assert len(set(chosen)) == 3 and chosen[0] == 0
    assert gp.group_error(gram, chosen, 3) == pytest.approx(brute_force(gram, 7, 3), rel=1e-9)


def test_group_error_is_the_squared_distance_to_the_group_mean():
    feats = torch.randn(5, 3, dtype=torch.float64)
    grouping = (0, 1, 0, 1, 1)
    direct = sum(
        (
            feats[[i for i in range(5) if grouping[i] == j]]
            - feats[[i for i in range(5) if grouping[i] == j]].mean(0)
        )
        .square()
        .sum()
        for j in range(2)
    )
    assert gp.group_error(feats @ feats.T, grouping, 2) == pytest.approx(float(direct))


def planted_mha(planted, d=32, seed=0):
    """An MHA whose K/V heads are copies of g prototypes, head i a copy of planted[i] (plus a
    little noise): the right uneven grouping is `planted`."""
    torch.manual_seed(seed)
    h, g = len(planted), max(planted) + 1
    mha = av.create("mha", av.AttnSpec(d, h, bias=True)).double()
    e = d // h
    with torch.no_grad():
        for lin in (mha.k_proj, mha.v_proj):
            protos_w, protos_b = (
                torch.randn(g, e, d, dtype=torch.float64),
                torch.randn(g, e, dtype=torch.float64),
            )
            lin.weight.copy_(protos_w[list(planted)].reshape(h * e, d) + 1e-3 * torch.randn(h * e, d))
            lin.bias.copy_(protos_b[list(planted)].reshape(h * e))
    return mha


@pytest.mark.parametrize("how", ["weights", "activations"])
def test_from_mha_recovers_a_planted_uneven_grouping(how):
    planted = (0, 1, 1, 0, 2, 1, 1, 3)  # sizes 2, 4, 1, 1, heads scattered
    mha = planted_mha(planted)
    calibration = torch.randn(2, 9, 32, dtype=torch.float64)
    gqa = av.from_mha(mha, 4, grouping=how, calibration=calibration)
    assert gqa.grouping == planted
    neighbour = av.from_mha(mha, 4, grouping="neighbour")
    assert neighbour.grouping is None
    # pooling near-copies loses next to nothing; pooling neighbours mixes different heads
    with torch.no_grad():
        target = mha(calibration)
        assert (gqa(calibration) - target).norm() < 0.01 * (neighbour(calibration) - target).norm()


def test_weight_grouping_never_loses_to_neighbours_and_pools_its_groups():
    mha = av.create("mha", av.AttnSpec(64, 8, bias=True)).double()
    h, e = 8, 8
    feats = torch.cat(
        [p.view(h, e, -1) for lin in (mha.k_proj, mha.v_proj) for p in (lin.weight, lin.bias)], -1
    )
    gram = feats.flatten(1) @ feats.flatten(1).T
    gqa = av.from_mha(mha, 2, grouping="weights")
    assert gp.group_error(gram, gqa.grouping, 2) <= gp.group_error(gram, gp.contiguous(8, 2), 2) + 1e-9
    for j in range(2):
        members = [i for i in range(h) if gqa.grouping[i] == j]
        expected = mha.k_proj.weight.view(h, e, -1)[members].mean(0)
        assert_close(gqa.k_proj.weight.view(2, e, -1)[j], expected)
    assert torch.equal(gqa.q_proj.weight, mha.q_proj.weight)


def test_from_mha_grouping_errors():
    mha = av.create("mha", av.AttnSpec(32, 4)).double()
    with pytest.raises(ValueError, match="needs calibration=x"):
        av.from_mha(mha, 2, grouping="activations")
    with pytest.raises(ValueError, match="grouping='nearest' is not one of"):
        av.from_mha(mha, 2, grouping="nearest")
    with pytest.raises(ValueError, match="needs a variant with a 'grouping' option"):
        av.from_mha(mha, 2, "kdgqa", grouping="weights")
    explicit = av.from_mha(mha, 2, grouping=(1, 0, 0, 0))
    assert explicit.grouping == (1, 0, 0, 0)
    assert_close(explicit.k_proj.weight[:8], mha.k_proj.weight[8:].view(3, 8, -1).mean(0))  # heads 1-3
    assert torch.equal(explicit.k_proj.weight[8:], mha.k_proj.weight[:8])  # head 0 alone
