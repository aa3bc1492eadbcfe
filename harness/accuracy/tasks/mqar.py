"""mqar: multi-query associative recall (Arora et al. 2023, "Zoology", arXiv 2312.04927).

A sequence lists `pairs` key-value pairs, then asks for every key again in a random order:
    k1 v1 k2 v2 ... kP vP  q1 q2 ... qP
Keys come from the first half of the vocabulary (token 0 is left unused), values from the
second half, as in Zoology. The label at a query position is the value paired with that key;
every other position carries no loss. Accuracy is the fraction of queries answered right;
chance is 1 / (vocab / 2). Answering needs attention: the value sits earlier in the sequence.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import AccuracyConfig
from ..model import TinyTransformer
from .base import Init, Job, Outcome, build, outcome
from .train import IGNORE, fit

TEST_SEED = 1_000_003  # test sequences come from seed + this, a stream training never reads


def batch(gen: torch.Generator, size: int, pairs: int, vocab: int) -> tuple[Tensor, Tensor]:
    """`size` sequences: inputs (b, 3P) and labels (b, 3P), IGNORE except at the P queries."""
    half = vocab // 2
    if pairs > half - 1:
        raise ValueError(f"mqar_pairs={pairs} needs at least pairs + 1 keys; vocab={vocab} gives {half - 1}")
    keys = torch.rand(size, half - 1, generator=gen).argsort(dim=1)[:, :pairs] + 1  # (b, P) distinct
    values = torch.randint(half, vocab, (size, pairs), generator=gen)  # (b, P)
    order = torch.rand(size, pairs, generator=gen).argsort(dim=1)  # (b, P) query order
    context = torch.stack([keys, values], dim=2).reshape(size, 2 * pairs)  # (b, 2P) k1 v1 k2 v2 ...
    inputs = torch.cat([context, keys.gather(1, order)], dim=1)  # (b, 3P)
    labels = torch.full_like(inputs, IGNORE)
    labels[:, 2 * pairs :] = values.gather(1, order)  # (b, P) the answer at each query
    return inputs, labels


class Mqar:
    """The mqar task: a causal token model trained on fresh sequences, tested on held-out ones."""

    name = "mqar"
    visual = False  # no visual tokens: multimodal-only variants cannot run it
    causal = True  # a causal token model

    def inits(self, variant: str, cfg: AccuracyConfig) -> tuple[Init, ...]:
        return ("scratch",)

    def chance(self, cfg: AccuracyConfig) -> float:
        """Guessing a value uniformly: 1 / (vocab / 2)."""
        return 1 / (cfg.mqar_vocab // 2)

    def seq_len(self, cfg: AccuracyConfig) -> int:
        return 3 * cfg.mqar_pairs

    def run(self, job: Job, context: dict) -> Outcome:
        """Train `mqar_steps` on fresh batches (stream seeded by the seed), test on `mqar_test`."""
        c = job.cfg
        vocab = c.mqar_vocab
        model = build(
            job.model_config(n_out=vocab, max_len=self.seq_len(c), vocab=vocab), job.seed, job.device
        )
        stream = torch.Generator().manual_seed(job.seed)

        def step_loss(step: int) -> Tensor:
            inputs, labels = (t.to(job.device) for t in batch(stream, c.batch, c.mqar_pairs, vocab))
            logits = model(tokens=inputs)  # (b, n, vocab)
            return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE)

        loss = fit(model, step_loss, c.mqar_steps, c.mqar_lr)
        test = torch.Generator().manual_seed(TEST_SEED + job.seed)  # never drawn in training
        inputs, labels = (t.to(job.device) for t in batch(test, c.mqar_test, c.mqar_pairs, vocab))
        accuracy = answered(model, inputs, labels)
        return outcome(model, accuracy, loss, c.mqar_steps, self.seq_len(c))


def answered(model: TinyTransformer, inputs: Tensor, labels: Tensor) -> float:
    """The fraction of labelled positions whose argmax prediction is the label."""
    with torch.no_grad():
        predicted = model(tokens=inputs).argmax(dim=-1)  # (b, n)
    asked = labels != IGNORE
    return (predicted[asked] == labels[asked]).float().mean().item()


TASK = Mqar()
