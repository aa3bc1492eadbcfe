"""`harness.conform`: every registered variant honours the contract, and a plugin with one
defect fails the property that defect breaks (tests/harness/conform/plugins/, one file each)."""

import re
from pathlib import Path

import pytest

import attn_variants as av
from attn_variants import plugins
from harness.conform import NAMES, ConformConfig, check

PLUGINS = Path(__file__).parent / "plugins"
CFG = ConformConfig()


@pytest.mark.parametrize("name", av.names())
def test_every_registered_variant_conforms(name):
    verdicts = check(name, {}, CFG)
    assert [v.prop for v in verdicts] == list(NAMES)
    failed = [v for v in verdicts if v.status == "fail"]
    assert not failed, failed


@pytest.mark.parametrize("choice", [("mmca", {"visual_attention": "full"}), ("kdgqa", {"scope": "sample"})])
def test_options_conform_too(choice):
    failed = [v for v in check(*choice, CFG) if v.status == "fail"]
    assert not failed, failed


def test_declarations_are_shown_with_what_was_measured():
    by_prop = {v.prop: v for v in check("kdgqa", {}, CFG)}
    assert by_prop["causal"].status == "declared" and "leak" in by_prop["causal"].detail
    assert by_prop["batch"].status == "declared"
    assert {v.prop: v for v in check("kdgqa", {"scope": "sample"}, CFG)}["batch"].detail.endswith(
        "moved by 0"
    )
    assert {v.prop: v for v in check("pgqa", {}, CFG)}["decode"].status == "declared"
    assert {v.prop: v for v in check("concat", {}, CFG)}["multimodal"].status == "declared"


@pytest.mark.parametrize(
    "plugin, prop, measured",
    [
        ("leaky", "causal", r"outputs up to t changed by [\d.e-]+ when tokens after t changed"),
        ("forgetful", "decode", r"prefill \+ decode differs from one forward by text [\d.e-]+"),
        ("halfcache", "cache", r"declared \d+ B at b=2, s=5; the cache holds \d+ B \(k \(2, 4, 5, 4\)"),
        ("detached", "grad", r"no gradient: \['k_proj.weight'\]"),
        ("hostread", "flops", r"fwd: counting on the meta device raised .*declare flops_on_meta=False"),
        ("coupled", "batch", r"example 0 changed by [\d.e-]+ when example 1 changed"),
        ("seestext", "multimodal", r"image-token outputs changed by [\d.e-]+ when only text changed"),
        ("unragged", "ragged", r"lengths \[5, 3\]: a ragged decode step differs from each request"),
    ],
)
def test_one_defect_fails_its_property(scratch_registry, plugin, prop, measured):
    (name,) = plugins.load(str(PLUGINS / f"{plugin}.py"))
    verdicts = {v.prop: v for v in check(name, {}, CFG)}
    assert verdicts[prop].status == "fail", verdicts[prop]
    assert re.search(measured, verdicts[prop].detail), verdicts[prop]
    # Consequences of the same defect: a leaky prefill also breaks decode; in a ragged batch a
    # short request's keys are followed by padding, which leaky and forgetful read, and the
    # batch mean of coupled differs from one request's.
    consequences = {"leaky": {"decode", "ragged"}, "forgetful": {"ragged"}, "coupled": {"ragged"}}
    unrelated = consequences.get(plugin, set())
    others = [v for v in verdicts.values() if v.status == "fail" and v.prop not in {prop, *unrelated}]
    assert not others, others


def test_config_rejects_shapes_that_cannot_test_anything():
    with pytest.raises(ValueError, match="batch=1 must be >= 2"):
        ConformConfig(batch=1)
    with pytest.raises(ValueError, match=r"n_visual=4 <= prefill=3"):
        ConformConfig(prefill=3)
    with pytest.raises(ValueError, match="not divisible"):
        ConformConfig(heads=6, kv_heads=4)
