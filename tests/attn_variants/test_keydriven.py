"""KDGQA and DGQA: fast path vs the paper-style loop, allocation, scope, DGQA state, decode,
causal safety (they are not), options."""

import random

import pytest
import torch
from torch.testing import assert_close

import attn_variants as av
from attn_variants import keydriven as kd

SHAPES = [  # (b, n, d, h, g): the paper-like h=16, g=4, and odd ones
    (2, 16, 128, 16, 4),
    (3, 7, 48, 6, 3),
    (1, 1, 32, 4, 2),
    (2, 13, 60, 12, 6),
    (4, 5, 40, 5, 5),
    (2, 9, 64, 8, 1),
]


def make(name, spec, **opts):
    return av.create(name, spec, **opts).to(torch.float64)


def scale_key_heads(module, scales):
    """KV head j's keys become scales[j] times one shared projection: norms in that ratio."""
    g, e = module.spec.n_kv_heads, module.spec.head_dim
    with torch.no_grad():
        w = module.k_proj.weight.view(g, e, -1)  # (g, e, d)
        w.copy_(w[0:1] * torch.tensor(scales, dtype=w.dtype)[:, None, None])


def block_keys(module):
    """KV head j reads only input dims [j*e, (j+1)*e): its norm follows those dims of x."""
    g, e = module.spec.n_kv_heads, module.spec.head_dim
    with torch.no_grad():
        module.k_proj.weight.zero_()
        module.k_proj.weight[:, : g * e] = torch.eye(g * e)


def scaled_input(b, n, d, e, scales):
    """x (b, n, d) whose dims [j*e, (j+1)*e) are scaled by scales[j] (per example if 2-D)."""
    x = torch.randn(b, n, d, dtype=torch.float64)
    scales = torch.as_tensor(scales, dtype=torch.float64).expand(b, -1)  # (b, g)
    x[:, :, : scales.shape[1] * e] *= scales.repeat_interleave(e, dim=1)[:, None, :]
    return x


# --- fast path == reference path -----------------------------------------------------------


@pytest.mark.parametrize("b, n, d, h, g", SHAPES)
@pytest.mark.parametrize("scope", ["batch", "sample"])
@pytest.mark.parametrize("causal, backend", [(True, "sdpa"), (False, "sdpa"), (True, "eager")])
def test_kdgqa_fast_matches_reference(b, n, d, h, g, scope, causal, backend):
    module = make("kdgqa", av.AttnSpec(d, h, g, causal=causal, bias=True), scope=scope, backend=backend)
    x = torch.randn(b, n, d, dtype=torch.float64)
    assert_close(module(x), kd.reference_forward(module, x))


@pytest.mark.parametrize("scope", ["batch", "sample"])
def test_a_kv_head_with_zero_queries(scope):
    module = make("kdgqa", av.AttnSpec(128, 16, 4), scope=scope)
    scale_key_heads(module, [1.0, 2.0, 3.0, 6.0])  # s' = [0, .2, .4, 1] -> 16 * s'/1.6
    x = torch.randn(2, 11, 128, dtype=torch.float64)
    allocation = module.allocate(kd.key_norms(module.project(x)[1]))
    expected = torch.tensor([0, 2, 4, 10])
    assert (allocation == (expected if scope == "batch" else expected.expand(2, 4))).all(), allocation
    assert_close(module(x), kd.reference_forward(module, x))


