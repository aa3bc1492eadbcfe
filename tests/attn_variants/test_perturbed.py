"""PGQA: perturbation off == GQA, fast path vs the loop over groups, reproducibility, causal
safety (it is not, while perturbing), decode, options."""

import pytest
import torch
from torch.testing import assert_close

import attn_variants as av
from attn_variants import perturbed as pg
from attn_variants.backends import eager

SHAPES = [  # (b, n, d, h, g)
    (2, 16, 128, 16, 4),
    (3, 7, 48, 6, 3),
    (1, 1, 32, 4, 2),
    (2, 5, 40, 5, 1),
    (2, 9, 64, 8, 8),
]


def make(spec, **opts):
    return av.create("pgqa", spec, **opts).to(torch.float64)


def twin_gqa(module):
    gqa = av.create("gqa", module.spec).to(torch.float64)
    gqa.load_state_dict(module.state_dict())
    return gqa


def test_perturbation_off_is_exactly_gqa():
    module = make(av.AttnSpec(64, 8, 2, bias=True), perturb_eval=False).eval()
    x = torch.randn(2, 10, 64, dtype=torch.float64)
    assert_close(module(x), twin_gqa(module)(x))


@pytest.mark.parametrize("perturb_eval, training", [(True, False), (True, True), (False, True)])
def test_perturbation_on_differs_from_gqa(perturb_eval, training):
    module = make(av.AttnSpec(64, 8, 2), perturb_eval=perturb_eval, seed=0).train(training)
    x = torch.randn(2, 10, 64, dtype=torch.float64)
    assert module.perturbing
    assert not torch.allclose(module(x), twin_gqa(module)(x))


@pytest.mark.parametrize("b, n, d, h, g", SHAPES)
@pytest.mark.parametrize("causal", [True, False])
def test_fast_matches_the_loop_over_groups(b, n, d, h, g, causal):
    module = make(av.AttnSpec(d, h, g, causal=causal, bias=True), seed=7).eval()
    x = torch.randn(b, n, d, dtype=torch.float64)
    e = d // h
    # The module draws (g, h/g, n*e) uniform noise from its own generator seeded with 7.
    u = torch.rand(g, h // g, n * e, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    assert_close(module(x), pg.reference_forward(module, x, u))


def test_each_group_row_is_zero_mean_after_the_perturbation():
    """o - (z * std + mean) with z zero-mean per row: every perturbed row has mean 0."""
    module = make(av.AttnSpec(64, 8, 2), seed=1).eval()
    q, k, v = module.project(torch.randn(3, 6, 64, dtype=torch.float64))
    o = module.attend(q, k, v, n_visual=0, cache=None)  # (b, h, n, e)
    rows = o.reshape(3, 8, 6 * 8)
    assert_close(rows.mean(-1), torch.zeros(3, 8, dtype=torch.float64))
    assert rows.std(-1).min() > 0


def test_reproducible_under_a_seed_and_fresh_noise_each_call():
    spec = av.AttnSpec(64, 8, 2)
    a, b = make(spec, seed=3).eval(), make(spec, seed=3).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 10, 64, dtype=torch.float64)
    first = a(x)
    assert_close(first, b(x))
    assert_close(a(x), b(x))  # the generators advance together
    assert not torch.allclose(first, a(x))  # each call draws new noise
    other = make(spec, seed=4).eval()
    other.load_state_dict(a.state_dict())
    assert not torch.allclose(first, other(x))  # another seed, other noise


def test_not_causal_safe_while_perturbing_and_causal_when_off():
    assert not av.info("pgqa").causal_safe
    spec, t = av.AttnSpec(64, 8, 2), 4
    x = torch.randn(2, 11, 64, dtype=torch.float64)
    y = x.clone()
    y[:, t + 1 :] += torch.randn_like(y[:, t + 1 :])
    on_x, on_y = make(spec, seed=5).eval(), make(spec, seed=5).eval()
    on_y.load_state_dict(on_x.state_dict())  # same weights, same noise
    assert not torch.allclose(on_x(x)[:, : t + 1], on_y(y)[:, : t + 1])  # row stats span all n
    off = make(spec, perturb_eval=False).eval()
    assert_close(off(x)[:, : t + 1], off(y)[:, : t + 1])


