"""Ragged batches and paged caches: a batched decode step over examples of different lengths
equals each example decoded alone with its own cache (float64), padded or paged, both kernels."""

from __future__ import annotations

import random

import pytest
import torch
from torch.testing import assert_close

import attn_variants as av
from attn_variants import keydriven, ragged

TIGHT = dict(rtol=1e-10, atol=1e-12)
# Every decoding variant whose step depends on its own example only (kdgqa with the paper's
# batch scope and dgqa sum norms over the batch: test_batch_coupled_norms_count_own_tokens).
PER_EXAMPLE = [
    ("mha", {}),
    ("mqa", {}),
    ("gqa", {}),
    ("concat", {}),
    ("kdgqa", {"scope": "sample"}),
    ("pgqa", {"seed": 3}),
    ("moh", {}),
    ("moh", {"router": "qnorm"}),
    ("mla", {}),
    ("mla", {"absorb": "never"}),
    ("mmca", {}),
    ("mmca", {"visual_attention": "full"}),
]
LAYOUTS = [("padded", 16), ("paged", 3), ("paged", 16)]


def draw_lengths(b: int, n_max: int, seed: int) -> list[int]:
    """Random lengths in [1, n_max] with 1 and n_max among them."""
    rng = random.Random(seed)
    lengths = [1, n_max] + [rng.randint(1, n_max) for _ in range(b - 2)]
    rng.shuffle(lengths)
    return lengths


def modality_rows(b: int, n: int, seed: int) -> torch.Tensor:
    """(b, n) ids, a different layout per example: text, then images of random sizes between text."""
    rng = random.Random(seed)
    rows = []
    for _ in range(b):
        ids, image = [], 0
        while len(ids) < n:
            if rng.random() < 0.4:
                image += 1
                ids += [image] * rng.randint(1, 3)
            else:
                ids += [0] * rng.randint(1, 2)
        rows.append(ids[:n])
    return torch.tensor(rows)


def step_ids(prompt_ids: torch.Tensor, lengths: list[int], q_len: int, seed: int) -> torch.Tensor:
    """(b, q) ids of a step: text, or a one-token new image (an id the example has not used)."""
    rng = random.Random(seed)
    rows = []
    for row, n in zip(prompt_ids.tolist(), lengths, strict=True):
        fresh = max(row[:n]) + 1
        rows.append([0 if rng.random() < 0.6 else fresh + t for t in range(q_len)])
    return torch.tensor(rows)


