"""`KVCache`: the per-token state of the tokens seen so far, for decode and chunked prefill.

One class serves every variant (docs/, the variant contract): a cache is a set of named
fields, each a tensor that grows along its own token axis.

- the GQA family stores "k" and "v", (b, g, s, e), token axis 2 (`update(k, v)`);
- MLA stores its latent and rope key instead, e.g. "kv" (b, s, kv_lora) and "pe" (b, s, rope);
- multimodal variants add per-token metadata, e.g. "modality" (b, s);
- KDGQA/DGQA add exact running statistics: prefix sums of squared key norms "key_sq_prefix" (b, g, s).

All fields hold the same tokens, so `truncate(length)` cuts every one of them and nothing
goes stale. `nbytes` counts every live element of every field: it is what the cache really
stores, metadata included.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn


@dataclass
class _Field:
    buffer: Tensor  # the storage, `capacity` long on `axis`
    axis: int  # the token axis
    length: int = 0  # live tokens

    def live(self) -> Tensor:
        return self.buffer.narrow(self.axis, 0, self.length)


class KVCache:
    """Named per-token fields that grow by doubling, so appending one token costs a slice write,
    not a copy of the whole cache (gpt-fast preallocates for the same reason). It is an inference
    cache: use it under `torch.no_grad()`.

    `n_visual` is mmca's fast-path hint: m when the tokens held are the prefix layout (m image
    tokens, then text), None for any other layout; the truth is the "modality" field (b, s).
    """

    def __init__(self) -> None:
        self._fields: dict[str, _Field] = {}
        self.n_visual: int | None = 0
        self.filling = False  # inside `fill`: the variant skips its attention (`skips_attention`)

    def fill(self, module: nn.Module, x: Tensor, **layout: Any) -> None:
        """Append the tokens x (b, n, d) exactly as `module(x, cache=self, **layout)` would, and
        leave the module's state (DGQA's norm_cache, PGQA's noise generator) as it would, but skip
        the attention itself, whose output a decode benchmark's prefill discards (dropout's draws
        go with it). The prompt's attention is O(n^2), every field O(n): on one CPU thread a fill
        takes 0.44-0.65x the forward's time at n=512 and 0.11-0.19x at n=8192
        (benchmarks/ratios_cache_fill.py). Each variant checks `skips_attention(cache)` after its
        last cache or state update; tests/attn_variants/test_cache_fill.py holds every variant to
        the same cache, state and next decode step as the forward."""
        if self.filling:
            raise ValueError("KVCache.fill called inside another fill of the same cache")
        self.filling = True
        try:
            module(x, cache=self, **layout)
        finally:
            self.filling = False

    # --- generic fields --------------------------------------------------------------------

    def append(self, axis: int = 2, **fields: Tensor) -> tuple[Tensor, ...]:
        """Append each tensor along its token `axis` to the field of that name; return every
        field's live contents (all tokens so far), in the order given.

        Fields appended in one call must add the same number of tokens; a field's shape off the
        token axis is fixed by its first append."""
        counts = {name: t.shape[axis] for name, t in fields.items()}
        if len(set(counts.values())) > 1:
            raise ValueError(f"fields appended together add different token counts: {counts}")
        return tuple(self._append(name, t, axis) for name, t in fields.items())

    def get(self, name: str) -> Tensor | None:
        """The live contents of field `name`, or None if it was never appended."""
        f = self._fields.get(name)
        return None if f is None else f.live()

    def __contains__(self, name: str) -> bool:
        return name in self._fields

    def _append(self, name: str, new: Tensor, axis: int) -> Tensor:
        f = self._fields.get(name)
        if f is not None:
            self._check_shape(name, f, new, axis)
        end = (f.length if f else 0) + new.shape[axis]
        f = self._fields[name] = self._reserve(f, new, axis, end)
        f.buffer.narrow(axis, f.length, new.shape[axis]).copy_(new)
        f.length = end
        return f.live()

    @staticmethod
    def _check_shape(name: str, f: _Field, new: Tensor, axis: int) -> None:
        old = list(f.buffer.shape)
        got = list(new.shape)
        off_axis = got[:axis] + got[axis + 1 :] != old[:axis] + old[axis + 1 :]
        if axis != f.axis or len(got) != len(old) or off_axis:
            old[f.axis] = "*"
            raise ValueError(
                f"new {name!r} values of shape {tuple(new.shape)} (token axis {axis}) do not match the "
                f"cache's {tuple(old)} (token axis {f.axis})"
            )

    @staticmethod
    def _reserve(f: _Field | None, like: Tensor, axis: int, end: int) -> _Field:
        if f is not None and end <= f.buffer.shape[axis]:
            return f
        capacity = max(end, 2 * (f.buffer.shape[axis] if f is not None else 0))
        shape = list(like.shape)
        shape[axis] = capacity
        grown = _Field(like.new_empty(shape), axis)
        if f is not None:
            grown.buffer.narrow(axis, 0, f.length).copy_(f.live())
            grown.length = f.length
        return grown

    # --- the GQA family's K/V ----------------------------------------------------------------

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append k, v (b, g, n_new, e); return every cached key and value (b, g, s, e)."""
        return self.append(2, k=k, v=v)

    @property
    def keys(self) -> Tensor | None:
        """Cached keys (b, g, s, e)."""
        return self.get("k")

    @property
    def values(self) -> Tensor | None:
        """Cached values (b, g, s, e)."""
        return self.get("v")

    # --- every field at once ---------------------------------------------------------------

    @property
    def length(self) -> int:
        """Tokens held (the longest field: within one call a field appended first is ahead)."""
        return max([0] + [f.length for f in self._fields.values()])  # no max(default=): torch.compile

    def truncate(self, length: int) -> None:
        """Forget every token from `length` on, in every field (used to repeat a decode step)."""
        if not 0 <= length <= self.length:
            raise ValueError(f"length={length} must be in [0, {self.length}]")
        for f in self._fields.values():
            f.length = min(f.length, length)
        if self.n_visual is not None:  # a prefix layout cut short is still one
            self.n_visual = min(self.n_visual, length)  # forgotten visual tokens are not visual keys

    @property
    def nbytes(self) -> int:
        """Bytes of every live field; for the GQA family, exactly 2*b*g*s*e*itemsize."""
        return sum(f.live().numel() * f.buffer.element_size() for f in self._fields.values())

    @property
    def fields(self) -> dict[str, tuple[int, ...]]:
        """Each field's live shape, e.g. {"k": (b, g, s, e), "v": (b, g, s, e)}."""
        return {name: tuple(f.live().shape) for name, f in self._fields.items()}


def skips_attention(cache: KVCache | None) -> bool:
    """True inside `KVCache.fill`: the variant has made its cache and state updates and returns
    zeros in place of its attention output."""
    return cache is not None and cache.filling
