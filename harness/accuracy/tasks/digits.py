"""digits: classify scikit-learn's 8x8 digits with a tiny ViT (patches -> tokens, mean pool, head).

The KDGQA paper's protocol in miniature (Khan et al. 2024, arXiv 2408.08454, after the GQA
paper's uptraining, Ainslie et al. 2023 section 2.1): train an MHA model, uptrain it into each
grouped variant by mean-pooling its K/V heads per group (`av.from_mha`, every layer), fine-tune,
and report held-out accuracy (init="uptrained"). The same variant trained from scratch for the
MHA model's steps is the init="scratch" row. Attention is bidirectional: it is a classifier.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

import attn_variants as av

from ..config import AccuracyConfig
from ..model import TinyTransformer, uptrain
from .base import Init, Job, Outcome, build, outcome
from .images import SIDE, patchify, sample, split
from .train import fit

SOURCE = "mha"  # the protocol uptrains from multi-head attention (g = h)
UPTRAINED: dict[str, Init] = {
    "neighbour": "uptrained",
    "weights": "uptrained-weights",
    "activations": "uptrained-activations",
}
CALIBRATION_SEED = 12345  # the activations grouping's batch of training images, apart from training's
CLASSES = 10


class Digits:
    name = "digits"
    visual = False  # the patches are the whole input, not a visual prefix to text
    causal = False  # a ViT classifier: every patch sees every patch

    def inits(self, variant: str, cfg: AccuracyConfig) -> tuple[Init, ...]:
        """The source itself is only trained from scratch; every other variant is uptrained
        from it, and also trained from scratch when `digits_scratch` is on. A variant with a
        `grouping` option (gqa) is uptrained once per `digits_grouping` entry, at the same g:
        "uptrained" with neighbours, "uptrained-weights", "uptrained-activations"."""
        if variant == SOURCE:
            return ("scratch",)
        uptrained: tuple[Init, ...] = ("uptrained",)
        if "grouping" in av.info(variant).options:
            uptrained = tuple(UPTRAINED[g] for g in cfg.digits_grouping)
        return (*uptrained, "scratch") if cfg.digits_scratch else uptrained

    def chance(self, cfg: AccuracyConfig) -> float:
        return 1 / CLASSES

    def seq_len(self, cfg: AccuracyConfig) -> int:
        return (SIDE // cfg.digits_patch) ** 2

    def run(self, job: Job, context: dict) -> Outcome:
        c = job.cfg
        data = split(job.seed)
        if job.init == "scratch" and job.variant == SOURCE and not job.options:
            model, loss = source_model(job, data, context)
            return self._outcome(model, data, loss, c.digits_steps, c)
        if job.init == "scratch":
            model = build(model_config(job), job.seed, job.device)
            loss = train(model, data[0], c.digits_steps, c.digits_lr, job.seed, c)
            return self._outcome(model, data, loss, c.digits_steps, c)
        source, _ = source_model(job, data, context)
        grouping = next(g for g, init in UPTRAINED.items() if init == job.init)
        model = uptrain(source, model_config(job), grouping, **calibration(source, data, c))
        loss = train(model, data[0], c.digits_finetune_steps, c.digits_finetune_lr, job.seed + 1, c)
        return self._outcome(model, data, loss, c.digits_steps + c.digits_finetune_steps, c)

    def _outcome(self, model: TinyTransformer, data, loss: float, steps: int, cfg: AccuracyConfig) -> Outcome:
        return outcome(model, classified(model, *data[1], cfg.digits_patch), loss, steps, self.seq_len(cfg))


def model_config(job: Job):
    m = (SIDE // job.cfg.digits_patch) ** 2
    return job.model_config(
        n_out=CLASSES, max_len=m, patch_dim=job.cfg.digits_patch**2, causal=False, pool=True
    )


def source_model(job: Job, data, context: dict) -> tuple[TinyTransformer, float]:
    """The MHA model every variant of this seed is uptrained from, trained once and kept."""
    c = job.cfg
    key = ("digits-source", job.seed, job.n_heads)
    if key not in context:
        source_job = Job(SOURCE, job.n_heads, job.n_heads, job.seed, c)
        model = build(model_config(source_job), job.seed, job.device)
        context[key] = model, train(model, data[0], c.digits_steps, c.digits_lr, job.seed, c)
    return context[key]


def calibration(source: TinyTransformer, data, cfg: AccuracyConfig) -> dict[str, Tensor]:
    """The model inputs of one batch of training images (AsymGQA's calibration batch)."""
    images, _ = sample(data[0], cfg.batch, torch.Generator().manual_seed(CALIBRATION_SEED), 0)  # (b, 8, 8)
    return {"patches": patchify(images.to(_device(source)), cfg.digits_patch)}


def train(model: TinyTransformer, data, steps: int, lr: float, seed: int, cfg: AccuracyConfig) -> float:
    """Fit on shifted training images (`shift` pixels), `cfg.batch` at a time, sampled by `seed`."""
    order = torch.Generator().manual_seed(seed)

    def step_loss(step: int) -> Tensor:
        images, labels = sample(data, cfg.batch, order, cfg.shift)  # (b, 8, 8), (b,)
        images, labels = images.to(_device(model)), labels.to(_device(model))
        return F.cross_entropy(model(patches=patchify(images, cfg.digits_patch)), labels)

    return fit(model, step_loss, steps, lr)


def classified(model: TinyTransformer, images: Tensor, labels: Tensor, patch: int) -> float:
    """Held-out accuracy: the fraction of test images whose argmax class is right."""
    images, labels = images.to(_device(model)), labels.to(_device(model))
    with torch.no_grad():
        return (model(patches=patchify(images, patch)).argmax(dim=-1) == labels).float().mean().item()


def _device(model: TinyTransformer) -> torch.device:
    return model.head.weight.device


TASK = Digits()
