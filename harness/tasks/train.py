"""The training loop every task shares: AdamW, linear warm-up then cosine decay, seeded."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

IGNORE = -100  # label of positions that carry no loss (F.cross_entropy's ignore_index)


def fit(model: nn.Module, step_loss: Callable[[int], Tensor], steps: int, lr: float) -> float:
    """Run `steps` optimizer steps on `step_loss(step)`; return the mean loss of the last 10%.

    A model with `aux_loss()` (TinyTransformer: MoH's load-balance loss, coef x mean over
    layers) has it added to the task loss for the gradient; the returned loss is the task's.

    Warm-up is the first 10% of the steps, then cosine decay to 10% of `lr` (nanoGPT's schedule).
    A loss that goes NaN raises (the cell becomes an error row, the run goes on).
    """
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    warm = max(1, steps // 10)
    model.train()
    tail: list[float] = []
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * schedule(step, steps, warm)
        loss = step_loss(step)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at step {step}")
        aux = model.aux_loss() if hasattr(model, "aux_loss") else None  # MoH's load balance
        opt.zero_grad(set_to_none=True)
        (loss if aux is None else loss + aux).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step >= steps - max(1, steps // 10):
            tail.append(loss.item())
    model.eval()
    return sum(tail) / len(tail) if tail else float("nan")


def schedule(step: int, steps: int, warm: int) -> float:
    """The learning-rate factor at `step`: linear warm-up, then cosine from 1 down to 0.1."""
    if step < warm:
        return (step + 1) / warm
    progress = (step - warm) / max(1, steps - warm)
    return 0.1 + 0.45 * (1 + math.cos(math.pi * progress))
