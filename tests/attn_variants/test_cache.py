"""KVCache: named per-token fields on their own token axes, truncated together."""

import pytest
import torch

import attn_variants as av


def test_update_returns_everything_so_far_and_grows():
    cache = av.KVCache()
    k1, v1 = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 5, 4)  # (b, g, n, e)
    k2, v2 = torch.randn(2, 3, 1, 4), torch.randn(2, 3, 1, 4)
    cache.update(k1, v1)
    k, v = cache.update(k2, v2)
    torch.testing.assert_close(k, torch.cat([k1, k2], 2))
    torch.testing.assert_close(v, torch.cat([v1, v2], 2))
    assert cache.length == 6
    assert cache.nbytes == 2 * 2 * 3 * 6 * 4 * 4


def test_fields_on_different_axes_truncate_together():
    cache = av.KVCache()
    latent = torch.randn(2, 7, 16)  # (b, s, kv_lora), token axis 1
    modality = torch.randint(0, 3, (2, 7))  # (b, s)
    sq = torch.rand(2, 3, 7)  # (b, g, s)
    cache.append(1, kv=latent, modality=modality)
    cache.append(2, sq=sq)
    assert cache.fields == {"kv": (2, 7, 16), "modality": (2, 7), "sq": (2, 3, 7)}
    cache.truncate(4)
    assert cache.length == 4
    torch.testing.assert_close(cache.get("kv"), latent[:, :4])
    torch.testing.assert_close(cache.get("modality"), modality[:, :4])
    torch.testing.assert_close(cache.get("sq"), sq[..., :4])
    assert cache.nbytes == 2 * 4 * 16 * 4 + 2 * 4 * 8 + 2 * 3 * 4 * 4  # float32, int64, float32


def test_append_after_truncate_overwrites_the_forgotten_tokens():
    cache = av.KVCache()
    cache.append(1, c=torch.zeros(1, 4, 2))
    cache.truncate(2)
    (c,) = cache.append(1, c=torch.ones(1, 3, 2))
    torch.testing.assert_close(c, torch.tensor([[[0.0, 0], [0, 0], [1, 1], [1, 1], [1, 1]]]))


def test_mismatched_shapes_and_counts_are_value_errors():
    cache = av.KVCache()
    cache.update(torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4))
    with pytest.raises(ValueError, match=r"new 'k' values of shape \(1, 3, 1, 4\)"):
        cache.update(torch.randn(1, 3, 1, 4), torch.randn(1, 3, 1, 4))
    with pytest.raises(ValueError, match="different token counts"):
        cache.append(1, a=torch.randn(1, 2), b=torch.randn(1, 3))
    with pytest.raises(ValueError, match=r"length=9 must be in \[0, 3\]"):
        cache.truncate(9)


def test_missing_field_is_none():
    cache = av.KVCache()
    assert cache.get("kv") is None and "kv" not in cache and cache.length == 0 and cache.nbytes == 0
