"""`KVCache.fill`: for every variant that decodes, the cache, the module's state and the next
decode step are exactly those a forward leaves, and no attention op runs."""

import copy
import re
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

import attn_variants as av
from harness.measure import count_flops_detail
from harness.measure.workload import modality_ids

DECODERS = [name for name in av.names() if "decode" in av.info(name).modes]
SHAPES = [(1, 7, 4, 2), (2, 13, 6, 3), (3, 33, 8, 1)]  # (b, n, h, g): odd lengths, g = 1


def layouts(name: str, b: int, n: int) -> list[dict]:
    """The prompt's layout keywords: text only, or for a multimodal variant a prefix image and
    two interleaved ones."""
    if not av.info(name).multimodal:
        return [{}]
    return [{"n_visual": n // 3}, {"modality": modality_ids(b, n, n // 3, 2)}]


CASES = [
    pytest.param(name, b, n, h, g, kw, id=f"{name}-b{b}-n{n}-h{h}-g{g}-{'-'.join(kw) or 'text'}")
    for name in DECODERS
    for b, n, h, g in SHAPES
    for kw in layouts(name, b, n)
]


def prompt(name, b, n, h, g):
    spec = av.AttnSpec(8 * h, h, g)
    options = {"seed": 3} if name == "pgqa" else {}  # its noise from the module's own generator
    module = av.create(name, spec, **options).to(torch.float64).eval()
    x = torch.randn(b, n, spec.dim, dtype=torch.float64)  # (b, n, d)
    x_next = torch.randn(b, 1, spec.dim, dtype=torch.float64)  # (b, 1, d)
    return module, x, x_next


def assert_same_cache(a: av.KVCache, b: av.KVCache) -> None:
    assert a.fields == b.fields and a.length == b.length and a.n_visual == b.n_visual
    for name in a.fields:
        assert torch.equal(a.get(name), b.get(name)), name


@pytest.mark.parametrize("name, b, n, h, g, kw", CASES)
@torch.no_grad()
def test_fill_leaves_what_the_forward_leaves(name, b, n, h, g, kw):
    module, x, x_next = prompt(name, b, n, h, g)
    filled = copy.deepcopy(module)
    ran, skipped = av.KVCache(), av.KVCache()
    module(x, cache=ran, **kw)
    skipped.fill(filled, x, **kw)
    assert not skipped.filling
    assert_same_cache(ran, skipped)
    # pgqa's next noise comes from a generator the prompt drew from: equal only if the fill drew
    # the same numbers; dgqa's allocation from the norm_cache the prompt set
    assert_close(filled(x_next, cache=skipped), module(x_next, cache=ran), rtol=0, atol=0)
    assert_same_cache(ran, skipped)
    for key, value in module.state_dict().items():  # DGQA's norm_cache, allocation, steps
        assert torch.equal(filled.state_dict()[key], value), key


@pytest.mark.parametrize("name", DECODERS)
@torch.no_grad()
def test_fill_runs_no_attention_op(name):
    """The attention core's FLOPs under the math backend (measure.count_flops_detail, as the
    sweep's flops_active counts them): the forward's are positive, the fill's zero, so the skip
    cannot silently stop skipping."""
    module, x, _ = prompt(name, 2, 16, 4, 2)
    kw = layouts(name, 2, 16)[-1]
    _, forward = count_flops_detail(lambda: module(x, cache=av.KVCache(), **kw))
    total, filled = count_flops_detail(lambda: av.KVCache().fill(copy.deepcopy(module), x, **kw))
    assert forward > 0 and total > 0  # the fill still projects the prompt
    assert filled == 0


def test_fill_inside_a_fill_is_refused_and_the_flag_is_reset():
    module, x, _ = prompt("gqa", 1, 5, 4, 2)
    cache = av.KVCache()

    class Nested(torch.nn.Module):
        def forward(self, x, cache):
            cache.fill(module, x)

    with pytest.raises(ValueError, match="inside another fill"):
        cache.fill(Nested(), x)
    assert not cache.filling
    with torch.no_grad():
        cache.fill(module, x)  # the cache still works after the refused call
    assert cache.length == 5


def test_the_readmes_contract_example_runs_and_its_fill_equals_the_prefill():
    """The python block of the README's "The contract" section, run as users read it."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("## The contract", 1)[1].split("\n## ", 1)[0]
    scope: dict = {}
    exec(re.search(r"```python\n(.*?)```", section, re.S).group(1), scope)
    assert scope["cache"].nbytes == 2 * 2 * 2 * 129 * 64 * 4  # the figure its comment states
    filled, cache = scope["filled"], av.KVCache()
    with torch.no_grad():
        scope["attn"](scope["x"], cache=cache)
    assert_same_cache(filled, cache)
