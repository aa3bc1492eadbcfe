"""Attention kernels ("backends"), one signature for all, separate from the variants.

HF transformers keeps the kernel (eager, sdpa, flash) apart from how Q/K/V are projected and
grouped; so do we. A variant calls `BACKENDS[name](q, k, v, causal=..., dropout_p=...)`,
optionally with `mask`: a bool (b or 1, 1, n, s), True where a query may see a key (MMCA's
layouts); with a mask, `causal` must be False (the mask says everything).

- `sdpa`: `F.scaled_dot_product_attention`, PyTorch picks the kernel;
- `sdpa_flash`, `sdpa_efficient`, `sdpa_cudnn`, `sdpa_math`: the same call with one kernel
  forced by `torch.nn.attention.sdpa_kernel` (it raises "No available kernel" where that
  kernel cannot run: `unsupported` says why before a benchmark tries);
- `eager`: the reference, softmax(q k^T / sqrt(e)) v written out;
- `flex`: `torch.nn.attention.flex_attention` with a `BlockMask` (flex.py), built once per
  shape and device and kept in `MASKS`, whose build time is recorded apart.

q is (b, h, n, e); k and v are (b, g, s, e) with h % g == 0, and query head i reads KV head
i // (h/g) (GQA, arXiv 2305.13245). With a KV cache s > n: query i sits at absolute position
s - n + i, so the causal mask is aligned bottom-right.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from . import flex

Backend = Callable[..., Tensor]


def causal_mask(n: int, s: int, device: torch.device) -> Tensor:
    """(n, s) bool, True where query i (at position s - n + i) may see key j."""
    return torch.ones(n, s, dtype=torch.bool, device=device).tril(diagonal=s - n)


def _check_heads(q: Tensor, k: Tensor) -> None:
    h, g = q.shape[1], k.shape[1]
    if h % g:
        raise ValueError(f"query heads h={h} are not divisible by key/value heads g={g}")


def _check_mask(causal: bool, mask: Tensor | None) -> None:
    if mask is not None and (causal or mask.dtype != torch.bool or mask.dim() != 4):
        raise ValueError(
            f"mask must be bool (b, 1, n, s) with causal=False; got {mask.dtype} "
            f"{tuple(mask.shape)}, causal={causal}"
        )


def no_fused_gqa(device_type: str, dtype: torch.dtype) -> bool:
    """True where `enable_gqa` would send SDPA to its math kernel: CUDA float32.

    In torch 2.5-2.13 no fused CUDA kernel takes float32 with h != g: flash and cuDNN need
    fp16/bf16, and memory-efficient (which takes float32) has no GQA, so `enable_gqa=True`
    falls back to math, and GQA would be timed against an MHA that runs memory-efficient.
    On CPU, the flash kernel takes float32 with `enable_gqa`, so K/V stay unrepeated there.
    """
    return device_type == "cuda" and dtype == torch.float32


def sdpa(
    q: Tensor, k: Tensor, v: Tensor, *, causal: bool, dropout_p: float = 0.0, mask: Tensor | None = None
) -> Tensor:
    """Fused `F.scaled_dot_product_attention` with `enable_gqa`: K/V are never repeated,
    except on CUDA float32 (`no_fused_gqa`), where they are expanded to h heads so that the
    memory-efficient kernel runs instead of math (h/g times the K/V memory; same result).

    Returns (b, h, n, e). A row of `mask` with no True key gives NaN: callers keep none.
    """
    _check_heads(q, k)
    h, g = q.shape[1], k.shape[1]
    if h != g and no_fused_gqa(q.device.type, q.dtype):
        k = k.repeat_interleave(h // g, dim=1)  # (b, h, s, e): query head i reads KV head i // (h/g)
        v = v.repeat_interleave(h // g, dim=1)  # (b, h, s, e)
    n, s = q.shape[2], k.shape[2]
    _check_mask(causal, mask)
    # A single query at the end of the sequence sees every key: no mask needed.
    is_causal = causal and n == s
    if causal and n != s and n > 1:
        mask = causal_mask(n, s, q.device)
    return F.scaled_dot_product_attention(
        q,
        k,
        v,
        attn_mask=mask,
        dropout_p=dropout_p,
        is_causal=is_causal,
        enable_gqa=q.shape[1] != k.shape[1],  # False once K/V were expanded above
    )


def eager(
    q: Tensor, k: Tensor, v: Tensor, *, causal: bool, dropout_p: float = 0.0, mask: Tensor | None = None
) -> Tensor:
    """The reference: softmax(q k^T / sqrt(e)) v, written for clarity. Returns (b, h, n, e)."""
    _check_heads(q, k)
    _check_mask(causal, mask)
    k, v = expand_kv(q, k), expand_kv(q, v)  # (b, h, s, e)
    scores = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5  # (b, h, n, s)
    if causal:
        mask = causal_mask(q.shape[2], k.shape[2], q.device)  # (n, s)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = F.dropout(scores.softmax(dim=-1), p=dropout_p)  # (b, h, n, s)
    return weights @ v  # (b, h, n, e)


# Forced kernels. Flash and math take `enable_gqa`. Memory-efficient does not (see
# `no_fused_gqa`), and cuDNN's GQA support depends on the torch/cuDNN build, so both get K/V
# expanded to h heads first, as HF transformers' `repeat_kv` does: the forced kernel then
# runs wherever its dtype and shape rules allow, and the repeat is part of the timed call.
FORCED: dict[str, tuple[SDPBackend, bool]] = {
    "sdpa_flash": (SDPBackend.FLASH_ATTENTION, True),
    "sdpa_efficient": (SDPBackend.EFFICIENT_ATTENTION, False),
    "sdpa_cudnn": (SDPBackend.CUDNN_ATTENTION, False),
    "sdpa_math": (SDPBackend.MATH, True),
}


def forced(name: str) -> Backend:
    """`sdpa` with the kernel of FORCED[name] and nothing else allowed."""
    kernel, gqa = FORCED[name]

    def run(
        q: Tensor, k: Tensor, v: Tensor, *, causal: bool, dropout_p: float = 0.0, mask: Tensor | None = None
    ) -> Tensor:
        if not gqa:
            k, v = expand_kv(q, k), expand_kv(q, v)  # (b, h, s, e)
        with sdpa_kernel(kernel):
            return sdpa(q, k, v, causal=causal, dropout_p=dropout_p, mask=mask)

    run.__name__ = run.__qualname__ = name
    return run


def expand_kv(q: Tensor, t: Tensor) -> Tensor:
    """t (b, g, s, e) -> (b, h, s, e), KV head i // (h/g) for query head i; t itself when
    h = g (the decode path's rows layout: no copy of the cache)."""
    _check_heads(q, t)
    if q.shape[1] == t.shape[1]:
        return t
    return t.repeat_interleave(q.shape[1] // t.shape[1], dim=1)


def unsupported(name: str, device: torch.device | str, mode: str) -> str:
    """Why backend `name` cannot run `mode` on `device`, or '' if it can (as far as torch says
    before trying; a kernel refusing a dtype or shape raises "No available kernel" at the call)."""
    get_backend(name)
    kind = torch.device(device).type
    if name in ("sdpa_efficient", "sdpa_cudnn") and kind == "cpu":
        kernel = FORCED[name][0].name
        return f"backend {name!r}: SDPA has no CPU kernel for {kernel} (CUDA only)"
    if name == "flex" and kind == "cpu" and mode == "fwd_bwd":
        return "backend 'flex': FlexAttention does not support backward on CPU (torch: inference only)"
    return ""


def is_unavailable(err: BaseException) -> bool:
    """True when torch refuses to run this here: SDPA's "No available kernel" for a forced
    kernel at this dtype/shape/device, or a NotImplementedError, bare or wrapped by Inductor
    (torch 2.13's CPU flex template cannot take a fused epilogue: "Unsupported for
    `epilogue_nodes` in CppFlexAttentionTemplate", compiled mmca decode through flex)."""
    if isinstance(err, NotImplementedError):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("No available kernel" in text or "NotImplementedError" in text)


BACKENDS: dict[str, Backend] = {
    "sdpa": sdpa,
    **{name: forced(name) for name in FORCED},
    "eager": eager,
    "flex": flex.attend,
}


def get_backend(name: str) -> Backend:
    """The kernel called `name`; unknown names raise ValueError listing the valid ones."""
    try:
        return BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; valid backends: {sorted(BACKENDS)}") from None
