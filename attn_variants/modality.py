"""Modality ids: which tokens are text and which belong to which image (the MMCA layouts).

`modality` is an integer tensor (b, n): 0 is text, k >= 1 is a token of image k. Positions are
arbitrary and may differ per example (multi-round, multi-image chat as in DeepSpeed-VisualChat,
arXiv 2309.14327), but the tokens of one image are contiguous: an image id never reappears
after another image or text. `n_visual=m` is shorthand for `[1]*m + [0]*(n - m)`, the prefix
layout.

Checks on the values (negative ids, a reappearing image) need the data on the host, so they
run only on concrete tensors: under FakeTensorMode, on meta tensors or inside torch.compile
they are skipped, and the caller takes the general path, which is right for every layout.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch._subclasses.fake_tensor import is_fake

TEXT = 0


def prefix(b: int, n: int, m: int, device: torch.device | str = "cpu") -> Tensor:
    """The prefix layout as modality ids (b, n): image 1 for the first m tokens, then text."""
    return (torch.arange(n, device=device) < m).long().expand(b, n)  # (b, n)


def check_call(x: Tensor, n_visual: int, modality: Tensor | None) -> None:
    """The layout arguments of `forward(x (b, n, d), *, n_visual, modality)`: shapes and types."""
    if modality is None:
        return
    if n_visual:
        raise ValueError(
            f"n_visual={n_visual} and modality were both given; pass one (n_visual=m is modality "
            "[1]*m + [0]*(n-m))"
        )
    if not isinstance(modality, Tensor):
        raise ValueError(f"modality must be an integer tensor (b, n); got {type(modality).__name__}")
    if tuple(modality.shape) != tuple(x.shape[:2]):
        raise ValueError(
            f"modality has shape {tuple(modality.shape)}; expected (b, n) = {tuple(x.shape[:2])}"
        )
    if modality.dtype.is_floating_point or modality.dtype.is_complex or modality.dtype == torch.bool:
        raise ValueError(f"modality has dtype {modality.dtype}; expected an integer dtype (torch.long)")


def check_unimodal(x: Tensor, dim: int, n_visual: int, modality: Tensor | None) -> None:
    """The input of a unimodal variant's forward: x (b, n, d), and a layout it validates and then
    ignores (it reads any layout as one causal stream: MMCA's "concat" baseline)."""
    if x.dim() != 3 or x.shape[-1] != dim:
        raise ValueError(f"x has shape {tuple(x.shape)}; expected (b, n, d={dim})")
    if not 0 <= n_visual <= x.shape[1]:
        raise ValueError(f"n_visual={n_visual} must be in [0, n={x.shape[1]}]")
    check_call(x, n_visual, modality)
    if modality is not None and concrete(modality):
        check_values(modality, modality.shape[1])  # this call's ids only: no cache of them


def concrete(t: Tensor) -> bool:
    """True when `t`'s values can be read: not fake, not meta, not being traced by torch.compile."""
    return not (torch.compiler.is_compiling() or t.is_meta or is_fake(t))


def check_values(full: Tensor, new: int, *, whole_images: bool = False) -> int | None:
    """Check the ids of a sequence `full` (b, s) whose last `new` tokens are this call's; return m
    if `full` is the prefix layout (one image of m tokens, then text, the same m in every example),
    else None. Earlier tokens were checked when they came; one host sync for all checks.

    whole_images: an image may not continue from the earlier tokens into this call's (MMCA
    "full" attention is bidirectional within an image, so it needs the image in one call).
    """
    b, s = full.shape
    head = full[:, s - new :]  # (b, new)
    first = head[:, 0] if new else full.new_zeros(b)  # (b,)
    before = full[:, s - new - 1] if s > new else full.new_zeros(b)  # (b,) the last earlier token
    split = whole_images & (s > new) & (first > 0) & (first == before)  # (b,)
    m = (full > 0).sum(dim=1)  # (b,) image tokens
    positions = torch.arange(s, device=full.device)  # (s,)
    as_prefix = torch.where(positions < m[:, None], full[:, :1], 0)  # (b, s)
    is_prefix = (full == as_prefix).all() & (m == m[:1]).all()
    flags = torch.stack([(head < 0).any(), _reappears(full).any(), split.any(), is_prefix, m[0]])
    negative, reappears, split_any, is_prefix, m0 = flags.tolist()  # the one host sync
    if negative:
        raise ValueError(
            f"modality has negative ids {sorted(set(head[head < 0].tolist()))}; 0 is text, k >= 1 image k"
        )
    if reappears:
        raise ValueError(f"modality: {_first_reappearance(full)}; the tokens of one image must be contiguous")
    if split_any:
        raise ValueError(
            f"modality: image {int(first[split].tolist()[0])} continues from the cached tokens into this "
            "call; visual_attention='full' needs each image whole in one call (or use 'self')"
        )
    return int(m0) if is_prefix else None


def _reappears(full: Tensor) -> Tensor:
    """(b, s) ids -> (b, s - 1) bool: True where an image id reappears after other tokens.

    Stable sort by id: the positions of one image, in order, must be consecutive integers."""
    ids, order = torch.sort(full, dim=1, stable=True)  # (b, s) each
    same = (ids[:, 1:] == ids[:, :-1]) & (ids[:, 1:] > 0)  # (b, s - 1) neighbours of one image
    return same & (order[:, 1:] - order[:, :-1] != 1)


def _first_reappearance(full: Tensor) -> str:
    """A readable account of the first reappearing image id (the error path only)."""
    for row, ids in enumerate(full.tolist()):
        seen: set[int] = set()
        for j, k in enumerate(ids):
            if k > 0 and k in seen and ids[j - 1] != k:
                return f"image id {k} of example {row} reappears at position {j} after other tokens"
            seen.add(k)
    return "an image id reappears"  # unreachable when _reappears found one
