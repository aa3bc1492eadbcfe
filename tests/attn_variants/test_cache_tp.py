"""Cache bytes per device under tensor parallelism: each design's replication rule, and Table 5
of Zadouri, Strauss, Dao 2025 (arXiv 2505.21487) reproduced exactly by the registry."""

import pytest
import torch

import attn_variants as av

# Table 5's config: d = 2048, h = 16, e = 128, g = 4 (GQA-4, GTA-4), r = 64, bf16; MLA with
# kv_lora_rank=512, qk_rope_head_dim=64; GLA-2 at its defaults (kv = 4e, r = e/2 = 64).
TABLE5 = av.AttnSpec(2048, 16, 4)
DESIGNS = [  # (variant, spec, options, bytes per token per layer at TP=1, at TP=2)
    ("mha", TABLE5, {}, 8192, 4096),
    ("gqa", TABLE5, {}, 2048, 1024),
    ("gta", TABLE5, {"rope_dim": 64}, 1152, 640),
    ("gla", TABLE5, {"n_latent_heads": 2}, 1152, 640),
    ("mla", TABLE5, {"kv_lora_rank": 512, "qk_rope_head_dim": 64}, 1152, 1152),
]


@pytest.mark.parametrize("name, spec, options, tp1, tp2", DESIGNS)
def test_table5_bytes_per_token_per_layer(name, spec, options, tp1, tp2):
    entry = av.info(name)
    assert entry.kv_cache_bytes(spec, options, 1, 1, torch.bfloat16) == tp1  # tp=1 is the default
    assert entry.kv_cache_bytes(spec, options, 1, 1, torch.bfloat16, tp=1) == tp1
    assert entry.kv_cache_bytes(spec, options, 1, 1, torch.bfloat16, tp=2) == tp2
    assert entry.kv_cache_bytes(spec, options, 3, 10, torch.bfloat16, tp=2) == 30 * tp2


@pytest.mark.parametrize("name, spec, options, tp1, tp2", DESIGNS)
def test_tp1_is_what_the_real_cache_stores(name, spec, options, tp1, tp2):
    """At tp=1 the figure is the real cache's nbytes (one token of bf16 at Table 5's sizes)."""
    m = av.create(name, spec, **options).to(torch.bfloat16).eval()
    cache = av.KVCache()
    with torch.no_grad():
        m(torch.randn(1, 1, spec.dim, dtype=torch.bfloat16), cache=cache)
    assert cache.nbytes == tp1


def per_device(name, spec, tp, **options):
    return av.info(name).cache_elements(spec, options, tp=tp)


def test_kv_heads_split_while_there_are_enough_then_replicate():
    spec = av.AttnSpec(512, 8, 2)  # e = 64, g = 2
    assert [per_device("gqa", spec, tp) for tp in (1, 2, 4, 8)] == [256, 128, 128, 128]
    assert [per_device("mha", spec, tp) for tp in (1, 2, 4, 8)] == [1024, 512, 256, 128]
    assert [per_device("mqa", spec, tp) for tp in (1, 2, 8)] == [128, 128, 128]
    assert per_device("kdgqa", spec, 2) == 128  # the GQA family's default rule
    # gta: the tied heads split like GQA's, the rope key (32) is on every device
    assert [per_device("gta", spec, tp) for tp in (1, 2, 4)] == [2 * 64 + 32, 64 + 32, 64 + 32]


def test_latents_split_by_latent_head_and_mla_replicates():
    spec = av.AttnSpec(512, 8)  # e = 64: gla kv = 256 in L latent heads, r = 32
    assert [per_device("gla", spec, tp) for tp in (1, 2, 4)] == [288, 128 + 32, 128 + 32]
    assert [per_device("gla", spec, tp, n_latent_heads=4) for tp in (1, 2, 4, 8)] == [288, 160, 96, 96]
    assert [per_device("mla", spec, tp) for tp in (1, 2, 8)] == [288, 288, 288]


def test_uneven_split_takes_the_largest_share():
    spec = av.AttnSpec(96, 6, 3)  # g = 3 over tp = 2: one device holds 2 KV heads
    assert per_device("gqa", spec, 2) == 2 * 2 * 16


def test_a_variant_without_a_rule_is_taken_as_replicated(temp_variant):
    class Plugin(torch.nn.Module):
        pass

    name = temp_variant(Plugin, cache_per_token=lambda s, o: 7)
    assert per_device(name, av.AttnSpec(32, 4), 4) == 7


@pytest.mark.parametrize(
    "tp, match", [(0, "tp=0 must be a positive integer"), (3, "tp=3 does not divide n_heads=16")]
)
def test_bad_tp_raises(tp, match):
    with pytest.raises(ValueError, match=match):
        av.info("gqa").kv_cache_bytes(TABLE5, {}, 1, 1, torch.bfloat16, tp=tp)