def test_decode_runs_and_equals_the_full_forward_when_off():
    spec = av.AttnSpec(64, 8, 2)
    x = torch.randn(2, 9, 64, dtype=torch.float64)
    for perturb_eval in (False, True):
        module = make(spec, perturb_eval=perturb_eval, seed=0).eval()
        cache = av.KVCache()
        with torch.no_grad():
            outs = [module(x[:, :6], cache=cache)] + [module(x[:, i : i + 1], cache=cache) for i in (6, 7, 8)]
        out = torch.cat(outs, dim=1)
        assert out.shape == x.shape and torch.isfinite(out).all()
        if not perturb_eval:
            assert_close(out, module(x))


def test_one_element_rows_stay_finite_and_low_precision_runs():
    tiny = av.create("pgqa", av.AttnSpec(4, 4, 2), seed=0).eval()  # e = 1, n = 1: rows of 1
    assert torch.isfinite(tiny(torch.randn(1, 1, 4))).all()
    half = av.create("pgqa", av.AttnSpec(64, 8, 2), seed=0).to(torch.bfloat16).eval()
    out = half(torch.randn(2, 8, 64, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


def test_from_mha_and_gradients():
    mha = av.create("mha", av.AttnSpec(64, 8))
    module = av.from_mha(mha, 2, variant="pgqa", seed=0).train()
    x = torch.randn(2, 6, 64, requires_grad=True)
    module(x).sum().backward()
    assert torch.isfinite(x.grad).all() and module.k_proj.weight.grad.abs().sum() > 0


def test_generator_lives_on_the_device(device):
    module = av.create("pgqa", av.AttnSpec(64, 8, 2), seed=2).to(device).eval()
    twin = av.create("pgqa", av.AttnSpec(64, 8, 2), seed=2).to(device).eval()
    twin.load_state_dict(module.state_dict())
    x = torch.randn(2, 8, 64, device=device)
    assert_close(module(x), twin(x))
    assert module.generator(x.device).device == x.device


@pytest.mark.parametrize("seed", [None, 5])
def test_seed_accepts_ints_and_none(seed):
    assert av.create("pgqa", av.AttnSpec(32, 4, 2), seed=seed).seed == seed


@pytest.mark.parametrize(
    "opts, message",
    [
        ({"seed": "abc"}, "seed='abc' must be an integer or None"),
        ({"seed": 1.5}, "seed=1.5 must be an integer or None"),
        ({"seed": True}, "seed=True must be an integer or None"),
        ({"perturb_eval": "yes"}, "perturb_eval='yes' must be True or False"),
    ],
)
def test_bad_options_name_the_value(opts, message):
    with pytest.raises(ValueError, match=message):
        av.create("pgqa", av.AttnSpec(32, 4, 2), **opts)


@pytest.mark.parametrize("d, h, g", [(64, 8, 2), (48, 6, 3), (40, 5, 1), (32, 8, 8)])
def test_decode_step_perturbs_the_new_token_as_the_definition(device, d, h, g):
    """One decode step is GQA's output for the new token over every cached key, minus each
    group's noise rescaled over that token's e values (rows of n*e = e). On CUDA the step
    runs under sync debug mode "error": any host sync raises."""
    module = av.create("pgqa", av.AttnSpec(d, h, g), seed=7).to(device, torch.float64).eval()
    x = torch.randn(2, 9, d, dtype=torch.float64, device=device)
    e = d // h
    gen = torch.Generator(device=device).manual_seed(7)  # the module's draws: prefill, then the step
    draw = dict(generator=gen, device=device, dtype=torch.float64)
    torch.rand(g, h // g, 8 * e, **draw)  # the prefill's noise
    u = torch.rand(g, h // g, e, **draw)  # the step's: one token, rows of e values
    cache = av.KVCache()
    with torch.no_grad():
        module(x[:, :8], cache=cache)
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
        try:
            out = module(x[:, 8:], cache=cache)
        finally:
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode("default")
        q, k, v = module.project(x)  # (b, h, 9, e), (b, g, 9, e), (b, g, 9, e)
        o = eager(q[:, :, -1:], k, v, causal=True)  # (b, h, 1, e): the last token over all keys
        expected = module.merge(pg.reference_perturb(o, g, u))
    assert_close(out, expected)
