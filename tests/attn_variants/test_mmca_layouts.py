"""MMCA over any layout (issue 17): several images anywhere, per example; new images in later rounds."""

import random

import pytest
import torch
from torch.testing import assert_close

import attn_variants as av
from attn_variants import modality as layout
from attn_variants.mmca import reference
from tests.attn_variants.test_mmca import VISUAL, make, x_of


def segments(*parts):
    """ids from (id, length) pairs: segments((0, 2), (1, 3)) -> [0, 0, 1, 1, 1]."""
    return [k for k, length in parts for _ in range(length)]


def random_layout(n, rng):
    """One example's ids: text and images of random lengths in random order, images numbered
    1, 2, ... as they come; two images may touch, text may come first or not at all."""
    ids, image = [], 0
    while len(ids) < n:
        if rng.random() < 0.5:
            ids += [0] * rng.randint(1, 4)
        else:
            image += 1
            ids += [image] * rng.randint(1, 5)
    return ids[:n]


def batch_ids(b, n, seed):
    rng = random.Random(seed)
    return torch.tensor([random_layout(n, rng) for _ in range(b)])  # (b, n), a layout per example


CASES = [  # (b, n, d, h, g)
    (2, 16, 64, 8, 2),
    (1, 7, 48, 6, 3),
    (3, 23, 32, 4, 1),
    (2, 33, 96, 12, 4),
    (4, 5, 32, 4, 4),
]


