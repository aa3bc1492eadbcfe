"""The accuracy tasks of `attnbench accuracy`, by name: mqar, digits, captions, pairs.

A task has `name`, `visual` (it has leading visual tokens), `inits(variant, cfg)`,
`chance(cfg)`, `seq_len(cfg)` and `run(job, context) -> Outcome`. Which variant runs which task is decided
from the registry, never from variant names: a multimodal variant needs visual tokens, so it
runs captions and pairs only; a unimodal variant runs every task (on captions it is the concat baseline).
Uptraining from MHA (digits) needs the GQA family's projections: mla's uptrained row is
`unsupported`, and it is trained from scratch.
A variant with `causal_safe=False` still runs: every test re-runs only the tokens a causal
model may see (mqar's answers are never inputs, captions decodes from the prefix), so a leak
could hurt its training but never inflate its score.
"""

from __future__ import annotations

import attn_variants as av

from . import captions, digits, mqar, pairs
from .base import Init, Job, Outcome

TASKS = {task.name: task for task in (mqar.TASK, digits.TASK, captions.TASK, pairs.TASK)}

__all__ = ["TASKS", "Init", "Job", "Outcome", "get", "names", "unsupported"]


def names() -> list[str]:
    return list(TASKS)


def get(name: str):
    """The task called `name`; unknown names raise ValueError listing the valid ones."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; valid tasks: {names()}") from None


def unsupported(task_name: str, variant: str, init: Init = "scratch") -> str:
    """Why `variant` cannot run `task_name` from `init`, or '' when it can."""
    task, entry = get(task_name), av.info(variant)
    if entry.multimodal and not task.visual:
        return f"{variant} is multimodal (needs visual tokens); task {task_name!r} has none"
    if init.startswith("uptrained") and not issubclass(entry.cls, av.GroupedQueryAttention):
        # from_mha mean-pools K/V projections; mla has none (its keys come from a latent).
        return f"{variant} cannot be uptrained from MHA (no q/k/v/o projections); it runs from scratch"
    if init not in ("scratch", "uptrained") and "grouping" not in entry.options:
        return f"{variant} has no 'grouping' option: {init} needs one (gqa)"
    return ""
