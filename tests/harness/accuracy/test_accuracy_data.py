"""The accuracy tasks' data: mqar sequences, digit patches and splits, caption text."""

import pytest
import torch

from harness.accuracy.tasks import captions, images, mqar
from harness.accuracy.tasks.train import IGNORE, schedule


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(("size", "pairs", "vocab"), [(1, 1, 4), (5, 8, 64), (3, 7, 17)])
def test_mqar_shapes_and_label_masking(size, pairs, vocab):
    inputs, labels = mqar.batch(gen(), size, pairs, vocab)
    assert inputs.shape == labels.shape == (size, 3 * pairs)
    assert (labels[:, : 2 * pairs] == IGNORE).all()  # no loss on the key-value context
    assert (labels[:, 2 * pairs :] != IGNORE).all()  # a label at every query
    keys, values = inputs[:, 0 : 2 * pairs : 2], inputs[:, 1 : 2 * pairs : 2]
    half = vocab // 2
    assert ((keys >= 1) & (keys < half)).all() and ((values >= half) & (values < vocab)).all()
    assert all(len(set(row.tolist())) == pairs for row in keys)  # distinct keys per sequence


def test_mqar_label_is_the_value_paired_with_the_queried_key():
    inputs, labels = mqar.batch(gen(3), 6, 5, 32)
    for seq, lab in zip(inputs.tolist(), labels.tolist(), strict=True):
        table = dict(zip(seq[0:10:2], seq[1:10:2], strict=True))
        assert sorted(seq[10:]) == sorted(table)  # every key is asked once
        assert [table[q] for q in seq[10:]] == lab[10:]


def test_mqar_is_deterministic_by_seed():
    a, b, c = (mqar.batch(gen(s), 4, 8, 64) for s in (1, 1, 2))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_mqar_rejects_more_pairs_than_keys():
    with pytest.raises(ValueError, match="mqar_pairs=8"):
        mqar.batch(gen(), 1, 8, 16)


@pytest.mark.parametrize("patch", [1, 2, 4, 8])
def test_patchify_is_row_major_and_lossless(patch):
    images_ = torch.arange(2 * 64, dtype=torch.float32).reshape(2, 8, 8)
    p = images.patchify(images_, patch)
    k = 8 // patch
    assert p.shape == (2, k * k, patch * patch)
    # patch (i, j) holds the pixels of rows i*patch.., columns j*patch..
    i, j = k - 1, 0
    expected = images_[1, i * patch : (i + 1) * patch, j * patch : (j + 1) * patch].reshape(-1)
    assert torch.equal(p[1, i * k + j], expected)
    assert torch.equal(p.sum(dim=(1, 2)), images_.sum(dim=(1, 2)))


def test_patchify_rejects_a_patch_that_does_not_divide_8():
    with pytest.raises(ValueError, match="patch=3"):
        images.patchify(torch.zeros(1, 8, 8), 3)


def test_digits_split_is_held_out_and_deterministic():
    (xa, ya), (ta, la) = images.split(0)
    (xb, yb), (tb, lb) = images.split(0)
    (_, yc), _ = images.split(1)
    assert xa.shape == (1797 - 359, 8, 8) and ta.shape == (359, 8, 8)
    assert torch.equal(xa, xb) and torch.equal(la, lb) and not torch.equal(ya, yc)
    assert 0.0 <= float(xa.min()) and float(xa.max()) <= 1.0
    train_rows = {tuple(r) for r in xa.flatten(1).tolist()}
    assert sum(tuple(r) in train_rows for r in ta.flatten(1).tolist()) < 5  # (a few images are duplicates)
    assert set(la.tolist()) == set(range(10))


def test_translate_moves_each_image_within_shift_and_zero_fills():
    x = torch.arange(1, 65, dtype=torch.float32).reshape(1, 8, 8).repeat(50, 1, 1)
    assert torch.equal(images.translate(x, 0, gen()), x)
    moved = images.translate(x, 1, gen(4))
    seen = set()
    for img in moved:
        # find where pixel value 28 (row 3, col 3) went: within one pixel of its place
        r, c = (img == 28).nonzero()[0].tolist()
        assert abs(r - 3) <= 1 and abs(c - 3) <= 1
        seen.add((r - 3, c - 3))
        assert float(img.sum()) <= float(x[0].sum())  # pixels only fall off, zeros come in
    assert len(seen) > 4  # the offsets vary across the batch


def test_sample_is_deterministic_by_seed():
    train = images.split(0)[0]
    a, b = images.sample(train, 8, gen(2), 1), images.sample(train, 8, gen(2), 1)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[0].shape == (8, 8, 8)


def test_caption_encoding_masks_after_eos_and_round_trips():
    inputs, targets = captions.encode(torch.tensor([1, 7]))
    assert inputs.shape == targets.shape == (2, captions.TEXT_LEN)
    assert inputs[0, 0] == captions.BOS and (inputs[0, 4:] == captions.PAD).all()  # BOS o n e PAD..
    assert torch.equal(inputs[0, 1:4], targets[0, :3])  # teacher forcing: inputs are labels shifted
    assert targets[0, 3] == captions.EOS and (targets[0, 4:] == IGNORE).all()
    assert captions.decode(targets.clamp(min=0)) == ["one", "seven"]


def test_caption_decode_needs_an_eos():
    no_eos = torch.tensor([[captions.TOKEN["o"], captions.TOKEN["n"]]])
    assert captions.decode(no_eos) == [None]


def test_schedule_warms_up_then_decays_to_a_tenth():
    factors = [schedule(s, 100, 10) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0) and factors[-1] == pytest.approx(0.1, abs=1e-3)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:], strict=False))
