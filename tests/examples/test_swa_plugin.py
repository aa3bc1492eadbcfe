"""The example outside variant (examples/plugin: sliding-window GQA, as in Mistral), loaded as a
user would with `--plugin FILE`: it computes the window it claims, and it conforms."""

from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

import attn_variants as av
from attn_variants import plugins
from harness.conform import ConformConfig, check

FILE = Path(__file__).parents[2] / "examples" / "plugin" / "attnbench_swa.py"


@pytest.fixture
def swa(scratch_registry):
    if "swa" not in av.names():  # installed (pip install examples/plugin): already registered
        plugins.load(str(FILE))
    return "swa"


def reference(module, x, window):
    """Eager softmax over keys i - W < j <= i, each query head reading KV head i // (h/g)."""
    q, k, v = module.project(x)  # (b, h, n, e), (b, g, n, e), (b, g, n, e)
    h, g, n = q.shape[1], k.shape[1], x.shape[1]
    k, v = k.repeat_interleave(h // g, dim=1), v.repeat_interleave(h // g, dim=1)  # (b, h, n, e)
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5  # (b, h, n, n)
    scores = scores.masked_fill(~((j <= i) & (j > i - window)), float("-inf"))
    return module.merge(scores.softmax(-1) @ v)  # (b, h, n, e) -> (b, n, d)


@pytest.mark.parametrize("d, h, g, n, window", [(32, 4, 2, 13, 3), (48, 6, 3, 9, 1), (24, 2, 1, 17, 16)])
def test_the_window_against_an_eager_reference(swa, d, h, g, n, window):
    module = av.create(swa, av.AttnSpec(d, h, g), sliding_window=window).double()
    x = torch.randn(2, n, d, dtype=torch.float64)
    assert_close(module(x), reference(module, x, window))


def test_a_window_longer_than_the_sequence_is_gqa(swa):
    spec = av.AttnSpec(32, 4, 2)
    module = av.create(swa, spec, sliding_window=64).double()
    gqa = av.create("gqa", spec).double()
    gqa.load_state_dict(module.state_dict())  # the same parameter names: HF's q/k/v/o_proj
    x = torch.randn(2, 19, 32, dtype=torch.float64)
    assert_close(module(x), gqa(x))


def test_it_conforms_with_a_window_inside_the_sequence(swa):
    failed = [v for v in check(swa, {"sliding_window": 3}, ConformConfig()) if v.status == "fail"]
    assert not failed, failed
    assert av.info(swa).origin != "built in"


def test_a_bad_window_names_its_value(swa):
    with pytest.raises(ValueError, match=r"sliding_window=0 must be a positive integer"):
        av.create(swa, av.AttnSpec(32, 4, 2), sliding_window=0)
