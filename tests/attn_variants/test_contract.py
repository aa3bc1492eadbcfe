"""The contract every registered variant keeps (docs/, the variant contract), one parametrised
test per property over `av.names()`, so a variant registered tomorrow is held to it unchanged:

- the output has the input's shape (b, n, d), at several shapes, odd ones included;
- prefill then decode equals one forward: each chunk's output equals the last rows of one
  forward over the tokens seen so far, from the same module state (the key-driven variants read
  every cached key), and for a causal-safe variant the whole decode equals one forward;
- no causal leak where the registry says causal-safe: perturbing tokens after t leaves the
  outputs up to t unchanged (and does change the later ones);
- gradients reach every parameter, finite and not all zero.

Each family's own file tests what is particular to it (its formula, its reference path, its
options); these are the properties they all share. Float64, default options, eval mode except
for the gradients.
"""

import copy

import pytest
import torch
from torch.testing import assert_close

import attn_variants as av

SHAPES = [(1, 7, 4, 2), (2, 13, 6, 3), (3, 33, 8, 1)]  # (b, n, h, g): odd lengths, h/g = 2, 2, 8
E = 8  # head dim e; d = h * e


def build(name: str, h: int, g: int, **options) -> torch.nn.Module:
    return av.create(name, av.AttnSpec(h * E, h, g), **options).to(torch.float64).eval()


def n_visual(name: str, n: int) -> int:
    """A multimodal variant reads its first n // 3 tokens as one image; the others read text."""
    return n // 3 if av.info(name).multimodal else 0


def shape_id(shape):
    return "b{}-n{}-h{}-g{}".format(*shape)


DECODERS = [name for name in av.names() if "decode" in av.info(name).modes]
CAUSAL = [name for name in av.names() if av.info(name).causal_safe]
# pgqa perturbs with fresh noise on every call, shaped by the call's length, so no decode can
# repeat a forward's noise; with the perturbation off in eval (perturb_eval=False) it is the GQA
# the paper perturbs, and the contract holds (tests/attn_variants/test_perturbed.py keeps the rest).
DECODE_OPTIONS = {"pgqa": {"perturb_eval": False}}


@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("name", av.names())
@torch.no_grad()
def test_the_output_has_the_input_shape(name, shape):
    b, n, h, g = shape
    x = torch.randn(b, n, h * E, dtype=torch.float64)  # (b, n, d)
    assert build(name, h, g)(x, n_visual=n_visual(name, n)).shape == x.shape


@pytest.mark.parametrize("prefix, chunks", [(5, [1, 1, 1]), (3, [2, 1, 4])])
@pytest.mark.parametrize("name", DECODERS)
@torch.no_grad()
def test_prefill_then_decode_equals_one_forward(name, prefix, chunks):
    h, g = 6, 3
    module = build(name, h, g, **DECODE_OPTIONS.get(name, {}))
    x = torch.randn(2, prefix + sum(chunks), h * E, dtype=torch.float64)  # (b, n, d)
    m = n_visual(name, prefix)  # the image sits in the prompt
    whole = copy.deepcopy(module)(x, n_visual=m)  # before any call moves the module's state
    cache = av.KVCache()
    outs = [module(x[:, :prefix], n_visual=m, cache=cache)]
    end = prefix
    for c in chunks:
        twin = copy.deepcopy(module)  # the state this chunk starts from (dgqa's norm_cache)
        outs.append(module(x[:, end : end + c], cache=cache))
        end += c
        assert_close(outs[-1], twin(x[:, :end], n_visual=m)[:, -c:], msg=f"{name} chunk ending at {end}")
    assert cache.length == x.shape[1]
    if av.info(name).causal_safe:
        assert_close(torch.cat(outs, dim=1), whole)


@pytest.mark.parametrize("t", [0.5, 0.9])  # where the perturbation starts, as a share of the text
@pytest.mark.parametrize("name", CAUSAL)
@torch.no_grad()
def test_later_tokens_do_not_leak_into_earlier_outputs(name, t):
    b, n, h, g = 2, 13, 6, 3
    module = build(name, h, g)
    m = n_visual(name, n)
    t = m + int(t * (n - 1 - m))  # a text position: tokens after it change
    x = torch.randn(b, n, h * E, dtype=torch.float64)  # (b, n, d)
    y = x.clone()
    y[:, t + 1 :] += torch.randn_like(y[:, t + 1 :])
    out_x, out_y = module(x, n_visual=m), module(y, n_visual=m)
    assert_close(out_x[:, : t + 1], out_y[:, : t + 1], msg=f"{name}: tokens after {t} leak")
    assert not torch.allclose(out_x[:, t + 1 :], out_y[:, t + 1 :])  # the perturbation is seen


@pytest.mark.parametrize("name", av.names())
def test_gradients_reach_every_parameter(name):
    b, n, h, g = 2, 9, 4, 2
    module = build(name, h, g).train()
    x = torch.randn(b, n, h * E, dtype=torch.float64, requires_grad=True)  # (b, n, d)
    out = module(x, n_visual=n_visual(name, n))
    (out * torch.randn_like(out)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for pname, p in module.named_parameters():
        assert p.grad is not None, f"{name}: no gradient reaches {pname}"
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, f"{name}: {pname}'s gradient"
