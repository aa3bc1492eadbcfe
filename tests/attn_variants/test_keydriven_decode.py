"""KDGQA/DGQA decode from the KV cache's running key statistics (issue 18): a decoded step
equals the full recomputation in float64 over random caches, truncations and both scopes;
the statistics are exact prefix sums; a step reads only its new keys to allocate; a cache
filled by another variant is caught up; no host sync on CUDA."""

import copy
import random

import pytest
import torch
from torch.testing import assert_close

import attn_variants as av
from attn_variants import keydecode as kdd
from attn_variants import keydriven as kd

SPECS = [(64, 8, 4), (60, 12, 6), (24, 6, 3), (32, 4, 1), (40, 5, 5), (48, 16, 8)]  # (d, h, g)
VARIANTS = [
    ("kdgqa", {"scope": "batch"}),
    ("kdgqa", {"scope": "sample"}),
    ("dgqa", {"kind": "ema"}),
    ("dgqa", {"kind": "diff"}),
]


def make(name, spec, **opts):
    return av.create(name, spec, **opts).to(torch.float64).eval()


def tokens(b, n, d, gen):
    """x (b, n, d) with a random scale per input dim, so key-head norms differ and the
    allocations vary (equal norms would always give the uniform split)."""
    scale = torch.rand(d, generator=gen, dtype=torch.float64) * 3 + 0.1
    return torch.randn(b, n, d, generator=gen, dtype=torch.float64) * scale


def prefix_sums(keys):
    """What the cache's statistics must hold: cumulative squared key norms (b, g, s)."""
    return (keys.double() ** 2).sum(-1).cumsum(-1)


def check_step(module, cache, seq, new):
    """Decode `new` against `cache` (which holds `seq`); it must equal the full recomputation
    over seq + new, from the same module state, by the fast path and by the paper's loop."""
    twin, ref = copy.deepcopy(module), copy.deepcopy(module)  # DGQA: the state before the step
    with torch.no_grad():
        out = module(new, cache=cache)
    seq = torch.cat([seq, new], dim=1)
    c = new.shape[1]
    assert_close(out, twin(seq)[:, -c:])
    assert_close(out, kd.reference_forward(ref, seq)[:, -c:])
    for name, buffer in module.named_buffers():  # DGQA's eval state: set from all cached keys
        assert_close(buffer, dict(twin.named_buffers())[name])
    assert_close(cache.get(kdd.KEY_STATS), prefix_sums(cache.keys), rtol=1e-12, atol=1e-12)
    return seq


@pytest.mark.parametrize("host", [True, False])  # the CPU's path, and the accelerator's (no reads)
@pytest.mark.parametrize("name, opts", VARIANTS)
@pytest.mark.parametrize("d, h, g", SPECS)
def test_decode_equals_the_full_recomputation_over_random_caches(d, h, g, name, opts, host, monkeypatch):
    monkeypatch.setattr(kdd, "on_host", lambda t: host)
    rng, gen = random.Random(d * h + g), torch.Generator().manual_seed(d + h * g)
    module = make(name, av.AttnSpec(d, h, g, bias=True), **opts)
    b = rng.choice([1, 2, 3])
    seq = tokens(b, rng.randint(1, 12), d, gen)
    cache = av.KVCache()
    with torch.no_grad():
        module(seq, cache=cache)  # prefill: fills the statistics too
    assert_close(cache.get(kdd.KEY_STATS), prefix_sums(cache.keys), rtol=1e-12, atol=1e-12)
    for _ in range(6):
        if rng.random() < 0.4:  # forget a random tail, then decode other tokens there
            keep = rng.randint(1, cache.length)
            cache.truncate(keep)
            seq = seq[:, :keep]
        seq = check_step(module, cache, seq, tokens(b, rng.choice([1, 1, 1, 2, 3]), d, gen))