@pytest.mark.parametrize("kind", ["ema", "diff"])
@pytest.mark.parametrize("b, n, d, h, g", SHAPES[:3])
def test_dgqa_fast_matches_reference_in_train_and_eval(kind, b, n, d, h, g):
    module = make("dgqa", av.AttnSpec(d, h, g), kind=kind, window=2)
    for training in (True, True, True, False, False):
        module.train(training)
        x = scaled_input(b, n, d, d // h, torch.rand(g) * 3 + 0.1)
        expected = kd.reference_forward(module, x)  # reads the buffers before the forward
        assert_close(module(x), expected)


# --- allocation ----------------------------------------------------------------------------


def random_scores(rng, g):
    """Random norm-like vectors, many with ties and exact-half shares."""
    kind = rng.choice(["uniform", "ties", "constant", "halves", "zeros"])
    if kind == "uniform":
        return [rng.random() * 10 for _ in range(g)]
    if kind == "ties":
        return [float(rng.randint(0, 3)) for _ in range(g)]
    if kind == "constant":
        return [2.5] * g
    if kind == "halves":
        return [rng.choice([0.5, 1.5, 2.5, 3.5]) for _ in range(g)]
    return [0.0] * g


def shares(scores, h, min_max):
    """h * s' / sum s' in Python floats, before rounding (None when there is no preference)."""
    lo, hi = min(scores), max(scores)
    s = [(x - lo) / (hi - lo) for x in scores] if min_max and hi > lo else list(scores)
    total = sum(s)
    return [x / total * h for x in s] if total > 0 and not (min_max and hi == lo) else None


@pytest.mark.parametrize("min_max", [True, False])
def test_allocation_sums_to_h_and_matches_the_python_reference(min_max):
    rng = random.Random(0)
    exact = 0
    for _ in range(600):
        g = rng.choice([1, 2, 3, 4, 5, 8, 16])
        h = g * rng.choice([1, 2, 3, 4])
        scores = random_scores(rng, g)
        fast = kd.allocate_heads(torch.tensor(scores, dtype=torch.float64), h, min_max=min_max).tolist()
        ref = kd.reference_allocation(scores, h, min_max=min_max)
        assert sum(fast) == h and min(fast) >= 0, (scores, h, fast)
        x = shares(scores, h, min_max)
        if x is not None and any(abs(v % 1 - 0.5) < 1e-9 for v in x):
            # A share within one ulp of k + 1/2 rounds by the last bit of sum s', which depends
            # on the summation order (torch's vs Python's): both must still round each share
            # to a neighbour before the repair moves at most g // 2 units.
            assert sum(abs(a - b) for a, b in zip(fast, ref, strict=True)) <= 2 * g, (scores, h)
            continue
        assert fast == ref, (scores, h)
        exact += 1
    assert exact > 300  # most cases are compared exactly


@pytest.mark.parametrize(
    "scores, h, expected",
    [
        ([2.5, 2.5, 2.5, 0.5], 8, [2, 2, 2, 2]),  # rounds to 6: g // 2 = 2 short, argmin +1 twice
        ([3.5, 3.5, 0.5, 0.5], 8, [4, 4, 0, 0]),  # half to even: sums to 8, no repair
        ([1.5, 1.5, 1.5, 1.5, 2.0], 8, [1, 1, 2, 2, 2]),  # rounds to 10: -1 at the first argmax, twice
    ],
)
def test_repair_handles_the_largest_mismatch(scores, h, expected):
    fast = kd.allocate_heads(torch.tensor(scores, dtype=torch.float64), h, min_max=False)
    assert fast.tolist() == expected == kd.reference_allocation(scores, h, min_max=False)


def test_batched_allocation_is_row_by_row():
    scores = torch.rand(6, 5, dtype=torch.float64)
    batched = kd.allocate_heads(scores, 10, min_max=True)
    for row, a in zip(scores, batched, strict=True):
        assert a.tolist() == kd.allocate_heads(row, 10, min_max=True).tolist()


def test_equal_norms_fall_back_to_uniform_never_nan():
    for min_max in (True, False):
        for value in (0.0, 3.0, float("nan")):
            a = kd.allocate_heads(torch.full((4,), value), 16, min_max=min_max)
            assert a.tolist() == [4, 4, 4, 4]
        infinite = torch.tensor([float("inf"), 1.0, 2.0, 3.0])
        assert kd.allocate_heads(infinite, 16, min_max=min_max).tolist() == [4, 4, 4, 4]


def test_kv_index_is_contiguous_and_skips_empty_heads():
    a = torch.tensor([0, 3, 1, 0, 2])
    assert kd.kv_index(a, 6).tolist() == [1, 1, 1, 2, 4, 4]
    both = kd.kv_index(torch.stack([a, torch.tensor([2, 0, 0, 4, 0])]), 6)
    assert both.tolist() == [[1, 1, 1, 2, 4, 4], [0, 0, 3, 3, 3, 3]]


@pytest.mark.parametrize("name", ["kdgqa", "dgqa"])
def test_equal_key_norms_give_the_gqa_result(name):
    spec = av.AttnSpec(64, 8, 4)
    module, gqa = make(name, spec), make("gqa", spec)
    scale_key_heads(module, [1.0] * 4)  # identical KV heads, identical norms
    buffers = kd.DynamicKeyDrivenGQA.BUFFERS  # dgqa's state: gqa has no such entries
    gqa.load_state_dict({k: v for k, v in module.state_dict().items() if k not in buffers})
    x = torch.randn(2, 10, 64, dtype=torch.float64)
    assert module.allocate(kd.key_norms(module.project(x)[1])).tolist() == [2, 2, 2, 2]
    assert_close(module.eval()(x), gqa(x))
    assert torch.isfinite(module(torch.zeros(2, 3, 64, dtype=torch.float64))).all()  # zero norms


# --- scope, causal safety ------------------------------------------------------------------


def two_example_batch(other_scale):
    """Example 0 favours KV head 0; example 1 favours KV head 1 by `other_scale`."""
    return torch.cat([scaled_input(1, 8, 16, 4, [2.0, 1.0]), scaled_input(1, 8, 16, 4, [1.0, other_scale])])


def test_scope_sample_has_no_cross_example_dependence():
    module = make("kdgqa", av.AttnSpec(16, 4, 2), scope="sample")
    block_keys(module)
    mild, strong = two_example_batch(1.0), two_example_batch(10.0)
    strong[0] = mild[0]
    assert_close(module(mild)[0], module(strong)[0])
    assert_close(module(mild)[:1], module(mild[:1]))


def test_scope_batch_depends_on_the_other_examples():
    module = make("kdgqa", av.AttnSpec(16, 4, 2), scope="batch")
    block_keys(module)
    mild, strong = two_example_batch(1.0), two_example_batch(10.0)
    strong[0] = mild[0]
    assert module.allocate(kd.key_norms(module.project(mild)[1])).tolist() == [4, 0]
    assert module.allocate(kd.key_norms(module.project(strong)[1])).tolist() == [0, 4]
    assert not torch.allclose(module(mild)[0], module(strong)[0])


@pytest.mark.parametrize("name", ["kdgqa", "dgqa"])
def test_not_causal_safe_later_tokens_change_earlier_outputs(name):
    assert not av.info(name).causal_safe
    module = make(name, av.AttnSpec(16, 4, 2)).eval()
    block_keys(module)
    t = 3
    x = scaled_input(1, 10, 16, 4, [3.0, 1.0])  # KV head 0 wins
    y = x.clone()
    y[:, t + 1 :, 4:8] *= 20.0  # later tokens only: now KV head 1 wins
    out_x, out_y = module(x), module(y)
    assert not torch.allclose(out_x[:, : t + 1], out_y[:, : t + 1])


# --- DGQA state ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ema", "diff"])
def test_dgqa_updates_every_window_training_steps(kind):
    h, g, e, window = 8, 4, 4, 3
    module = make("dgqa", av.AttnSpec(h * e, h, g), kind=kind, window=window).train()
    block_keys(module)
    cache, allocation = [0.0] * g, [h // g] * g
    for step in range(7):
        x = scaled_input(2, 6, h * e, e, torch.rand(g) * 4 + 0.1)
        k = module.project(x)[1]
        norms = [float(k[:, j].detach().norm(dim=(1, 2)).sum()) for j in range(g)]
        module(x)
        if step % window == 0:
            scores = kd.reference_dgqa_scores(norms, cache, kind)
            allocation = kd.reference_allocation(scores, h, min_max=False)
            cache = [(c + s) / window for c, s in zip(cache, norms, strict=True)]
        assert module.allocation.tolist() == allocation, step
        assert_close(module.norm_cache, torch.tensor(cache, dtype=torch.float64))
        assert int(module.steps) == step + 1


def test_dgqa_eval_recomputes_every_forward_and_sets_cache_to_the_norms():
    module = make("dgqa", av.AttnSpec(32, 8, 4), kind="diff").eval()
    block_keys(module)
    x = scaled_input(2, 6, 32, 4, [4.0, 1.0, 2.0, 0.5])
    module(x)
    k = module.project(x)[1]
    assert_close(module.norm_cache, k.norm(dim=(2, 3)).sum(0))
    assert module.allocation.tolist() != [2, 2, 2, 2]  # |0 - s| = s: driven by the norms
    assert int(module.steps) == 0  # eval does not count training steps
    module(x)  # same keys again: |cache - s| = 0, no preference -> uniform
    assert module.allocation.tolist() == [2, 2, 2, 2]


def test_dgqa_state_travels_in_the_state_dict_and_from_mha_starts_fresh():
    spec = av.AttnSpec(32, 8, 4)
    trained = make("dgqa", spec, window=2).train()
    for _ in range(3):
        trained(torch.randn(2, 5, 32, dtype=torch.float64))
    fresh = make("dgqa", spec, window=2)
    fresh.load_state_dict(trained.state_dict())
    for name in ("norm_cache", "allocation", "steps"):
        assert torch.equal(getattr(fresh, name), getattr(trained, name)), name
    uptrained = av.from_mha(make("mha", av.AttnSpec(32, 8)), 4, variant="dgqa", kind="ema")
    assert uptrained.allocation.tolist() == [2, 2, 2, 2] and int(uptrained.steps) == 0
    assert not uptrained.norm_cache.any()
    broken = {k: v for k, v in trained.state_dict().items() if k != "q_proj.weight"}
    with pytest.raises(RuntimeError, match="q_proj.weight"):
        fresh.load_state_dict(broken)  # other missing keys still fail a strict load


@pytest.mark.parametrize("name", ["kdgqa", "dgqa"])
def test_from_mha_builds_the_variant(name):
    mha = make("mha", av.AttnSpec(64, 8, bias=True))
    module = av.from_mha(mha, 2, variant=name)
    assert isinstance(module, kd.KeyDrivenGQA if name == "kdgqa" else kd.DynamicKeyDrivenGQA)
    assert_close(module.k_proj.weight, mha.k_proj.weight.view(2, 4, 8, 64).mean(1).reshape(16, 64))


# --- decode ----------------------------------------------------------------------------------


@pytest.mark.parametrize("scope", ["batch", "sample"])
@pytest.mark.parametrize("prefix, chunks", [(5, [1, 1, 1]), (1, [3, 1, 4])])
def test_kdgqa_decode_equals_a_full_forward_over_the_same_keys(scope, prefix, chunks):
    """The allocation reads every cached key, so a chunk's output equals the last rows of a
    full forward over the tokens seen so far (not of one over the whole sequence)."""
    module = make("kdgqa", av.AttnSpec(64, 8, 4), scope=scope).eval()
    x = torch.randn(2, prefix + sum(chunks), 64, dtype=torch.float64)
    cache = av.KVCache()
    with torch.no_grad():
        module(x[:, :prefix], cache=cache)
        end = prefix
        for c in chunks:
            out = module(x[:, end : end + c], cache=cache)
            end += c
            assert_close(out, module(x[:, :end])[:, -c:])
            assert_close(out, kd.reference_forward(module, x[:, :end])[:, -c:])


def test_dgqa_decode_equals_a_full_forward_from_the_same_state():
    module = make("dgqa", av.AttnSpec(64, 8, 4), kind="ema").eval()
    x = torch.randn(2, 9, 64, dtype=torch.float64)
    cache = av.KVCache()
    with torch.no_grad():
        module(x[:, :6], cache=cache)
        for end in (7, 8, 9):
            state = {k: v.clone() for k, v in module.state_dict().items()}
            out = module(x[:, end - 1 : end], cache=cache)
            twin = make("dgqa", av.AttnSpec(64, 8, 4), kind="ema").eval()
            twin.load_state_dict(state)
            assert_close(out, twin(x[:, :end])[:, -1:])


# --- gradients, devices, options -------------------------------------------------------------


@pytest.mark.parametrize("name, opts", [("kdgqa", {"scope": "sample"}), ("dgqa", {"kind": "ema"})])
def test_runs_on_device_without_host_sync(device, name, opts):
    spec = av.AttnSpec(64, 8, 4)
    ref = make(name, spec, **opts).eval().to(device)
    fast = av.create(name, spec, **opts).eval().to(device)
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(2, 16, 64, device=device, dtype=torch.float64)
    expected = kd.reference_forward(ref, x)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")  # any host sync in the forward raises
    try:
        out = fast(x.float())
    finally:
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode("default")
    assert_close(out.double(), expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "name, opts, message",
    [
        ("kdgqa", {"scope": "global"}, r"scope='global' is not one of \['batch', 'sample'\]"),
        ("dgqa", {"kind": "sum"}, r"kind='sum' is not one of \['ema', 'diff'\]"),
        ("dgqa", {"window": 0}, "window=0 must be a positive integer"),
        ("dgqa", {"window": 1.5}, "window=1.5 must be a positive integer"),
        ("dgqa", {"window": True}, "window=True must be a positive integer"),
    ],
)
def test_bad_options_name_the_value(name, opts, message):
    with pytest.raises(ValueError, match=message):
        av.create(name, av.AttnSpec(32, 4, 2), **opts)


# --- DGQA state stays float32 in a low-precision module (issue 20, item 5) ----------------------

CASTS = {
    "to(bfloat16)": lambda m: m.to(torch.bfloat16),
    "bfloat16()": lambda m: m.bfloat16(),
    "half()": lambda m: m.half(),
    "to(device, dtype)": lambda m: m.to("cpu", torch.bfloat16),
}


@pytest.mark.parametrize("cast", list(CASTS))
def test_dgqa_norm_cache_stays_float32_through_casts(cast):
    module = av.create("dgqa", av.AttnSpec(32 * 4, 32, 8), kind="diff").eval()
    block_keys(module)
    module = CASTS[cast](module)
    assert module.norm_cache.dtype == torch.float32
    assert module.q_proj.weight.dtype != torch.float32  # the rest of the module was cast
    dtype = module.q_proj.weight.dtype
    x = scaled_input(2, 16, 32 * 4, 4, [4.0, 1.0, 2.0, 0.5, 3.0, 1.0, 2.0, 1.0]).to(dtype)
    module(x)
    assert module.allocation.tolist() != [4] * 8  # |0 - s| = s: driven by the norms
    module(x)  # the same keys again: |cache - s| = 0 exactly, no preference -> uniform
    assert module.allocation.tolist() == [4] * 8
    assert module.norm_cache.dtype == torch.float32


def test_dgqa_norm_cache_stays_float32_through_state_dict_round_trips():
    spec = av.AttnSpec(32 * 4, 32, 8)
    trained = av.create("dgqa", spec).bfloat16().eval()
    trained(torch.randn(2, 16, 32 * 4, dtype=torch.bfloat16))
    state = trained.state_dict()
    assert state["norm_cache"].dtype == torch.float32
    fresh = av.create("dgqa", spec).bfloat16()
    fresh.load_state_dict(state)
    assert fresh.norm_cache.dtype == torch.float32
    assert torch.equal(fresh.norm_cache, trained.norm_cache)
    # A checkpoint whose cache was saved in bf16 (by older code) is widened, also with assign=True.
    old = {**state, "norm_cache": state["norm_cache"].bfloat16()}
    for assign in (False, True):
        loaded = av.create("dgqa", spec).bfloat16()
        loaded.load_state_dict(dict(old), assign=assign)
        assert loaded.norm_cache.dtype == torch.float32, assign
        assert torch.equal(loaded.norm_cache, old["norm_cache"].float())


def test_dgqa_norm_cache_follows_a_float64_module_and_back():
    module = av.create("dgqa", av.AttnSpec(32, 8, 4)).double()
    assert module.norm_cache.dtype == torch.float64  # the float64 reference checks keep full precision
    assert module.float().norm_cache.dtype == torch.float32
