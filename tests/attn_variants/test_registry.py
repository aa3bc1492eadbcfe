import pytest
import torch

import attn_variants as av
from attn_variants.registry import register


def test_names_sorted_and_contains_presets():
    names = av.names()
    assert names == sorted(names)
    assert {"mha", "mqa", "gqa"} <= set(names)


def test_unknown_variant_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown variant 'nope'.*'gqa'"):
        av.create("nope", av.AttnSpec(32, 4))


def test_register_twice_is_an_error():
    with pytest.raises(ValueError, match="'gqa' is already registered"):
        register("gqa", description="dup", paper="x")(torch.nn.Identity)


def test_unknown_option_names_valid_options():
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['flavour'\].*'backend'"):
        av.create("gqa", av.AttnSpec(32, 4, 2), flavour="x")


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown backend 'cuda_magic'; valid backends"):
        av.create("gqa", av.AttnSpec(32, 4, 2), backend="cuda_magic")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(dim=30, n_heads=4), "dim=30 is not divisible by n_heads=4"),
        (dict(dim=48, n_heads=12, n_kv_heads=5), "n_heads=12 is not divisible by n_kv_heads=5"),
        (dict(dim=32, n_heads=4, n_kv_heads=8), "n_kv_heads=8 is larger than n_heads=4"),
        (dict(dim=0, n_heads=4), "dim=0 must be a positive integer"),
        (dict(dim=32, n_heads=-4), "n_heads=-4 must be a positive integer"),
        (dict(dim=32, n_heads=4, dropout=1.5), "dropout=1.5"),
    ],
)
def test_bad_specs_name_their_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        av.AttnSpec(**kwargs)


def test_presets_fix_kv_heads():
    spec = av.AttnSpec(64, 8, 2)
    assert av.create("mha", spec).spec.n_kv_heads == 8
    assert av.create("mqa", spec).spec.n_kv_heads == 1
    assert av.create("gqa", spec).spec.n_kv_heads == 2
    assert av.info("mqa").resolve(spec).n_kv_heads == 1


def test_every_entry_has_metadata():
    for name in av.names():
        entry = av.info(name)
        assert entry.description and entry.paper.startswith("https://")
        assert set(entry.modes) <= set(av.MODES)
        assert "backend" in entry.options
