"""The one decode path (attn_variants/decode.py): every layout equals the reference decode."""

import pytest
import torch
from torch.testing import assert_close

import attn_variants as av
from attn_variants import backends, decode

from ..conftest import DEVICES

SHAPES = [  # (b, h, g, n, s, e): n queries at the end of s keys; odd sizes included
    (1, 16, 4, 1, 37, 8),
    (2, 6, 3, 1, 5, 5),
    (3, 8, 1, 1, 19, 4),
    (2, 12, 4, 3, 11, 7),
    (1, 5, 5, 2, 9, 3),
    (2, 6, 2, 16, 16, 4),  # n = s: a whole causal prompt
    (1, 4, 2, 1, 1, 6),  # one key
]
BACKENDS = ["sdpa", "eager", "sdpa_math", "sdpa_flash"]


def inputs(b, h, g, n, s, e, *, dtype=torch.float64, device="cpu", seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, n, e, generator=gen, dtype=dtype).to(device)
    k, v = torch.randn(2, b, g, s, e, generator=gen, dtype=dtype).to(device)
    return q, k, v


@pytest.mark.parametrize("b, h, g, n, s, e", SHAPES)
@pytest.mark.parametrize("layout", decode.LAYOUTS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("causal", [True, False])
def test_every_layout_equals_the_reference_in_float64(b, h, g, n, s, e, layout, backend, causal):
    q, k, v = inputs(b, h, g, n, s, e)
    out = decode.attend(q, k, v, backend=backend, causal=causal, layout=layout)
    assert out.shape == (b, h, n, e)
    assert_close(out, backends.eager(q, k, v, causal=causal), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("b, h, g, n, s, e", [SHAPES[0], SHAPES[3]])
@pytest.mark.parametrize("layout", decode.LAYOUTS)
def test_flex_equals_the_reference_in_float64(b, h, g, n, s, e, layout):
    """flex builds a block mask per shape (seconds on CPU): two shapes, one and several queries."""
    q, k, v = inputs(b, h, g, n, s, e)
    out = decode.attend(q, k, v, backend="flex", causal=True, layout=layout)
    assert_close(out, backends.eager(q, k, v, causal=True), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("b, h, g, n, s, e", [(2, 8, 2, 1, 13, 4), (2, 6, 3, 4, 10, 5)])
@pytest.mark.parametrize("layout", ["heads", "rows"])
def test_a_key_mask_is_kept_in_every_layout(b, h, g, n, s, e, layout):
    """A (b, 1, n, s) mask (a ragged batch's padding, interleaved MMCA's groups) reaches every row."""
    q, k, v = inputs(b, h, g, n, s, e)
    mask = torch.rand(b, 1, n, s, generator=torch.Generator().manual_seed(1)) < 0.6
    mask[..., 0] = True  # no empty row: SDPA gives NaN there
    out = decode.attend(q, k, v, backend="sdpa", causal=False, mask=mask, layout=layout)
    assert_close(out, backends.eager(q, k, v, causal=False, mask=mask), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", ["sdpa", "eager"])
def test_rows_layout_with_several_queries_does_not_leak(backend):
    """Query i of n sits at s - n + i: changing keys and values after it leaves it unchanged."""
    b, h, g, n, s, e = 2, 8, 2, 5, 12, 4
    q, k, v = inputs(b, h, g, n, s, e)
    out = decode.attend(q, k, v, backend=backend, causal=True, layout="rows")
    for i in range(n):
        later = s - n + i + 1
        k2, v2 = k.clone(), v.clone()
        k2[:, :, later:] += 3.0
        v2[:, :, later:] -= 2.0
        again = decode.attend(q, k2, v2, backend=backend, causal=True, layout="rows")
        assert_close(again[:, :, : i + 1], out[:, :, : i + 1], rtol=0, atol=0)


def test_rows_is_chosen_for_decode_and_heads_where_it_cannot_help():
    assert decode.choose_layout("sdpa", h=16, g=4, n=1) == "rows"
    assert decode.choose_layout("sdpa", h=16, g=1, n=4) == "rows"
    assert decode.choose_layout("sdpa", h=16, g=16, n=1) == "heads"  # MHA: the same call
    assert decode.choose_layout("sdpa", h=16, g=4, n=decode.MAX_ROWS_QUERIES + 1) == "heads"
    assert decode.choose_layout("flex", h=16, g=4, n=1) == "rows"
    assert decode.choose_layout("flex", h=16, g=4, n=2) == "heads"


def test_rows_is_a_view_of_the_projection_for_one_query():
    """No copy of q for one query: the projection's (b, 1, h, e) buffer read as (b, g, h/g, e)."""
    b, h, g, e = 2, 8, 2, 4
    q = torch.randn(b, 1, h * e).view(b, 1, h, e).transpose(1, 2)  # (b, h, 1, e), as `project`
    assert decode.as_rows(q, g).data_ptr() == q.data_ptr()
    assert_close(decode.from_rows(decode.as_rows(q, g), h, 1), q, rtol=0, atol=0)


def test_bad_layout_and_heads_raise_with_the_values():
    q, k, v = inputs(1, 6, 4, 1, 3, 2)
    with pytest.raises(ValueError, match="h=6 .* g=4"):
        decode.attend(q, k, v, backend="sdpa", causal=True)
    q, k, v = inputs(1, 4, 2, 1, 3, 2)
    with pytest.raises(ValueError, match="layout='cols' .*auto"):
        decode.attend(q, k, v, backend="sdpa", causal=True, layout="cols")


@pytest.mark.parametrize("variant", ["gqa", "mqa", "mha", "concat", "pgqa", "moh", "mmca"])
def test_variants_decode_through_the_helper(monkeypatch, variant):
    """Every grouped variant's decode step calls decode.attend (and nothing else attends)."""
    calls = []
    real = decode.attend

    def recording(q, k, v, **kwargs):
        calls.append((q.shape[1], k.shape[1]))
        return real(q, k, v, **kwargs)

    monkeypatch.setattr(decode, "attend", recording)
    spec = av.AttnSpec(16, 4, 2)
    module = av.create(variant, spec).eval()
    cache = av.KVCache()
    with torch.no_grad():
        cache.fill(module, torch.randn(1, 6, 16))
        module(torch.randn(1, 1, 16), cache=cache)
    g = module.spec.n_kv_heads
    assert calls and all(c == (4, g) for c in calls)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["heads", "rows"])
def test_layouts_agree_on_every_device(device, layout):
    """float32 on the device (CUDA: the fused kernels) against float64 eager on the CPU."""
    q, k, v = inputs(2, 8, 2, 1, 300, 16, dtype=torch.float32, device=device)
    out = decode.attend(q, k, v, backend="sdpa", causal=True, layout=layout)
    ref = backends.eager(q.double().cpu(), k.double().cpu(), v.double().cpu(), causal=True)
    assert_close(out.double().cpu(), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("variant", ["kdgqa", "dgqa"])
def test_key_driven_decode_takes_the_decode_path(monkeypatch, variant):
    """KDGQA/DGQA lay out their uneven groups as rows (b, g, rows, e) themselves, then take the
    decode path like every variant."""
    calls = []
    real = decode.attend

    def recording(q_rows, k, v, **kwargs):
        calls.append((q_rows.shape[1], k.shape[1]))
        return real(q_rows, k, v, **kwargs)

    monkeypatch.setattr(decode, "attend", recording)
    module = av.create(variant, av.AttnSpec(16, 4, 2)).eval()
    cache = av.KVCache()
    with torch.no_grad():
        cache.fill(module, torch.randn(1, 6, 16))
        module(torch.randn(1, 1, 16), cache=cache)
    assert calls == [(2, 2)]