@pytest.mark.parametrize("name, opts", VARIANTS)
def test_a_step_reads_only_its_new_keys_to_allocate(name, opts, monkeypatch):
    module = make(name, av.AttnSpec(64, 8, 4), **opts)
    x = torch.randn(2, 30, 64, dtype=torch.float64)
    cache = av.KVCache()
    with torch.no_grad():
        module(x[:, :20], cache=cache)
        counted = []
        token_sq_norms = kdd.token_sq_norms
        monkeypatch.setattr(kdd, "token_sq_norms", lambda k: counted.append(k.shape[2]) or token_sq_norms(k))
        module(x[:, 20:21], cache=cache)
        module(x[:, 21:24], cache=cache)
        cache.truncate(22)
        module(x[:, 22:23], cache=cache)
    assert counted == [1, 3, 1]  # the new tokens only, never the 20+ cached ones
    norms = kdd.cached_key_norms(cache.keys, cache)
    cache.keys.zero_()  # the live cached keys, overwritten in place: the statistics do not look
    assert_close(kdd.cached_key_norms(cache.keys, cache), norms)


@pytest.mark.parametrize("scope", ["batch", "sample"])
def test_a_cache_filled_by_gqa_is_caught_up(scope):
    """gqa appends k/v without statistics; kdgqa counts the keys it has not seen (once), so
    gqa prefill + kdgqa decode equals kdgqa throughout, even with gqa steps in between."""
    spec = av.AttnSpec(48, 8, 4)
    module = make("kdgqa", spec, scope=scope)
    gqa = make("gqa", spec)
    gqa.load_state_dict(module.state_dict())
    x = tokens(2, 14, 48, torch.Generator().manual_seed(3))
    mixed, pure = av.KVCache(), av.KVCache()
    with torch.no_grad():
        gqa(x[:, :8], cache=mixed)
        module(x[:, :8], cache=pure)
        assert kdd.KEY_STATS not in mixed
        for t in range(8, 14):
            step = gqa if t in (10, 11) else module  # gqa steps leave the statistics behind
            out = step(x[:, t : t + 1], cache=mixed)
            assert_close(out, (gqa if step is gqa else module)(x[:, t : t + 1], cache=pure))
        assert_close(mixed.get(kdd.KEY_STATS), prefix_sums(mixed.keys), rtol=1e-12, atol=1e-12)
        assert_close(out, module(x)[:, -1:])


def test_statistics_counting_more_keys_than_the_cache_holds_are_a_value_error():
    module = make("kdgqa", av.AttnSpec(32, 4, 2))
    cache = av.KVCache()
    with torch.no_grad():
        module(torch.randn(1, 5, 32, dtype=torch.float64), cache=cache)
        cache.append(2, **{kdd.KEY_STATS: torch.zeros(1, 2, 2, dtype=torch.float64)})  # 7 counted, 5 keys
        with pytest.raises(ValueError, match=r"'key_sq_prefix' counts 7 keys but the cache holds 6"):
            module(torch.randn(1, 1, 32, dtype=torch.float64), cache=cache)


def test_statistics_stay_float64_and_are_counted_in_nbytes():
    module = av.create("kdgqa", av.AttnSpec(64, 8, 4)).to(torch.bfloat16).eval()
    cache = av.KVCache()
    with torch.no_grad():
        module(torch.randn(2, 9, 64, dtype=torch.bfloat16), cache=cache)
    stats = cache.get(kdd.KEY_STATS)
    assert stats.dtype == torch.float64 and stats.shape == (2, 4, 9)
    kv_bytes = av.info("kdgqa").kv_cache_bytes(av.AttnSpec(64, 8, 4), {}, 2, 9, torch.bfloat16)
    # K and V (b, g, s, e) in bf16, then the float64 statistics (b, g, s)
    assert kv_bytes == 2 * 2 * 4 * 9 * 8 * 2 + 2 * 4 * 9 * 8
    assert cache.nbytes == kv_bytes  # the registry declares the statistics (cache_extra_bytes)


