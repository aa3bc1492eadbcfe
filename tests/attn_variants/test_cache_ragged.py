"""KVCache with per-example lengths and the paged layout: appends, truncates, bytes, pages."""

from __future__ import annotations

import pytest
import torch

import attn_variants as av
from attn_variants import ragged
from attn_variants.paged import PageTable


def filled(layout: str, lengths: list[int], page_size: int = 4) -> tuple[av.KVCache, torch.Tensor]:
    b, n = len(lengths), max(lengths)
    k = torch.arange(b * 2 * n * 3, dtype=torch.float64).view(b, 2, n, 3)  # (b, g, n, e)
    cache = av.KVCache(layout=layout, page_size=page_size, seed=5)
    cache.update(k, -k)
    cache.truncate(lengths)
    return cache, k


@pytest.mark.parametrize("layout", ["padded", "paged"])
def test_appends_land_at_each_examples_own_end(layout):
    cache, k = filled(layout, [2, 5, 1])
    new = torch.full((3, 2, 2, 3), -7.0, dtype=torch.float64)  # (b, g, 2, e)
    keys, values = cache.update(new, new)
    assert cache.lengths == [4, 7, 3] and cache.ragged and cache.length == 7
    assert keys.shape == (3, 2, 7, 3)
    for i, n in enumerate([2, 5, 1]):
        torch.testing.assert_close(keys[i, :, :n], k[i, :, :n])
        assert (keys[i, :, n : n + 2] == -7).all()
    assert cache.lengths_of("k", "cpu").tolist() == [4, 7, 3]


@pytest.mark.parametrize("layout", ["padded", "paged"])
def test_bytes_needed_and_allocated(layout):
    cache, _ = filled(layout, [2, 5, 1], page_size=4)
    per_token = 2 * 2 * 3 * 8  # k and v, g=2, e=3, float64
    assert cache.nbytes_needed == (2 + 5 + 1) * per_token
    pages = 1 + 2 + 1
    expected = 3 * 5 * per_token if layout == "padded" else pages * 4 * per_token
    assert cache.nbytes == expected


def test_uniform_lengths_keep_the_unmasked_path():
    cache, _ = filled("padded", [4, 4, 4])
    assert not cache.ragged and cache.nbytes == cache.nbytes_needed
    assert not ragged.active(cache)


def test_bad_truncates_name_the_values():
    cache, _ = filled("padded", [2, 5, 1])
    with pytest.raises(ValueError, match=r"lengths=\[3, 5, 1\]"):
        cache.truncate([3, 5, 1])  # example 0 holds only 2
    with pytest.raises(ValueError, match="3 examples"):
        cache.truncate([1, 1])
    with pytest.raises(ValueError, match="layout='pages'"):
        av.KVCache(layout="pages")
    with pytest.raises(ValueError, match="page_size=0"):
        av.KVCache(layout="paged", page_size=0)


def test_pages_are_a_seeded_permutation_never_shared():
    table = PageTable(page_size=2, seed=11)
    table.reserve([7, 3, 10])
    held = [p for pages in table.pages for p in pages]
    assert len(held) == len(set(held)) == 4 + 2 + 5
    assert sorted(held) == list(range(table.pool))
    assert held != sorted(held)  # not secretly contiguous
    again = PageTable(page_size=2, seed=11)
    again.reserve([7, 3, 10])
    assert again.pages == table.pages


def test_released_pages_are_reused_by_a_repeated_step():
    cache, _ = filled("paged", [4, 8], page_size=4)
    before = [list(p) for p in cache.pages.pages]
    new = torch.zeros(2, 2, 1, 3, dtype=torch.float64)
    cache.update(new, new)  # both examples cross into a fresh page
    grown = [list(p) for p in cache.pages.pages]
    cache.truncate([4, 8])
    assert cache.pages.pages == before
    cache.update(new, new)
    assert cache.pages.pages == grown


def test_key_mask_per_example_positions():
    mask = ragged.key_mask(torch.tensor([1, 3]), n=2, s=4, causal=True)  # (b, 1, n, s)
    # example 1 holds 3 tokens, its 2 queries sit at positions 1 and 2
    assert mask[1, 0].tolist() == [[True, True, False, False], [True, True, True, False]]
    full = ragged.key_mask(torch.tensor([1, 3]), n=2, s=4, causal=False)
    assert full[1, 0, 0].tolist() == [True, True, True, False]


def test_mmca_prefix_cut_inside_the_image_writes_the_ids_out():
    spec = av.AttnSpec(16, 2, 1)
    module = av.create("mmca", spec).double().eval()
    cache = av.KVCache()
    with torch.no_grad():
        cache.fill(module, torch.randn(2, 6, 16, dtype=torch.float64), n_visual=3)
    cache.truncate([2, 6])  # example 0 keeps 2 of its 3 image tokens, example 1 all 3
    assert cache.n_visual is None
    assert cache.get("modality").tolist() == [[1, 1, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0]]
    assert cache.field_lengths("modality") == [2, 6]
