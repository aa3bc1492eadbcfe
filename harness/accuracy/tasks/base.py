"""What every accuracy task shares: the job it is given, the outcome it returns, evaluation helpers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from ...measure import resolve_device
from ..config import AccuracyConfig
from ..model import ModelConfig, TinyTransformer

# uptrained: from an MHA model through from_mha with GQA's neighbour groups; uptrained-weights and
# uptrained-activations: with the groups from_mha chooses (gqa's `grouping`; digits_grouping)
Init = Literal["scratch", "uptrained", "uptrained-weights", "uptrained-activations"]


@dataclass(frozen=True)
class Job:
    """One (task, variant, seed) cell: what to build and how to start it."""

    variant: str
    n_heads: int  # h
    n_kv_heads: int  # g, after the variant's preset
    seed: int
    cfg: AccuracyConfig
    init: Init = "scratch"  # uptrained: from an MHA model through from_mha (digits)
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        """Where the model trains: the config's device ('auto' resolved; `accuracy.run` resolves
        it once, so every job of a run agrees)."""
        return resolve_device(self.cfg.device)

    def model_config(self, **task_fields: Any) -> ModelConfig:
        """The tiny transformer for this job: shared sizes from the config, the rest from the task."""
        c = self.cfg
        shared = dict(dim=c.dim, n_heads=self.n_heads, n_kv_heads=self.n_kv_heads, layers=c.layers)
        return ModelConfig(
            variant=self.variant, ablate=c.ablate, options=dict(self.options), **shared, **task_fields
        )


@dataclass(frozen=True)
class Outcome:
    """What a finished cell reports: accuracy on held-out data, the final training loss."""

    accuracy: float
    loss: float  # mean training loss over the last 10% of steps
    steps: int  # optimizer steps behind the evaluated weights (uptrained: pre-training + fine-tuning)
    seq_len: int  # n of the task's sequences, the length kv_cache_bytes is given at
    n_visual: int  # m, leading visual tokens (captions), else 0
    kv_cache_bytes: int  # every layer's KV cache for one sequence of seq_len tokens


def build(model_cfg: ModelConfig, seed: int, device: torch.device) -> TinyTransformer:
    """A freshly initialised model on `device`: the same seed gives the same weights on every
    device (they are drawn on the CPU, then moved)."""
    torch.manual_seed(seed)
    return TinyTransformer(model_cfg).to(device)


def outcome(
    model: TinyTransformer, accuracy: float, loss: float, steps: int, seq_len: int, m: int = 0
) -> Outcome:
    return Outcome(accuracy, loss, steps, seq_len, m, model.kv_cache_bytes(seq_len))
