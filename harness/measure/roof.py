"""The roofline time of a decode step: how long this machine needs, at best, for what it must do.

A decode step reads the variant's whole KV cache, its weights and its input, writes its output,
and does `flops_effective` arithmetic. Its roofline time is the longer of the two:

    roof_s = max(decode_bytes / peak_bytes_per_s, flops_effective / peak_flops)

with the peaks `attnbench calibrate` measured on this machine (copy bandwidth, dense matmul
FLOP/s), and `roof_util = roof_s / latency`: 1 is the roof, 0.5 twice as slow as it.

`decode_bytes` counts the cache as the registry does (`kv_cache_bytes`: K and V for the GQA
family, the latent and rope key for mla, whatever `cache_per_token` says), every parameter and
buffer of the module (a decode step reads each projection once), the new tokens x (b, n_q, d)
and the output (b, n_q, d). It is the variant's own traffic, not only the attention's
(`bytes_moved`), because at decode the weights are a large share of it: at d=1024, h=16, g=4 and
n=16,384 they are 10.5 MB against a 33.5 MB cache.
"""

from __future__ import annotations

import torch
from torch import nn


def weight_bytes(module: nn.Module) -> int:
    """Bytes of every parameter and buffer of `module` (each read once by a decode step)."""
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def decode_bytes(module: nn.Module, kv_cache_bytes: int, batch: int, q_len: int, dtype: torch.dtype) -> int:
    """What one decode step of `module` must move: its cache, its weights, x in and out."""
    dim = module.spec.dim
    io = 2 * batch * q_len * dim * torch.empty((), dtype=dtype).element_size()  # x (b, n_q, d) and out
    return kv_cache_bytes + weight_bytes(module) + io


def roof_s(n_bytes: int, flops: float, peak_bytes_per_s: float, peak_flops: float) -> float:
    """The roofline time: the longer of moving `n_bytes` and doing `flops` at the peaks."""
    if peak_bytes_per_s <= 0 or peak_flops <= 0:
        raise ValueError(f"peaks must be positive: {peak_bytes_per_s=} {peak_flops=}")
    return max(n_bytes / peak_bytes_per_s, flops / peak_flops)


def bound(n_bytes: int, flops: float, peak_bytes_per_s: float, peak_flops: float) -> str:
    """Which side sets the roof: "memory" or "compute"."""
    return "memory" if n_bytes / peak_bytes_per_s >= flops / peak_flops else "compute"
