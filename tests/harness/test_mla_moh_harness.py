"""mla and moh in the harness: cache bytes, grid, labels, head-gate columns, aux loss, accuracy cells."""

import pytest
import torch

import attn_variants as av
from harness import measure
from harness.accuracy import runner as accuracy
from harness.accuracy.model import ModelConfig, TinyTransformer
from harness.accuracy.tasks.train import fit
from harness.measure import workload
from harness.sweep import runner as sweep
from harness.sweep.grid import grid
from harness.variant_choice import VariantChoice


def tiny_config(tmp_path, **kw):
    base = dict(seq_len=(16,), heads=(4,), kv_heads=(1, 2, 4), modes=("fwd",), batch=1, head_dim=8,
                repeats=2, warmup=0, threads=1, device="cpu", out=str(tmp_path))  # fmt: skip
    return sweep.SweepConfig(**{**base, **kw})


def test_mla_runs_once_per_n_and_h_and_is_labelled_by_its_cache(tmp_path):
    cells, _ = grid(tiny_config(tmp_path, variants=("mla", "gqa"), reference="none"))
    assert sum(c.choice.name == "mla" for c in cells) == 1  # g = 1, 2, 4 asked for: one cell
    assert sum(c.choice.name == "gqa" for c in cells) == 3
    mla = next(c for c in cells if c.choice.name == "mla")
    assert mla.choice.label_for(mla.spec) == "mla(≡2.25 KV heads)"  # (4e + e/2) / 2e
    assert VariantChoice("gqa").label_for(av.AttnSpec(32, 4, 2)) == "gqa_g2"


@pytest.mark.parametrize("name, g", [("mla", 4), ("gqa", 2), ("mqa", 1)])
def test_workload_cache_bytes_are_what_the_cache_stores(name, g):
    spec = av.AttnSpec(64, 4, g)
    w = workload.build(name, spec, "decode", batch=3, seq_len=10)
    cache = av.KVCache()
    with torch.no_grad():
        w.module(torch.randn(3, 10, 64), cache=cache)
    assert w.kv_cache_bytes == cache.nbytes
    if name == "mla":
        assert cache.nbytes == 3 * 10 * (4 * 16 + 8) * 4  # b*n*(kv_lora + rope)*itemsize


def test_model_cache_bytes_per_variant():
    def model(variant, **opts):
        return TinyTransformer(ModelConfig(variant, n_out=4, max_len=12, vocab=8, n_kv_heads=2, options=opts))

    assert model("mla").kv_cache_bytes(12) == 2 * 12 * (4 * 16 + 8) * 4  # L * n * (kv_lora+rope) * 4
    assert model("mla", kv_lora_rank=8).kv_cache_bytes(12) == 2 * 12 * 16 * 4
    assert model("gqa").kv_cache_bytes(12) == 2 * 2 * 2 * 12 * 16 * 4  # L * 2*g*n*e*itemsize


def test_sweep_rows_carry_active_heads_for_moh_only(tmp_path):
    cfg = tiny_config(tmp_path, variants=("moh", "mla"), kv_heads=(2,), modes=("fwd", "decode"))
    df = sweep.run(cfg)
    assert set(df["status"]) == {"ok"}, df[["variant", "error"]]
    moh = df[df["variant"] == "moh"]
    assert (moh["active_head_frac"] == 0.75).all()  # h=4: 2 shared + 1 routed of 4
    assert (moh["flops_active"] < moh["flops"]).all()
    others = df[df["variant"] != "moh"]
    assert others["active_head_frac"].isna().all() and others["flops_active"].isna().all()
    mla = df[df["variant"] == "mla"]
    assert (mla["kv_heads_equiv"] == 2.25).all() and (df[df["variant"] == "mha"]["kv_heads_equiv"] == 4).all()


def test_flops_active_removes_the_inactive_heads_attention():
    spec = av.AttnSpec(64, 4, 4)
    w = workload.build("moh", spec, "fwd", batch=1, seq_len=32)
    flops, attention = measure.count_flops_detail(w.step)
    assert attention == pytest.approx(4 * 4 * 32 * 32 * 16)  # q k^T and p v of 4 heads
    heads = measure.active_heads(w.module, flops, attention)
    assert heads == dict(active_head_frac=0.75, flops_active=round(flops - 0.25 * attention))


def model_and_batch(coef):
    torch.manual_seed(0)
    cfg = ModelConfig(
        "moh", n_out=4, max_len=8, vocab=8, n_heads=4, n_kv_heads=2, options={"aux_loss_coef": coef}
    )
    return TinyTransformer(cfg), torch.randint(0, 8, (4, 8))


def test_model_aux_loss_is_coef_times_the_mean_over_layers():
    model, tokens = model_and_batch(0.5)
    model.train()
    model(tokens=tokens)
    layers = [b.attn.aux_loss for b in model.blocks]
    assert all(a is not None for a in layers)
    torch.testing.assert_close(model.aux_loss(), 0.5 * torch.stack(layers).mean())
    model.eval()
    model(tokens=tokens)
    assert model.aux_loss() is None
    gqa = TinyTransformer(ModelConfig("gqa", n_out=4, max_len=8, vocab=8, n_kv_heads=2))
    gqa(tokens=tokens)
    assert gqa.aux_loss() is None


def test_fit_adds_the_aux_loss_to_the_gradient():
    """With a task loss that has no gradient, only the aux loss can move the router."""
    routers = []
    for coef in (0.0, 1.0):
        model, tokens = model_and_batch(coef)
        before = model.blocks[0].attn.wg.weight.detach().clone()
        fit(model, lambda step, m=model, t=tokens: 0.0 * m(tokens=t).sum(), steps=1, lr=1e-2)
        routers.append((before, model.blocks[0].attn.wg.weight.detach()))
    (before0, after0), (before1, after1) = routers
    torch.testing.assert_close(after0, before0 * (1 - 1e-2 * 0.01))  # AdamW weight decay only
    assert not torch.allclose(after1, before1 * (1 - 1e-2 * 0.01))


def test_accuracy_cells_name_mla_uptraining_unsupported():
    cfg = accuracy.AccuracyConfig(variants=("mla", "moh"), tasks=("mqar", "digits"), seeds=(0,))
    cells = {(c.task, c.choice.name, c.init): c.unsupported for c in accuracy.cells(cfg)}
    assert "cannot be uptrained" in cells[("digits", "mla", "uptrained")]
    assert cells[("digits", "mla", "scratch")] == "" and cells[("mqar", "mla", "scratch")] == ""
    assert cells[("digits", "moh", "uptrained")] == ""


DECODERS = [(n, "prefix") for n in av.names() if "decode" in av.info(n).modes] + [("mmca", "interleaved")]


@pytest.mark.parametrize("name, layout", DECODERS)
def test_kv_cache_bytes_equal_the_filled_cache_for_every_variant_and_layout(name, layout):
    """The kv_cache_bytes column is what the cache really holds at n tokens: K/V or the latent,
    kdgqa/dgqa's float64 key-norm prefix, interleaved mmca's modality ids."""
    info = av.info(name)
    spec = info.resolve(av.AttnSpec(64, 4, 2))
    m = 6 if info.multimodal else 0
    w = workload.build(name, spec, "decode", batch=2, seq_len=24, n_visual=m, layout=layout, images=2)
    assert w.kv_cache_bytes == w.cache.nbytes
