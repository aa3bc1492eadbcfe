"""The pairs task (issue 17): two digit images between text, both named in order."""

import torch
from typer.testing import CliRunner

import attn_variants as av
from harness.accuracy.model import ModelConfig, TinyTransformer
from harness.accuracy.tasks import pairs
from harness.accuracy.tasks.train import IGNORE
from harness.cli import app

runner = CliRunner()


def test_encoding_is_teacher_forced_and_round_trips():
    inputs, targets = pairs.encode(torch.tensor([1, 7]), torch.tensor([3, 0]))
    assert inputs.shape == targets.shape == (2, pairs.TEXT_LEN)
    k = len("one three")  # characters and the space
    assert inputs[0, 0] == pairs.BOS and torch.equal(inputs[0, 1 : k + 1], targets[0, :k])  # shifted labels
    assert targets[0, k] == pairs.EOS and (targets[0, k + 1 :] == IGNORE).all()
    assert (inputs[0, k + 1 :] == pairs.PAD).all()
    assert pairs.decode(targets.clamp(min=0)) == ["one three", "seven zero"]
    assert pairs.decode(torch.tensor([[pairs.TOKEN["o"]]])) == [None]  # no EOS, no answer


def model(variant):
    cfg = ModelConfig(
        variant, n_out=pairs.VOCAB, max_len=60, vocab=pairs.VOCAB, patch_dim=4, dim=32, n_heads=4
    )
    torch.manual_seed(0)
    return TinyTransformer(cfg).eval()


def test_the_sequence_is_text_image_text_image_text():
    m, t = 16, 5
    first, second, text = torch.randn(2, m, 4), torch.randn(2, m, 4), torch.ones(2, t, dtype=torch.long)
    x, ids = pairs.sequence(model("mmca"), first, second, text)
    assert x.shape == (2, 2 * m + 2 + t, 32)
    assert ids[0].tolist() == [0] + [1] * m + [0] + [2] * m + [0] * t and torch.equal(ids[0], ids[1])


def test_mmca_sees_the_modality_and_text_reads_both_images():
    net = model("mmca")
    seen = []
    block = net.blocks[0].attn
    original = block.forward
    block.forward = lambda x, **kw: seen.append(kw) or original(x, **kw)
    first, second, text = torch.randn(1, 16, 4), torch.randn(1, 16, 4), torch.ones(1, 3, dtype=torch.long)
    with torch.no_grad():
        out = pairs.logits_of(net, first, second, text)
        changed = pairs.logits_of(net, first, second + 1.0, text)
    assert seen and seen[0]["modality"][0, 17:19].tolist() == [0, 2]  # "and", then image 2
    assert out.shape == (1, 3, pairs.VOCAB) and not torch.allclose(out, changed)


def test_smoke_run_mmca_and_concat(tmp_path):
    args = ["accuracy", "--profile", "ci", "--out", str(tmp_path), "--no-report"]
    result = runner.invoke(app, [*args, "--tasks", "pairs", "--variants", "mmca,concat"])
    assert result.exit_code == 0, result.output
    import csv

    path = result.output.strip().splitlines()[-1].removeprefix("CSV: ").strip()
    rows = list(csv.DictReader(open(path, newline="")))
    assert {r["variant"] for r in rows} == {"mmca", "concat"} and {r["status"] for r in rows} == {"ok"}
    for row in rows:
        assert float(row["chance"]) == 0.01 and row["n_visual"] == "8" and row["seq_len"] == "22"
        assert 0.0 <= float(row["accuracy"]) <= 1.0 and int(row["steps"]) == 20
    assert av.info("mmca").multimodal
