"""The `[accuracy]` settings of `attnbench accuracy`, apart from the runner (harness/accuracy/runner.py).

The tasks (harness/accuracy/tasks/) read these settings and the runner imports the tasks, so the
settings live here, importing neither: no import circle. The task names are a Literal here;
harness/accuracy/tasks/__init__.py maps each to its task, and a test keeps the two equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import attn_variants as av

from .model import ABLATIONS, Ablate

TaskName = Literal["mqar", "digits", "captions", "pairs"]
TASK_NAMES: tuple[TaskName, ...] = ("mqar", "digits", "captions", "pairs")


@dataclass(frozen=True)
class AccuracyConfig:
    """The `[accuracy]` table of bench.toml; every field is also a CLI flag."""

    variants: tuple[str, ...] = ("all",)  # names, 'name:key=value:...' with options, or 'all'
    tasks: tuple[TaskName, ...] = TASK_NAMES
    seeds: tuple[int, ...] = (0, 1, 2)
    heads: int = 4  # h
    kv_heads: tuple[int, ...] = (2,)  # g for variants that take it (mha and mqa fix their own)
    dim: int = 64  # d
    layers: int = 2
    batch: int = 64
    mqar_steps: int = 400
    mqar_lr: float = 5e-3
    mqar_pairs: int = 8  # P key-value pairs, then P queries: n = 3P
    mqar_vocab: int = 64  # keys from [1, vocab/2), values from [vocab/2, vocab)
    mqar_test: int = 1000  # held-out sequences
    digits_steps: int = 600  # the MHA source's training, and every scratch run
    digits_lr: float = 3e-3
    digits_finetune_steps: int = 150  # after uptraining from the MHA source
    digits_finetune_lr: float = 1e-3
    digits_patch: int = 2  # p: 8x8 images as (8/p)^2 patches of p*p pixels
    digits_scratch: bool = True  # also train every grouped variant from scratch
    # how from_mha groups query heads for a variant with a `grouping` option (gqa): "neighbour"
    # (GQA's), "weights" (QCQA), "activations" (AsymGQA); one uptrained row per entry, equal g
    digits_grouping: tuple[str, ...] = ("neighbour",)
    captions_steps: int = 500
    captions_lr: float = 3e-3
    captions_patch: int = 2
    pairs_steps: int = 600  # two images between text, both named in order (issue 17)
    pairs_lr: float = 3e-3
    pairs_patch: int = 4  # 4 patches of 4x4 pixels per image: n = 2*4 + 2 + 12 = 22
    pairs_test: int = 359  # held-out pairs (each held-out image first once), at most 359
    shift: int = 0  # > 0: digits, captions and pairs training images move by up to this many pixels
    ablate: Ablate = "none"  # zero-attention: attention outputs replaced by zeros (a control)
    threads: int = 1  # torch.set_num_threads for the run; 0 keeps torch's default
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA when torch sees one
    out: str = "results"
    # Outside variants imported first (attn_variants/plugins.py): module names or .py files;
    # bench.toml's top-level `plugins` and each --plugin add up here (harness/config.py).
    plugins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("variants", "tasks", "seeds", "kv_heads"):
            if not getattr(self, name):
                raise ValueError(f"empty run: {name} has no values")
        unknown = [t for t in self.tasks if t not in TASK_NAMES]
        if unknown:
            raise ValueError(f"unknown task {unknown[0]!r}; valid tasks: {list(TASK_NAMES)}")
        positive = ["heads", "dim", "layers", "batch", "mqar_pairs", "mqar_vocab", "mqar_test"]
        positive += [
            "digits_patch",
            "captions_patch",
            "pairs_patch",
            "pairs_lr",
            "pairs_test",
            "mqar_lr",
            "digits_lr",
            "digits_finetune_lr",
            "captions_lr",
        ]
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)} must be positive")
        counts = (
            "shift",
            "mqar_steps",
            "digits_steps",
            "digits_finetune_steps",
            "captions_steps",
            "pairs_steps",
        )
        counts += ("threads",)
        for name in counts:
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")
        if self.dim % self.heads:
            raise ValueError(f"dim={self.dim} is not divisible by heads={self.heads}")
        bad = [g for g in self.kv_heads if g <= 0 or self.heads % g]
        if bad:
            raise ValueError(f"kv_heads {bad} must be positive divisors of heads={self.heads}")
        bad_groupings = [x for x in self.digits_grouping if x not in av.GROUPINGS]
        if bad_groupings or not self.digits_grouping:
            valid = list(av.GROUPINGS)
            raise ValueError(f"digits_grouping={list(self.digits_grouping)} must name some of {valid}")
        if self.ablate not in ABLATIONS:
            raise ValueError(f"ablate={self.ablate!r} is not one of {list(ABLATIONS)}")