@pytest.mark.parametrize("name, opts", VARIANTS)
def test_decode_step_runs_on_device_without_host_sync(device, name, opts):
    """On CUDA the whole decode step (statistics, allocation, repair, layout, attention) runs
    under sync debug mode "error": any host sync raises. On CPU the same step runs as is."""
    spec = av.AttnSpec(64, 8, 4)
    ref = make(name, spec, **opts)
    fast = av.create(name, spec, **opts).eval().to(device)
    fast.load_state_dict(ref.state_dict())
    x = tokens(2, 17, 64, torch.Generator().manual_seed(1))
    cache = av.KVCache()
    with torch.no_grad():
        fast(x[:, :16].to(device, torch.float32), cache=cache)
        ref(x[:, :16])  # DGQA: the same state as the prefill left in `fast`
        expected = kd.reference_forward(copy.deepcopy(ref).to(device), x.to(device))[:, -1:]
        new = x[:, 16:].to(device, torch.float32)
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
        try:
            out = fast(new, cache=cache)
        finally:
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode("default")
    assert_close(out.double(), expected, atol=1e-5, rtol=1e-4)


def test_the_host_and_device_layouts_pick_the_same_rows():
    """Decode's layouts: the host's (rows = the largest group, built in Python) and the
    device's (rows = h, tensor ops) send every query head to its own KV head's row."""
    gen = torch.Generator().manual_seed(0)
    for h, g in [(8, 4), (12, 6), (5, 5), (16, 4), (6, 1)]:
        for _ in range(20):
            scores = torch.rand(3, g, generator=gen) * torch.rand(g, generator=gen)
            a = kd.allocate_heads(scores, h, min_max=True)  # (3, g)
            q = torch.randn(3 * h, 2, generator=gen)  # (b*h, e): one value pair per query head
            host = kdd._host_layout(tuple(map(tuple, a.tolist())), h)
            for take, back, rows in (host, kdd._device_layout(a, h)):
                q_rows = q[take].view(3, g, rows, 2)  # (b, g, rows, e)
                kv = torch.arange(g).view(1, g, 1, 1).expand(3, g, rows, 1)  # each row's KV head
                o = torch.cat([q_rows, kv.to(q.dtype)], dim=-1).view(-1, 3)[back]  # (b*h, e + 1)
                assert torch.equal(o[:, :2], q), (a, rows)  # every query head back in its place ...
                assert (
                    o[:, 2].view(3, h).long().tolist() == kd.kv_index(a, h).tolist()
                )  # ... from its KV head


@pytest.mark.parametrize("min_max", [True, False])
def test_the_host_and_device_allocations_agree(min_max, monkeypatch):
    """allocate_heads on the host (integer decisions in Python) and on a device (tensor ops,
    no reads) give the same allocation, ties, halves, zeros and non-finite sums included."""
    rng = random.Random(1)
    cases = []
    for _ in range(300):
        g = rng.choice([1, 2, 3, 4, 5, 8, 16])
        h = g * rng.choice([1, 2, 3, 4])
        pool = [0.0, 0.5, 1.5, 2.5, 3.0, rng.random() * 10, float("nan"), float("inf")]
        weights = [3, 3, 3, 3, 1, 8, 0.2, 0.2]
        rows = [[rng.choices(pool, weights)[0] for _ in range(g)] for _ in range(rng.choice([1, 3]))]
        cases.append((torch.tensor(rows, dtype=rng.choice([torch.float32, torch.float64])), h))
    host = [kd.allocate_heads(s, h, min_max=min_max) for s, h in cases]
    monkeypatch.setattr(kdd, "on_host", lambda t: False)
    device = [kd.allocate_heads(s, h, min_max=min_max) for s, h in cases]
    for (s, h), a, b in zip(cases, host, device, strict=True):
        assert a.tolist() == b.tolist(), (s, h)
        assert (a.sum(-1) == h).all() and (a >= 0).all()
