"""pairs: name two digit images in order, a multi-image task for MMCA (issue 17).

The sequence is a small multi-image conversation: a text prompt token, image 1's patches, a
text token "and", image 2's patches, then the answer: BOS, the first name, a space, the second
name, EOS ("seven three"). Two images sit between text, so attention gets `modality` ids
[0, 1 x m, 0, 2 x m, 0 x t] (text before the first image has no image key: MMCA's empty
branch). Training is teacher-forced on the answer positions; the test decodes greedily from
BOS (re-running the prefix) and scores exact match of both names, in order, and EOS. A
unimodal variant, `concat` among them, reads the same sequence as one causal stream.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import AccuracyConfig
from ..model import TinyTransformer
from .base import Init, Job, Outcome, build, outcome
from .images import NAMES, SIDE, patchify, sample, split
from .train import IGNORE, fit

PAD, BOS, EOS, SPACE, LOOK, AND = range(6)  # LOOK: the prompt before image 1; AND: between images
CHARS = sorted(set("".join(NAMES)))
TOKEN = {c: i + 6 for i, c in enumerate(CHARS)}  # character -> token id
VOCAB = len(CHARS) + 6
LONGEST = max(map(len, NAMES))
TEXT_LEN = 2 * LONGEST + 2  # t: BOS, name, space, name as inputs; name, space, name, EOS as labels


def encode(first: Tensor, second: Tensor) -> tuple[Tensor, Tensor]:
    """Digit classes (N,), (N,) -> inputs (N, t) [BOS, a.., SPACE, b.., PAD], labels (N, t)."""
    inputs = torch.full((len(first), TEXT_LEN), PAD)
    targets = torch.full((len(first), TEXT_LEN), IGNORE)
    for i, (a, b) in enumerate(zip(first.tolist(), second.tolist(), strict=True)):
        chars = [TOKEN[c] for c in NAMES[a]] + [SPACE] + [TOKEN[c] for c in NAMES[b]]
        inputs[i, : len(chars) + 1] = torch.tensor([BOS, *chars])
        targets[i, : len(chars) + 1] = torch.tensor([*chars, EOS])
    return inputs, targets


def decode(tokens: Tensor) -> list[str | None]:
    """Generated ids (N, k) -> the text before the first EOS ("seven three"); None without EOS."""
    chars = {i: c for c, i in TOKEN.items()} | {SPACE: " "}
    texts: list[str | None] = []
    for row in tokens.tolist():
        end = row.index(EOS) if EOS in row else None
        texts.append(None if end is None else "".join(chars.get(t, "?") for t in row[:end]))
    return texts


def sequence(model: TinyTransformer, first: Tensor, second: Tensor, text: Tensor) -> tuple[Tensor, Tensor]:
    """Patches (b, m, p) x 2 and text ids (b, k) -> x (b, 2m + 2 + k, d) and modality (b, n)."""
    b = text.shape[0]
    look, and_ = (torch.full((b, 1), tok, device=text.device) for tok in (LOOK, AND))  # (b, 1) each
    parts = [("text", look), ("image", first), ("text", and_), ("image", second), ("text", text)]
    return model.embed_parts(parts)


def logits_of(model: TinyTransformer, first: Tensor, second: Tensor, text: Tensor) -> Tensor:
    """(b, k, vocab): the logits at the k text positions at the end."""
    x, modality = sequence(model, first, second, text)
    return model.run(x, modality=modality)[:, -text.shape[1] :]


class Pairs:
    name = "pairs"
    visual = True  # image tokens: multimodal variants run it
    causal = True  # the answer is read causally after both images

    def inits(self, variant: str, cfg: AccuracyConfig) -> tuple[Init, ...]:
        return ("scratch",)

    def chance(self, cfg: AccuracyConfig) -> float:
        """Writing two of the ten names without looking at the images."""
        return 1 / len(NAMES) ** 2

    def n_visual(self, cfg: AccuracyConfig) -> int:
        return 2 * (SIDE // cfg.pairs_patch) ** 2  # both images

    def seq_len(self, cfg: AccuracyConfig) -> int:
        return self.n_visual(cfg) + 2 + TEXT_LEN

    def run(self, job: Job, context: dict) -> Outcome:
        c = job.cfg
        train, (test_images, test_labels) = split(job.seed)
        model_cfg = job.model_config(
            n_out=VOCAB, max_len=self.seq_len(c), vocab=VOCAB, patch_dim=c.pairs_patch**2
        )
        model = build(model_cfg, job.seed, job.device)
        order = torch.Generator().manual_seed(job.seed)

        def step_loss(step: int) -> Tensor:
            (img_a, a), (img_b, b) = (sample(train, c.batch, order, c.shift) for _ in range(2))
            inputs, targets = (t.to(job.device) for t in encode(a, b))  # (b, t) each
            first, second = (patchify(i, c.pairs_patch).to(job.device) for i in (img_a, img_b))  # (b, m, p*p)
            logits = logits_of(model, first, second, inputs)  # (b, t, vocab)
            return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)

        loss = fit(model, step_loss, c.pairs_steps, c.pairs_lr)
        # Test pairs: held-out image i first, a shuffled held-out partner second.
        partner = torch.randperm(len(test_labels), generator=torch.Generator().manual_seed(job.seed + 1))
        keep, second = slice(0, c.pairs_test), partner[: c.pairs_test]
        first_p, second_p = (patchify(test_images[i], c.pairs_patch).to(job.device) for i in (keep, second))
        accuracy = exact_match(model, first_p, second_p, test_labels[keep], test_labels[second])
        return outcome(model, accuracy, loss, c.pairs_steps, self.seq_len(c), self.n_visual(c))


def generate(model: TinyTransformer, first: Tensor, second: Tensor) -> Tensor:
    """Greedy decoding from BOS for TEXT_LEN steps -> generated ids (N, TEXT_LEN)."""
    text = torch.full((first.shape[0], 1), BOS, device=first.device)  # (N, 1)
    with torch.no_grad():
        for _ in range(TEXT_LEN):
            logits = logits_of(model, first, second, text)[:, -1]  # (N, vocab)
            text = torch.cat([text, logits.argmax(dim=-1, keepdim=True)], dim=1)  # (N, k + 1)
    return text[:, 1:]


def exact_match(model: TinyTransformer, first: Tensor, second: Tensor, a: Tensor, b: Tensor) -> float:
    """The fraction of test pairs whose generated answer is exactly both names, in order."""
    texts = decode(generate(model, first, second))
    want = [f"{NAMES[i]} {NAMES[j]}" for i, j in zip(a.tolist(), b.tolist(), strict=True)]
    return sum(t == w for t, w in zip(texts, want, strict=True)) / len(texts)


TASK = Pairs()