@pytest.mark.parametrize("b, n, d, h, g", CASES)
@pytest.mark.parametrize("visual_attention", VISUAL)
@pytest.mark.parametrize("backend", ["sdpa", "eager"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_interleavings_match_reference(b, n, d, h, g, visual_attention, backend, seed):
    torch.manual_seed(seed)
    module = make(av.AttnSpec(d, h, g, bias=True), visual_attention, backend)
    ids = batch_ids(b, n, seed)
    x = x_of(b, n, d)
    out = module(x, modality=ids)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert_close(out, reference(module, x, modality=ids))


@pytest.mark.parametrize("visual_attention", VISUAL)
def test_non_causal_interleaving_matches_reference(visual_attention):
    module = make(av.AttnSpec(64, 8, 2, causal=False), visual_attention)
    ids = batch_ids(3, 14, seed=5)
    x = x_of(3, 14)
    assert_close(module(x, modality=ids), reference(module, x, modality=ids))


@pytest.mark.parametrize("visual_attention", VISUAL)
@pytest.mark.parametrize("b, n, m", [(2, 16, 5), (1, 9, 9), (3, 7, 0), (2, 12, 1)])
def test_prefix_layout_equals_the_n_visual_path_bit_for_bit(visual_attention, b, n, m):
    module = make(av.AttnSpec(64, 8, 2), visual_attention)
    x = x_of(b, n)
    ids = layout.prefix(b, n, m)
    assert torch.equal(module(x, modality=ids), module(x, n_visual=m))
    assert torch.equal(module(x, modality=ids * 7), module(x, n_visual=m))  # the id's value is a name


def test_all_text_is_causal_gqa():
    spec = av.AttnSpec(64, 8, 2)
    mmca, gqa = make(spec), make(spec, name="gqa")
    gqa.load_state_dict(mmca.state_dict())
    x = x_of(2, 11)
    assert_close(mmca(x, modality=torch.zeros(2, 11, dtype=torch.long)), gqa(x))


def visible_before(ids, t, visual_attention):
    """Rows whose output may not depend on tokens after t: all up to t, except (for "full") the
    rows of an image that continues past t, which see their whole image."""
    rows = list(range(t + 1))
    if visual_attention == "full" and t + 1 < len(ids) and ids[t] > 0 and ids[t + 1] == ids[t]:
        rows = [i for i in rows if ids[i] != ids[t]]
    return rows


@pytest.mark.parametrize("visual_attention", VISUAL)
@pytest.mark.parametrize("t", [0, 2, 4, 6, 8, 10, 12])
def test_later_tokens_do_not_leak_into_text_or_image_rows(visual_attention, t):
    ids = segments((0, 2), (1, 3), (0, 2), (2, 4), (3, 2), (0, 2))  # n = 15
    module = make(av.AttnSpec(64, 8, 2), visual_attention)
    x = x_of(2, len(ids))
    y = x.clone()
    y[:, t + 1 :] += torch.randn_like(y[:, t + 1 :])
    mod = torch.tensor([ids, ids])
    out_x, out_y = module(x, modality=mod), module(y, modality=mod)
    rows = visible_before(ids, t, visual_attention)
    assert any(ids[i] > 0 for i in rows) or t < 4  # image rows are covered, not only text
    assert_close(out_x[:, rows], out_y[:, rows])
    assert not torch.allclose(out_x[:, t + 1 :], out_y[:, t + 1 :])


@pytest.mark.parametrize("visual_attention", VISUAL)
def test_an_image_never_sees_text_or_other_images(visual_attention):
    ids = segments((0, 3), (1, 4), (2, 3), (0, 3), (3, 2))
    mod = torch.tensor([ids])
    module = make(av.AttnSpec(64, 8, 2), visual_attention)
    x = x_of(1, len(ids))
    for k in (1, 2, 3):
        rows = [i for i, kk in enumerate(ids) if kk == k]
        y = x.clone()
        others = [i for i, kk in enumerate(ids) if kk != k]
        y[:, others] += torch.randn_like(y[:, others])
        assert_close(module(x, modality=mod)[:, rows], module(y, modality=mod)[:, rows])


def test_text_rows_before_any_image_are_text_attention_alone():
    """The empty image branch contributes 0, not a leak: text rows before the first image equal
    causal GQA over that text (DeepSpeed-VisualChat's finfo.min masking would add a uniform
    average over the earlier tokens there). Text after an image gets both branches."""
    spec = av.AttnSpec(64, 8, 2)
    mmca, gqa = make(spec), make(spec, name="gqa")
    gqa.load_state_dict(mmca.state_dict())
    ids = torch.tensor([segments((0, 4), (1, 3), (0, 3)), segments((0, 1), (1, 6), (0, 3))])
    x = x_of(2, 10)
    out, plain = mmca(x, modality=ids), gqa(x)
    assert_close(out[0, :4], plain[0, :4])
    assert_close(out[1, :1], plain[1, :1])
    assert not torch.allclose(out[0, 7:], plain[0, 7:])


def test_empty_branch_rows_have_finite_gradients():
    module = av.create("mmca", av.AttnSpec(64, 8, 2), visual_attention="full")
    ids = torch.tensor([segments((0, 3), (1, 4), (0, 3))])
    x = torch.randn(1, 10, 64, requires_grad=True)
    module(x, modality=ids).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad[:, 3:7].abs().sum() > 0


@pytest.mark.parametrize("visual_attention", VISUAL)
def test_per_example_layouts_equal_one_example_at_a_time(visual_attention):
    module = make(av.AttnSpec(64, 8, 2), visual_attention)
    ids = batch_ids(4, 18, seed=11)
    assert len({tuple(r) for r in ids.tolist()}) == 4  # four different layouts
    x = x_of(4, 18)
    batched = module(x, modality=ids)
    for row in range(4):
        assert_close(batched[row : row + 1], module(x[row : row + 1], modality=ids[row : row + 1]))


def decode(module, x, ids, chunks, *, pass_text_ids=True):
    """Run x (b, n, d) through a cache in chunks of the given sizes; return the outputs joined."""
    cache, outs, start = av.KVCache(), [], 0
    with torch.no_grad():
        for c in chunks:
            chunk = ids[:, start : start + c]
            text_only = not pass_text_ids and not chunk.any()
            outs.append(module(x[:, start : start + c], modality=None if text_only else chunk, cache=cache))
            start += c
    return torch.cat(outs, dim=1), cache


# round one: image 1 and a question; round two: a new image 2, text, then a third image
ROUNDS = segments((1, 4), (0, 3), (2, 3), (0, 2), (3, 2), (0, 2))  # n = 16


@pytest.mark.parametrize("visual_attention", VISUAL)
@pytest.mark.parametrize("backend", ["sdpa", "eager"])
@pytest.mark.parametrize("pass_text_ids", [True, False])
def test_a_new_image_in_a_later_round_equals_the_full_forward(visual_attention, backend, pass_text_ids):
    module = make(av.AttnSpec(64, 8, 2), visual_attention, backend).eval()
    ids = torch.tensor([ROUNDS, ROUNDS])
    x = x_of(2, len(ROUNDS))
    full = module(x, modality=ids)
    chunks = [7, 3, 1, 1, 2, 1, 1]  # prefill round one, the new image, decode, image 3, decode
    out, cache = decode(module, x, ids, chunks, pass_text_ids=pass_text_ids)
    assert_close(out, full)
    assert torch.equal(cache.get("modality"), ids)
    assert cache.n_visual is None  # not the prefix layout any more


def test_one_token_at_a_time_equals_the_full_forward():
    module = make(av.AttnSpec(64, 8, 2), "self").eval()
    ids = batch_ids(2, 15, seed=3)
    x = x_of(2, 15)
    out, _ = decode(module, x, ids, [1] * 15)
    assert_close(out, module(x, modality=ids))


def test_full_attention_refuses_an_image_split_across_calls():
    module = make(av.AttnSpec(64, 8, 2), "full").eval()
    ids = torch.tensor([ROUNDS])
    x = x_of(1, len(ROUNDS))
    cache = av.KVCache()
    with torch.no_grad():
        module(x[:, :8], modality=ids[:, :8], cache=cache)  # ends with the first token of image 2
        with pytest.raises(ValueError, match="image 2 continues from the cached tokens"):
            module(x[:, 8:10], modality=ids[:, 8:10], cache=cache)
    assert cache.length == 8  # the refused call left the cache alone


def test_truncate_keeps_modality_exact_so_a_decode_step_repeats():
    module = make(av.AttnSpec(64, 8, 2)).eval()
    ids = torch.tensor([ROUNDS])
    x = x_of(1, len(ROUNDS))
    cache = av.KVCache()
    with torch.no_grad():
        module(x[:, :12], modality=ids[:, :12], cache=cache)
        first = module(x[:, 12:14], modality=ids[:, 12:14], cache=cache)  # image 3
        cache.truncate(12)
        assert cache.fields["modality"] == (1, 12) and cache.length == 12
        assert_close(module(x[:, 12:14], modality=ids[:, 12:14], cache=cache), first)
    b, g, s, e = 1, 2, 14, 8
    assert cache.nbytes == 2 * b * g * s * e * 8 + b * s * 8  # k, v in float64, then the int64 ids


def test_prefix_prefill_then_a_new_image_leaves_the_prefix_fast_path():
    module = make(av.AttnSpec(64, 8, 2), "full").eval()
    ids = torch.tensor([segments((1, 4), (0, 3), (2, 2), (0, 2))])
    x = x_of(1, 11)
    cache = av.KVCache()
    with torch.no_grad():
        outs = [module(x[:, :7], n_visual=4, cache=cache)]
        assert cache.n_visual == 4
        outs.append(module(x[:, 7:9], modality=ids[:, 7:9], cache=cache))
        assert cache.n_visual is None
        outs.append(module(x[:, 9:], cache=cache))  # text, no ids needed
    assert_close(torch.cat(outs, dim=1), module(x, modality=ids))


def test_an_image_continued_from_a_prefix_prefill_equals_the_full_forward():
    module = make(av.AttnSpec(64, 8, 2), "self").eval()
    ids = torch.tensor([segments((1, 5), (0, 3))] * 2)
    x = x_of(2, 8)
    cache = av.KVCache()
    with torch.no_grad():
        outs = [
            module(x[:, :2], n_visual=2, cache=cache),
            module(x[:, 2:6], modality=ids[:, 2:6], cache=cache),
        ]
        assert cache.n_visual == 5  # still the prefix layout
        outs.append(module(x[:, 6:], cache=cache))
    assert_close(torch.cat(outs, dim=1), module(x, n_visual=5))


def test_works_under_fake_tensors():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        module = av.create("mmca", av.AttnSpec(64, 8, 2), visual_attention="full")
        ids = torch.zeros(2, 12, dtype=torch.long)
        out = module(torch.randn(2, 12, 64), modality=ids)
    assert out.shape == (2, 12, 64)


BAD = [
    (torch.zeros(2, 5, dtype=torch.long), r"modality has shape \(2, 5\); expected \(b, n\) = \(2, 6\)"),
    (torch.zeros(2, 6), "modality has dtype torch.float32; expected an integer dtype"),
    (torch.tensor([[0, 1, -2, 0, 0, 0]] * 2), r"modality has negative ids \[-2\]"),
    (
        torch.tensor([[1, 1, 0, 1, 0, 0]] * 2),
        "image id 1 of example 0 reappears at position 3 after other tokens",
    ),
    (
        torch.tensor([[0, 0, 0, 0, 0, 0], [1, 2, 1, 0, 0, 0]]),
        "image id 1 of example 1 reappears at position 2",
    ),
]


@pytest.mark.parametrize("variant", ["mmca", "concat", "gqa"])
@pytest.mark.parametrize("ids, message", BAD)
def test_bad_modality_is_a_value_error_naming_it(variant, ids, message):
    module = av.create(variant, av.AttnSpec(32, 4, 2))
    with pytest.raises(ValueError, match=message):
        module(torch.randn(2, 6, 32), modality=ids)


@pytest.mark.parametrize("variant", ["mmca", "gqa"])
def test_n_visual_and_modality_together_are_refused(variant):
    module = av.create(variant, av.AttnSpec(32, 4, 2))
    with pytest.raises(ValueError, match="n_visual=2 and modality were both given"):
        module(torch.randn(1, 6, 32), n_visual=2, modality=torch.zeros(1, 6, dtype=torch.long))


def test_an_image_reappearing_in_a_later_round_is_refused():
    module = av.create("mmca", av.AttnSpec(32, 4, 2)).eval()
    cache = av.KVCache()
    with torch.no_grad():
        module(torch.randn(1, 4, 32), modality=torch.tensor([[1, 1, 0, 0]]), cache=cache)
        with pytest.raises(ValueError, match="image id 1 of example 0 reappears at position 4"):
            module(torch.randn(1, 2, 32), modality=torch.tensor([[1, 0]]), cache=cache)
        with pytest.raises(ValueError, match="n_visual=2 with a KV cache already holding 4 tokens"):
            module(torch.randn(1, 2, 32), n_visual=2, cache=cache)
    assert cache.length == 4


# Every registered variant but mmca reads the layout as one causal stream (pgqa is random in eval).
UNIMODAL = [name for name in av.names() if name not in ("mmca", "pgqa")]


@pytest.mark.parametrize("name", UNIMODAL)
def test_unimodal_variants_ignore_a_valid_modality_and_reject_a_bad_one(name):
    spec = av.AttnSpec(64, 8, 2)
    x, ids = x_of(2, 10), batch_ids(2, 10, seed=1)
    module = av.create(name, spec).double().eval()
    with torch.no_grad():
        assert torch.equal(module(x, modality=ids), module(x))
    with pytest.raises(ValueError, match="negative"):
        module(x, modality=-ids - 1)
    with pytest.raises(ValueError, match="modality has shape"):
        module(x, modality=ids[:, :3])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("visual_attention", VISUAL)
def test_interleaved_runs_on_device(device, dtype, visual_attention):
    tol = dict(atol=3e-2, rtol=3e-2) if dtype == torch.bfloat16 else dict(atol=1e-5, rtol=1e-4)
    ref = make(av.AttnSpec(64, 8, 2), visual_attention)
    fast = av.create("mmca", av.AttnSpec(64, 8, 2), visual_attention=visual_attention).to(device, dtype)
    fast.load_state_dict(ref.state_dict())
    ids = batch_ids(3, 21, seed=4)
    x = x_of(3, 21)
    out = fast(x.to(device, dtype), modality=ids.to(device))
    assert_close(out.double().cpu(), reference(ref, x, modality=ids), **tol)
