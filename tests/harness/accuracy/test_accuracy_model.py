"""The tiny transformer: uptraining from MHA, the zero-attention ablation, n_visual, cache size."""

import pytest
import torch
from torch.testing import assert_close

import attn_variants as av
from harness.accuracy.model import ModelConfig, TinyTransformer, uptrain

F64 = dict(dtype=torch.float64)


def config(variant="mha", g=None, **kw):
    base = dict(variant=variant, n_out=7, max_len=12, vocab=11, dim=24, n_heads=6, n_kv_heads=g, layers=2)
    return ModelConfig(**(base | kw))


def pooled(weight, h, g):
    """Reference mean-pooling, head by head: KV head j = mean of source heads j*h/g .. (j+1)*h/g - 1."""
    e = weight.shape[0] // h
    heads = [weight[i * e : (i + 1) * e] for i in range(h)]
    size = h // g
    return torch.cat([sum(heads[j * size : (j + 1) * size]) / size for j in range(g)])


@pytest.mark.parametrize(("variant", "g"), [("gqa", 2), ("gqa", 3), ("mqa", None), ("gqa", 6)])
def test_uptrained_weights_are_the_mean_pooled_mha_weights(variant, g):
    source = TinyTransformer(config()).to(**F64)
    target = uptrain(source, config(variant, g))
    g_resolved = target.cfg.spec().n_kv_heads
    for src, dst in zip(source.blocks, target.blocks, strict=True):
        for proj in ("k_proj", "v_proj"):
            want = pooled(getattr(src.attn, proj).weight, 6, g_resolved)
            assert_close(getattr(dst.attn, proj).weight, want)
        assert torch.equal(dst.attn.q_proj.weight, src.attn.q_proj.weight)
        assert torch.equal(dst.attn.o_proj.weight, src.attn.o_proj.weight)
    rest = {k: v for k, v in source.state_dict().items() if ".attn." not in k}
    for name, value in rest.items():
        assert torch.equal(target.state_dict()[name], value), name


@pytest.mark.parametrize(("batch", "n", "g", "causal"), [(2, 12, 2, True), (1, 5, 3, False), (3, 1, 1, True)])
def test_uptrained_first_forward_equals_a_manually_pooled_model(batch, n, g, causal):
    source = TinyTransformer(config(causal=causal)).to(**F64)
    target = uptrain(source, config("gqa", g, causal=causal))
    manual = TinyTransformer(config("gqa", g, causal=causal)).to(**F64)
    state = dict(source.state_dict())
    for key in list(state):
        if key.endswith(("k_proj.weight", "v_proj.weight")):
            state[key] = pooled(state[key], 6, g)
    manual.load_state_dict(state)
    tokens = torch.randint(0, 11, (batch, n))
    assert_close(target(tokens=tokens), manual(tokens=tokens))
    if g < 6:  # pooling changes the function: the check above is not MHA against itself
        assert not torch.allclose(target(tokens=tokens), source(tokens=tokens))


def test_uptraining_needs_an_mha_source():
    with pytest.raises(ValueError, match="MHA source"):
        uptrain(TinyTransformer(config("gqa", 2)), config("gqa", 1))


def test_zero_attention_makes_each_position_blind_to_the_others():
    model = TinyTransformer(config(ablate="zero-attention", causal=False)).to(**F64)
    tokens = torch.randint(0, 11, (2, 8))
    changed = tokens.clone()
    changed[:, 0] = (changed[:, 0] + 1) % 11
    out, out2 = model(tokens=tokens), model(tokens=changed)
    assert_close(out[:, 1:], out2[:, 1:])  # other positions never see token 0
    assert not torch.allclose(out[:, 0], out2[:, 0])
    live = TinyTransformer(config(causal=False)).to(**F64)
    assert not torch.allclose(live(tokens=tokens)[:, 1:], live(tokens=changed)[:, 1:])


def test_bad_ablation_is_rejected():
    with pytest.raises(ValueError, match="ablate='zeros'"):
        config(ablate="zeros")


class Spy(av.GroupedQueryAttention):
    seen: list = []

    def forward(self, x, *, n_visual=0, cache=None):
        Spy.seen.append(n_visual)
        return super().forward(x, n_visual=n_visual, cache=cache)


def test_n_visual_is_the_patch_count_only_when_text_follows(temp_variant):
    cfg = config(temp_variant(Spy, multimodal=True), 2, patch_dim=4)
    model = TinyTransformer(cfg)
    Spy.seen = []
    model(tokens=torch.zeros(1, 3, dtype=torch.long), patches=torch.zeros(1, 5, 4))
    model(patches=torch.zeros(1, 5, 4))
    assert Spy.seen == [5, 5, 0, 0]  # two layers, then the patches-only call


def test_kv_cache_bytes_counts_every_layer_and_the_resolved_g():
    model = TinyTransformer(config("mqa", 3))  # mqa's preset: g = 1
    assert model.kv_cache_bytes(10) == 2 * 2 * 1 * 10 * 4 * 4  # L * 2 * g * n * e * float32
    assert TinyTransformer(config()).kv_cache_bytes(10) == 6 * model.kv_cache_bytes(10)


def test_sequences_longer_than_max_len_are_rejected():
    with pytest.raises(ValueError, match="max_len=12"):
        TinyTransformer(config())(tokens=torch.zeros(1, 13, dtype=torch.long))
