"""The training loop every task shares: AdamW, linear warm-up then cosine decay, seeded."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

IGNORE = -100  # label of positions that carry no loss (F.cross_entropy's ignore_index)
# Steps between two checks for a non-finite loss. Each check reads the losses on the host,
# which on CUDA waits for the GPU to finish every queued step: once per step would serialise
# the host's launches with the GPU's work. A loss gone NaN is caught at most this many steps late.
CHECK_EVERY = 25


def fit(
    model: nn.Module,
    step_loss: Callable[[int], Tensor],
    steps: int,
    lr: float,
    check_every: int = CHECK_EVERY,
) -> float:
    """Run `steps` optimizer steps on `step_loss(step)`; return the mean loss of the last 10%.

    A model with `aux_loss()` (TinyTransformer: MoH's load-balance loss, coef x mean over
    layers) has it added to the task loss for the gradient; the returned loss is the task's.

    Warm-up is the first 10% of the steps, then cosine decay to 10% of `lr` (nanoGPT's schedule).
    A loss that goes NaN or inf raises, naming its step, at the next check (every
    `check_every` steps and at the end); the cell becomes an error row, the run goes on.
    The loop itself never reads a tensor on the host (no `.item()`, no `if tensor`).
    """
    if check_every < 1:
        raise ValueError(f"check_every={check_every} must be >= 1")
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    warm, tail_from = max(1, steps // 10), steps - max(1, steps // 10)
    model.train()
    recent: list[Tensor] = []  # detached losses since the last check
    tail: list[Tensor] = []
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * schedule(step, steps, warm)
        loss = step_loss(step)
        aux = model.aux_loss() if hasattr(model, "aux_loss") else None  # MoH's load balance
        opt.zero_grad(set_to_none=True)
        (loss if aux is None else loss + aux).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        recent.append(loss.detach())
        if step >= tail_from:
            tail.append(recent[-1])
        if len(recent) == check_every or step == steps - 1:
            check_finite(recent, first_step=step + 1 - len(recent))
            recent = []
    model.eval()
    return torch.stack(tail).double().mean().item() if tail else float("nan")


def check_finite(losses: list[Tensor], first_step: int) -> None:
    """Raise FloatingPointError at the first non-finite loss; one host read for all of them."""
    stacked = torch.stack(losses)  # (k,)
    bad = (~stacked.isfinite()).nonzero()  # the one host sync of the check
    if len(bad):
        i = int(bad[0, 0])
        raise FloatingPointError(f"loss is {stacked[i].item()} at step {first_step + i}")


def schedule(step: int, steps: int, warm: int) -> float:
    """The learning-rate factor at `step`: linear warm-up, then cosine from 1 down to 0.1."""
    if step < warm:
        return (step + 1) / warm
    progress = (step - warm) / max(1, steps - warm)
    return 0.1 + 0.45 * (1 + math.cos(math.pi * progress))
