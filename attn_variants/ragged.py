"""Attention over a ragged batch: each example attends to its own cached tokens only.

A `KVCache` holding examples of different lengths (`KVCache.ragged`) reads back a padded frame
k/v (b, g, s, e), s the longest example; example i's keys are its first `lengths[i]`, and its
n new queries sit at positions lengths[i] - n + t (bottom-right aligned per example). Two
kernels compute the same thing:

- "split": one backend call per example on its own slice k[i, :, :lengths[i]]: no padding is
  read or computed. Used on the host (CPU, eager), where a call costs microseconds and reading
  a value is free (`keydecode.on_host`); it is also the reference: each example is attended
  exactly as it would be alone.
- "mask": one backend call over the padded frame with a boolean key mask (b, 1, n, s), the
  padding masked out: static shapes, no host sync, for accelerators and torch.compile. It reads
  (and computes over) the padding.

Variants call `attend` instead of their backend when `active(cache)`; uniform caches keep the
unmasked path. `KERNELS` names the kernels for the rows of a sweep.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from .cache import KVCache
from .keydecode import on_host

Kernel = Literal["split", "mask"]
KERNELS: tuple[Kernel, ...] = ("split", "mask")


def active(cache: KVCache | None) -> bool:
    """Whether attention must respect per-example lengths: a cache whose examples differ."""
    return cache is not None and cache.ragged


def kernel_for(q: Tensor) -> Kernel:
    """ "split" on the host (CPU, eager), "mask" elsewhere (static shapes, no host sync)."""
    return "split" if on_host(q) else "mask"


def key_mask(lengths: Tensor, n: int, s: int, *, causal: bool) -> Tensor:
    """lengths (b,) -> (b, 1, n, s) bool, True where query t of example i (at position
    lengths[i] - n + t) may see key j: j <= its position if causal, else j < lengths[i]."""
    keys = torch.arange(s, device=lengths.device)  # (s,)
    last = lengths[:, None] - 1  # (b, 1): the example's last key
    if causal:
        last = last - n + 1 + torch.arange(n, device=lengths.device)  # (b, n): each query's position
    return (keys <= last[..., None])[:, None].expand(lengths.shape[0], 1, n, s)  # (b, 1, n, s)


def attend(
    backend: Callable[..., Tensor],
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cache: KVCache,
    *,
    field: str = "k",
    causal: bool,
    dropout_p: float = 0.0,
    kernel: Kernel | None = None,
) -> Tensor:
    """q (b, h, n, e), k/v (b, g, s, e) the padded frame of cache field `field` -> (b, h, n, e),
    each example over its own keys. `kernel` None: `kernel_for(q)`."""
    kernel = kernel or kernel_for(q)
    if kernel == "split":
        lengths = cache.field_lengths(field)
        outs = [
            backend(
                q[i : i + 1], k[i : i + 1, :, :n], v[i : i + 1, :, :n], causal=causal, dropout_p=dropout_p
            )
            for i, n in enumerate(lengths)
        ]  # (1, h, n, e) each
        return torch.cat(outs)  # (b, h, n, e)
    if kernel != "mask":
        raise ValueError(f"kernel={kernel!r} is not one of {list(KERNELS)}")
    mask = key_mask(cache.lengths_of(field, q.device), q.shape[2], k.shape[2], causal=causal)
    return backend(q, k, v, causal=False, dropout_p=dropout_p, mask=mask)


def positions(cache: KVCache | None, field: str, n: int, device: torch.device) -> Tensor:
    """The absolute positions of n tokens about to be appended to `field`: (n,) when every
    example has the same length, else (b, n), example i's starting at its own length."""
    if cache is None or field not in cache:
        return torch.arange(n, device=device)  # (n,)
    if not cache.ragged:
        start = cache.field_length(field)
        return torch.arange(start, start + n, device=device)  # (n,)
    return cache.lengths_of(field, device)[:, None] + torch.arange(n, device=device)  # (b, n)
