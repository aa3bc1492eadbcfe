"""digits' uptraining at equal g with the three groupings (gqa's `grouping`, `digits_grouping`)."""

import pytest
import torch

import attn_variants as av
from harness.accuracy import runner, tasks
from harness.accuracy.config import AccuracyConfig
from harness.accuracy.model import ModelConfig, TinyTransformer, attention_inputs, uptrain


def config(variant="mha", g=None):
    return ModelConfig(
        variant=variant, n_out=7, max_len=12, vocab=11, dim=24, n_heads=6, n_kv_heads=g, layers=2
    )


def test_gqa_gets_one_uptrained_row_per_grouping_and_other_variants_one():
    cfg = AccuracyConfig(
        variants=("gqa", "kdgqa"), tasks=("digits",), seeds=(0, 1), digits_scratch=False,
        digits_grouping=("neighbour", "weights", "activations"),
    )  # fmt: skip
    inits = {(c.choice.name, c.init) for c in runner.cells(cfg) if c.seed == 1}
    assert inits == {
        ("gqa", "uptrained"), ("gqa", "uptrained-weights"), ("gqa", "uptrained-activations"),
        ("kdgqa", "uptrained"),
    }  # fmt: skip
    assert tasks.unsupported("digits", "kdgqa", "uptrained-weights").startswith("kdgqa has no 'grouping'")


def test_bad_grouping_names_the_choices():
    with pytest.raises(ValueError, match=r"digits_grouping=\['nearest'\] must name some of \['neighbour'"):
        AccuracyConfig(digits_grouping=("nearest",))


@pytest.mark.parametrize("grouping", ["weights", "activations"])
def test_uptrain_groups_every_layer_as_from_mha_does(grouping):
    torch.manual_seed(0)
    source = TinyTransformer(config()).double()
    tokens = torch.randint(0, 11, (3, 12))
    target = uptrain(source, config("gqa", 2), grouping, tokens=tokens)
    inputs = attention_inputs(source, tokens=tokens)
    assert len(inputs) == 2 and inputs[0].shape == (3, 12, 24)
    for src, dst, x in zip(source.blocks, target.blocks, inputs, strict=True):
        want = av.from_mha(src.attn, 2, grouping=grouping, calibration=x)
        assert dst.attn.grouping == want.grouping
        assert torch.equal(dst.attn.k_proj.weight, want.k_proj.weight)
    assert uptrain(source, config("gqa", 2)).blocks[0].attn.grouping is None  # neighbours


def test_activations_need_the_attention_to_run():
    cfg = ModelConfig(
        variant="mha", n_out=7, max_len=12, vocab=11, dim=24, n_heads=6, layers=2, ablate="zero-attention"
    )
    source = TinyTransformer(cfg).double()
    with pytest.raises(ValueError, match="0 of 2 attention layers ran"):
        attention_inputs(source, tokens=torch.randint(0, 11, (2, 12)))
