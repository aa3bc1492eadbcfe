"""The decoder's caches are right end to end: greedy tokens with caches equal those of a full
recomputation without cache, in float64, for every causal-safe variant that decodes."""

import pytest
import torch

import attn_variants as av
from harness.generate import loop
from harness.generate.cell import refusal
from harness.generate.decoder import Decoder, DecoderConfig, cache_nbytes

GENERATING = [n for n in av.names() if not refusal(n)]
REFUSED = [n for n in av.names() if refusal(n)]
P, T = 7, 9  # odd lengths: nothing lines up with a power of two


def tiny(variant: str, *, sharpen: float = 16.0) -> Decoder:
    """A float64 decoder whose block weights are scaled up: with plain random weights the tied head
    makes greedy decoding repeat one token, and a test on a constant sequence proves little."""
    torch.manual_seed(0)
    cfg = DecoderConfig(variant, vocab=61, dim=32, n_heads=4, n_kv_heads=2, layers=2)
    model = Decoder(cfg).to(torch.float64).eval()
    with torch.no_grad():
        for module in model.blocks.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.mul_(sharpen)
    return model


def prompt_for(variant: str) -> tuple[torch.Tensor, int]:
    """A (2, P) prompt, and its image tokens: 3 for a multimodal variant (the prefix layout)."""
    gen = torch.Generator().manual_seed(1)
    return torch.randint(0, 61, (2, P), generator=gen), 3 if av.info(variant).multimodal else 0


def test_the_registry_has_variants_on_both_sides():
    assert {"mha", "gqa", "mqa", "mla"} <= set(GENERATING)
    assert {"kdgqa", "dgqa", "pgqa"} <= set(REFUSED)  # not causal-safe


@pytest.mark.parametrize("layout", ["padded", "paged"])
@pytest.mark.parametrize("variant", GENERATING)
def test_cached_greedy_tokens_equal_full_recomputation(variant, layout):
    model = tiny(variant)
    prompt, n_visual = prompt_for(variant)
    cached = loop.generate(model, prompt, T, n_visual=n_visual, layout=layout, page_size=3)
    full = loop.generate_uncached(model, prompt, T, n_visual=n_visual)
    assert cached.tokens.shape == (2, T)
    assert torch.equal(cached.tokens, full), f"{variant}: {cached.tokens.tolist()} != {full.tolist()}"
    assert len(set(full.flatten().tolist())) >= 4, "the sequence must vary for the test to mean anything"
    assert all(c.length == P + T - 1 for c in cached.caches)


@pytest.mark.parametrize("variant", GENERATING)
def test_each_cached_step_gives_the_full_forwards_last_logits(variant):
    model = tiny(variant)
    prompt, n_visual = prompt_for(variant)
    tokens = loop.generate_uncached(model, prompt, T, n_visual=n_visual)
    seq = torch.cat([prompt, tokens], dim=1)  # (b, P + T)
    caches = model.new_caches()
    with torch.no_grad():
        model(prompt, caches, n_visual, last=True)
        for t in range(P, P + T - 1):
            got = model(seq[:, t : t + 1], caches, last=True)  # (b, 1, vocab)
            want = model(seq[:, : t + 1], None, n_visual)[:, -1:]  # (b, 1, vocab)
            where = f"{variant} t={t}"
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10, msg=lambda m, w=where: f"{w}: {m}")


def test_a_cache_that_loses_a_token_is_caught():
    """The control: the same comparison fails when the cache is wrong (each step drops the
    newest cached token before it decodes)."""
    model = tiny("gqa")
    prompt, _ = prompt_for("gqa")
    step = loop.decode_step(model)

    def forgetful(token, caches):
        for cache in caches:
            cache.truncate(cache.length - 1)
        return step(token, caches)

    broken = loop.generate(model, prompt, T, step=forgetful)
    assert not torch.equal(broken.tokens, loop.generate_uncached(model, prompt, T))


def test_cache_bytes_are_the_registrys_figure_at_the_end():
    for variant in ("mha", "gqa", "mqa", "mla"):
        model = tiny(variant)
        prompt, _ = prompt_for(variant)
        caches = loop.generate(model, prompt, T).caches
        assert cache_nbytes(caches) == model.kv_cache_bytes(P + T - 1, batch=2) > 0


def test_gqa_cache_is_h_over_g_times_smaller_than_mha():
    sizes = {
        v: cache_nbytes(loop.generate(tiny(v), prompt_for(v)[0], 3).caches) for v in ("mha", "gqa", "mqa")
    }
    assert sizes["mha"] == 2 * sizes["gqa"] == 4 * sizes["mqa"]  # h = 4, g = 2, g = 1


def test_the_head_is_tied_to_the_embedding():
    model = tiny("gqa")
    assert model.head.weight is model.embed.weight
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in model.state_dict().values())


def test_compiled_step_generates_the_same_tokens():
    model = tiny("gqa")
    prompt, _ = prompt_for("gqa")
    step = loop.compiled_step(model, "default", compiler="aot_eager")
    first = loop.generate(model, prompt, T, step=step)
    again = loop.generate(model, prompt, T, step=step)  # fresh caches: no recompile needed to run
    want = loop.generate_uncached(model, prompt, T)
    assert torch.equal(first.tokens, want) and torch.equal(again.tokens, want)


def test_bad_sizes_raise_naming_the_value():
    with pytest.raises(ValueError, match="layers=0"):
        DecoderConfig("gqa", layers=0)
    with pytest.raises(ValueError, match="new_tokens=0"):
        loop.generate(tiny("gqa"), prompt_for("gqa")[0], 0)
    with pytest.raises(ValueError, match="unknown variant"):
        DecoderConfig("nope").spec()
