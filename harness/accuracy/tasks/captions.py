"""captions: name the digit in an image, character by character (a multimodal task for MMCA).

The image's patches are the visual tokens (n_visual = m), then the text: BOS and the English
name ("seven"), then EOS. Training is teacher-forced next-character prediction on the text
positions only; the test decodes greedily from BOS (the whole prefix is re-run each step, so
every variant works, with or without a KV cache) and scores exact match of the name and EOS.
Multimodal variants see [visual; text] with n_visual = m; a unimodal variant reads the same
sequence as one causal stream, the "concat" baseline.
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

PAD, BOS, EOS = 0, 1, 2
CHARS = sorted(set("".join(NAMES)))
TOKEN = {c: i + 3 for i, c in enumerate(CHARS)}  # character -> token id
VOCAB = len(CHARS) + 3
TEXT_LEN = max(map(len, NAMES)) + 1  # t: BOS + the longest name as inputs; the name + EOS as labels


def encode(labels: Tensor) -> tuple[Tensor, Tensor]:
    """Digit classes (N,) -> inputs (N, t) [BOS, c1, ..., PAD], labels (N, t) [c1, ..., EOS, IGNORE]."""
    inputs = torch.full((len(labels), TEXT_LEN), PAD)
    targets = torch.full((len(labels), TEXT_LEN), IGNORE)
    for i, label in enumerate(labels.tolist()):
        chars = [TOKEN[c] for c in NAMES[label]]
        inputs[i, : len(chars) + 1] = torch.tensor([BOS, *chars])
        targets[i, : len(chars) + 1] = torch.tensor([*chars, EOS])
    return inputs, targets


def decode(tokens: Tensor) -> list[str | None]:
    """Generated ids (N, k) -> the text before the first EOS; None where no EOS was generated."""
    chars = {i: c for c, i in TOKEN.items()}
    texts: list[str | None] = []
    for row in tokens.tolist():
        end = row.index(EOS) if EOS in row else None
        texts.append(None if end is None else "".join(chars.get(t, "?") for t in row[:end]))
    return texts


class Captions:
    name = "captions"
    visual = True  # leading visual tokens: the task multimodal variants are built for
    causal = True  # the caption is generated token by token

    def inits(self, variant: str, cfg: AccuracyConfig) -> tuple[Init, ...]:
        return ("scratch",)

    def chance(self, cfg: AccuracyConfig) -> float:
        """Writing one of the ten names without looking at the image."""
        return 1 / len(NAMES)

    def n_visual(self, cfg: AccuracyConfig) -> int:
        return (SIDE // cfg.captions_patch) ** 2

    def seq_len(self, cfg: AccuracyConfig) -> int:
        return self.n_visual(cfg) + TEXT_LEN

    def run(self, job: Job, context: dict) -> Outcome:
        c = job.cfg
        train, (test_images, test_labels) = split(job.seed)
        m = self.n_visual(c)
        model_cfg = job.model_config(
            n_out=VOCAB, max_len=self.seq_len(c), vocab=VOCAB, patch_dim=c.captions_patch**2
        )
        model = build(model_cfg, job.seed, job.device)
        order = torch.Generator().manual_seed(job.seed)

        def step_loss(step: int) -> Tensor:
            images, labels = sample(train, c.batch, order, c.shift)  # (b, 8, 8), (b,)
            inputs, targets = (t.to(job.device) for t in encode(labels))  # (b, t) each
            patches = patchify(images, c.captions_patch).to(job.device)  # (b, m, p*p)
            logits = model(tokens=inputs, patches=patches)[:, m:]  # (b, t, vocab): text positions
            return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)

        loss = fit(model, step_loss, c.captions_steps, c.captions_lr)
        accuracy = exact_match(model, patchify(test_images, c.captions_patch).to(job.device), test_labels)
        return outcome(model, accuracy, loss, c.captions_steps, self.seq_len(c), m)


def generate(model: TinyTransformer, patches: Tensor) -> Tensor:
    """Greedy decoding from BOS for TEXT_LEN steps: (N, m, p) -> generated ids (N, TEXT_LEN)."""
    text = torch.full((patches.shape[0], 1), BOS, device=patches.device)  # (N, 1)
    with torch.no_grad():
        for _ in range(TEXT_LEN):
            logits = model(tokens=text, patches=patches)[:, -1]  # (N, vocab) at the last position
            text = torch.cat([text, logits.argmax(dim=-1, keepdim=True)], dim=1)  # (N, k + 1)
    return text[:, 1:]


def exact_match(model: TinyTransformer, patches: Tensor, labels: Tensor) -> float:
    """The fraction of test images whose generated name (ended by EOS) is exactly right."""
    texts = decode(generate(model, patches))
    return sum(text == NAMES[label] for text, label in zip(texts, labels.tolist(), strict=True)) / len(texts)


TASK = Captions()