def build(name: str, options: dict, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    spec = av.AttnSpec(32, 4, 2)
    return av.create(name, spec, **options).double().eval()


def reseed(module: torch.nn.Module) -> None:
    """PGQA draws its noise from its own generator: the same draw for every compared step."""
    if hasattr(module, "_generator"):
        module._generator = None


def batched_step(module, x, x_next, lengths, layout, page_size, layout_kw, step_kw):
    cache = av.KVCache(layout=layout, page_size=page_size, seed=7)
    with torch.no_grad():
        cache.fill(module, x, lengths=lengths, **layout_kw)
        reseed(module)
        return module(x_next, cache=cache, **step_kw), cache


def alone_steps(module, x, x_next, lengths, layout_kw, step_kw):
    outs = []
    for i, n in enumerate(lengths):
        cache = av.KVCache()
        one = {k: v[i : i + 1, :n] for k, v in layout_kw.items()}
        with torch.no_grad():
            cache.fill(module, x[i : i + 1, :n], **one)
            reseed(module)
            outs.append(
                module(x_next[i : i + 1], cache=cache, **{k: v[i : i + 1] for k, v in step_kw.items()})
            )
    return torch.cat(outs)


@pytest.mark.parametrize("layout,page_size", LAYOUTS)
@pytest.mark.parametrize("name,options", PER_EXAMPLE, ids=lambda p: str(p))
@pytest.mark.parametrize("b,n_max,q_len,seed", [(4, 9, 1, 0), (5, 17, 1, 1), (3, 7, 3, 2)])
def test_ragged_step_equals_each_example_alone(name, options, layout, page_size, b, n_max, q_len, seed):
    module = build(name, options, seed)
    lengths = draw_lengths(b, n_max, seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n_max, 32, generator=gen, dtype=torch.float64)  # (b, n, d)
    x_next = torch.randn(b, q_len, 32, generator=gen, dtype=torch.float64)  # (b, q, d)
    layout_kw, step_kw = {}, {}
    if name == "mmca":
        layout_kw = {"modality": modality_rows(b, n_max, seed)}
        step_kw = {"modality": step_ids(layout_kw["modality"], lengths, q_len, seed)}
    got, cache = batched_step(module, x, x_next, lengths, layout, page_size, layout_kw, step_kw)
    want = alone_steps(module, x, x_next, lengths, layout_kw, step_kw)
    assert cache.lengths == [n + q_len for n in lengths]
    assert_close(got, want, **TIGHT)


@pytest.mark.parametrize(
    "name,options", [("gqa", {}), ("kdgqa", {"scope": "sample"}), ("mla", {"absorb": "never"})]
)
def test_mask_kernel_equals_split_kernel(name, options, monkeypatch):
    """The accelerator kernel (one masked call over the padded frame) on the CPU, against the
    host's split kernel: both equal each example alone."""
    module = build(name, options)
    lengths = [1, 6, 3, 8]
    x = torch.randn(4, 8, 32, dtype=torch.float64)
    x_next = torch.randn(4, 2, 32, dtype=torch.float64)
    want = alone_steps(module, x, x_next, lengths, {}, {})
    monkeypatch.setattr(ragged, "kernel_for", lambda q: "mask")
    for layout in ("padded", "paged"):
        got, _ = batched_step(module, x, x_next, lengths, layout, 2, {}, {})
        assert_close(got, want, **TIGHT)


@pytest.mark.parametrize(
    "name,options", [("kdgqa", {"scope": "batch"}), ("dgqa", {"kind": "diff"}), ("dgqa", {"kind": "ema"})]
)
@pytest.mark.parametrize("layout", ["padded", "paged"])
def test_batch_coupled_norms_count_own_tokens(name, options, layout):
    """KDGQA's batch scope and DGQA sum key norms over the batch, so a request alone allocates
    differently: the step must equal the paper's loop with each example's norm over its own
    tokens (the stale padding the cache holds past a short example must not count)."""
    module = build(name, options)
    lengths = [2, 9, 5]
    x = torch.randn(3, 9, 32, dtype=torch.float64)
    x_next = torch.randn(3, 1, 32, dtype=torch.float64)
    cache = av.KVCache(layout=layout, page_size=4, seed=1)
    with torch.no_grad():
        cache.fill(module, x, lengths=lengths)
        state = module.norm_cache.tolist() if name == "dgqa" else None
        got = module(x_next, cache=cache)
        q, k_new, v_new = module.project(x_next)  # (b, h, 1, e), (b, g, 1, e)
        keys, values = [], []
        for i, n in enumerate(lengths):
            _, k, v = module.project(x[i : i + 1, :n])
            keys.append(torch.cat([k, k_new[i : i + 1]], 2))  # (1, g, n + 1, e): its own tokens only
            values.append(torch.cat([v, v_new[i : i + 1]], 2))
    norms = [[float(k[0, j].norm()) for j in range(k.shape[1])] for k in keys]
    summed = [sum(col) for col in zip(*norms, strict=True)]
    if name == "kdgqa":
        a = keydriven.reference_allocation(summed, 4, min_max=True)
    else:
        scores = keydriven.reference_dgqa_scores(summed, state, module.kind)
        a = keydriven.reference_allocation(scores, 4, min_max=False)
    outs = [keydriven.reference_groups(q[i : i + 1], keys[i], values[i], a, causal=True) for i in range(3)]
    assert_close(got, module.merge(torch.cat(outs)), **TIGHT)


@pytest.mark.parametrize(
    "name,options", [("gqa", {}), ("kdgqa", {"scope": "batch"}), ("mla", {}), ("mmca", {})]
)
def test_paged_equals_padded_over_several_steps(name, options):
    """Several decode steps of one ragged batch: paged (pages of 2 and 5) equals padded exactly,
    step after step, the pages growing and the pool doubling as the examples grow."""
    lengths = [3, 1, 7, 4]
    x = torch.randn(4, 7, 32, dtype=torch.float64)
    steps = torch.randn(5, 4, 1, 32, dtype=torch.float64)
    outs = {}
    for layout, page_size in (("padded", 16), ("paged", 2), ("paged", 5)):
        module = build(name, options)
        cache = av.KVCache(layout=layout, page_size=page_size, seed=3)
        with torch.no_grad():
            cache.fill(module, x, lengths=lengths)
            outs[layout, page_size] = [module(s, cache=cache) for s in steps]
    for key in (("paged", 2), ("paged", 5)):
        for got, want in zip(outs[key], outs["padded", 16], strict=True):
            assert torch.equal(got, want) or torch.allclose(got, want, **TIGHT), key


def test_ragged_causal_leak():
    """Speculative decode (q-len 3): perturbing a later query token of one example leaves its
    earlier outputs and every other example unchanged."""
    module = build("gqa", {})
    x = torch.randn(3, 6, 32, dtype=torch.float64)
    x_next = torch.randn(3, 3, 32, dtype=torch.float64)
    base, _ = batched_step(module, x, x_next, [2, 6, 4], "paged", 4, {}, {})
    x_next[1, 2] += 1.0
    moved, _ = batched_step(module, x, x_next, [2, 6, 4], "paged", 4, {}, {})
    assert_close(moved[:, :2], base[:, :2], **TIGHT)
    assert_close(moved[[0, 2]], base[[0, 2]], **TIGHT)
    assert not torch.allclose(moved[1, 2], base[1, 2])
