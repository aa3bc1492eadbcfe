"""`KVCache`: the per-token state of the tokens seen so far, for decode and chunked prefill.

One class serves every variant (docs/, the variant contract): a cache is a set of named
fields, each a tensor that grows along its own token axis (axis 0 is always the batch).

- the GQA family stores "k" and "v", (b, g, s, e), token axis 2 (`update(k, v)`);
- MLA stores its latent and rope key instead, e.g. "kv" (b, s, kv_lora) and "pe" (b, s, rope);
- multimodal variants add per-token metadata, e.g. "modality" (b, s);
- KDGQA/DGQA add exact running statistics: prefix sums of squared key norms "key_sq_prefix" (b, g, s).

**Ragged batches.** Each example has its own length (`lengths`), as the requests of a served
batch do: `truncate([l_0, ..., l_{b-1}])` cuts each example to its own length, and an append
adds its tokens to each example's own end. A field reads back as a padded frame
(b, ..., s, ...), s the longest example; the slots past an example's length are padding, and
every variant attends through `attn_variants/ragged.py`, which masks them out (or slices them
off). Running statistics stay per example because each field is a per-example sequence.

**Layouts** (`layout`, attn_variants/paged.py): "padded" keeps one buffer per field;
"paged" keeps fixed-size pages (`page_size` tokens) and a block table, pages handed out in a
seeded random order. Both read back the same frame, so a variant computes the same numbers.

All fields hold the same tokens, so `truncate` cuts every one of them and nothing goes stale.
`nbytes` is what the layout holds (padded frame, or whole pages), metadata included;
`nbytes_needed` what each example's own tokens take.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from .paged import PaddedStore, PagedStore, PageTable

Layout = Literal["padded", "paged"]
LAYOUTS: tuple[Layout, ...] = ("padded", "paged")


@dataclass
class _Field:
    store: PaddedStore | PagedStore
    shape: list[int]  # the shape of an append, token axis marked 0: fixes the off-axis sizes
    axis: int  # the token axis
    base: list[int]  # each example's length at the last truncate (or creation)
    added: int = 0  # tokens appended to every example since
    _base_t: dict[torch.device, Tensor] = field(default_factory=dict)

    @property
    def lengths(self) -> list[int]:
        return [x + self.added for x in self.base]

    @property
    def frame(self) -> int:
        return max(self.base) + self.added

    @property
    def uniform(self) -> bool:
        return min(self.base) == max(self.base)

    def lengths_t(self, device: torch.device) -> Tensor:
        """Each example's length (b,) int64 on `device`, with no host-to-device copy per step:
        the base is copied once per truncate, the appended count added on the device."""
        if device not in self._base_t:
            self._base_t[device] = torch.tensor(self.base, dtype=torch.long, device=device)
        return self._base_t[device] + self.added

    def read(self) -> Tensor:
        return self.store.read(self.frame)

    def token_bytes(self) -> int:
        """Bytes of one token of one example."""
        numel = 1
        for i, s in enumerate(self.shape):
            numel *= 1 if i in (0, self.axis) else s
        return numel * _itemsize(self.store)


def _itemsize(store: PaddedStore | PagedStore) -> int:
    t = store.buffer if isinstance(store, PaddedStore) else store.physical
    return t.element_size()


class KVCache:
    """Named per-token fields, padded or paged. Padded buffers grow by doubling, so appending
    one token costs a slice write, not a copy of the whole cache (gpt-fast preallocates for the
    same reason). It is an inference cache: use it under `torch.no_grad()`.

    `n_visual` is mmca's fast-path hint: m when the tokens held are the prefix layout (m image
    tokens, then text, in every example), None for any other layout; the truth is the
    "modality" field (b, s).
    """

    def __init__(self, *, layout: Layout = "padded", page_size: int = 16, seed: int = 0) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"layout={layout!r} is not one of {list(LAYOUTS)}")
        self.layout = layout
        self.pages = PageTable(page_size, seed) if layout == "paged" else None
        self._fields: dict[str, _Field] = {}
        self.n_visual: int | None = 0
        self.filling = False  # inside `fill`: the variant skips its attention (`skips_attention`)

    def fill(
        self, module: nn.Module, x: Tensor, *, lengths: Sequence[int] | None = None, **layout: Any
    ) -> None:
        """Append the tokens x (b, n, d) exactly as `module(x, cache=self, **layout)` would, and
        leave the module's state (DGQA's norm_cache, PGQA's noise generator) as it would, but skip
        the attention itself, whose output a decode benchmark's prefill discards (dropout's draws
        go with it). The prompt's attention is O(n^2), every field O(n): on one CPU thread a fill
        takes 0.44-0.65x the forward's time at n=512 and 0.11-0.19x at n=8192
        (benchmarks/ratios_cache_fill.py). Each variant checks `skips_attention(cache)` after its
        last cache or state update; tests/attn_variants/test_cache_fill.py holds every variant to
        the same cache, state and next decode step as the forward.

        `lengths`: a ragged batch, example i keeping its first lengths[i] tokens of x
        (`truncate`). The module's state saw the whole padded prompt (DGQA's norm_cache)."""
        if self.filling:
            raise ValueError("KVCache.fill called inside another fill of the same cache")
        self.filling = True
        try:
            module(x, cache=self, **layout)
        finally:
            self.filling = False
        if lengths is not None:
            self.truncate(lengths)

    # --- generic fields --------------------------------------------------------------------

    def append(self, axis: int = 2, **fields: Tensor) -> tuple[Tensor, ...]:
        """Append each tensor along its token `axis` to the field of that name, at each
        example's own end; return every field's live contents (the padded frame, all tokens so
        far), in the order given.

        Fields appended in one call must add the same number of tokens; a field's shape off the
        token axis is fixed by its first append."""
        counts = {name: t.shape[axis] for name, t in fields.items()}
        if len(set(counts.values())) > 1:
            raise ValueError(f"fields appended together add different token counts: {counts}")
        return tuple(self._append(name, t, axis) for name, t in fields.items())

    def get(self, name: str) -> Tensor | None:
        """The live contents of field `name` (padded frame), or None if it was never appended."""
        f = self._fields.get(name)
        return None if f is None else f.read()

    def __contains__(self, name: str) -> bool:
        return name in self._fields

    def _append(self, name: str, new: Tensor, axis: int) -> Tensor:
        f = self._fields.get(name)
        if f is None:
            f = self._fields[name] = self._new_field(new, axis, [0] * new.shape[0])
        else:
            self._check_shape(name, f, new, axis)
        starts = f.lengths
        if self.pages is not None:
            if self.pages.reserve([s + new.shape[axis] for s in starts]):
                self._grow_pools()
            f.store.write(new, starts, f.lengths_t(new.device))
        else:
            f.store.write(new, starts, None if f.uniform else f.lengths_t(new.device))
        f.added += new.shape[axis]
        return f.read()

    def _new_field(self, like: Tensor, axis: int, base: list[int]) -> _Field:
        shape = list(like.shape)
        shape[axis] = 0
        store = PaddedStore(like, axis) if self.pages is None else PagedStore(like, axis, self.pages)
        return _Field(store, shape, axis, base)

    def _grow_pools(self) -> None:
        for f in self._fields.values():
            f.store.grow()

    def replace(self, name: str, values: Tensor, axis: int, like: str) -> Tensor:
        """Set field `name` to `values` (b, ..., s, ...), the padded frame of field `like`
        (the same tokens per example); return its live contents. For statistics recomputed
        over every token, and for metadata written out once."""
        ref = self._fields[like]
        if values.shape[axis] != ref.frame:
            raise ValueError(
                f"{name!r} has {values.shape[axis]} tokens; {like!r} holds a frame of {ref.frame}"
            )
        f = self._fields[name] = self._new_field(values, axis, [0] * values.shape[0])
        f.store.write(values, [0] * values.shape[0], values.new_zeros(values.shape[0], dtype=torch.long))
        f.base, f.added = list(ref.lengths), 0
        return f.read()

    @staticmethod
    def _check_shape(name: str, f: _Field, new: Tensor, axis: int) -> None:
        old = list(f.shape)
        got = list(new.shape)
        off_axis = got[:axis] + got[axis + 1 :] != old[:axis] + old[axis + 1 :]
        if axis != f.axis or len(got) != len(old) or off_axis:
            old[f.axis] = "*"
            raise ValueError(
                f"new {name!r} values of shape {tuple(new.shape)} (token axis {axis}) do not match the "
                f"cache's {tuple(old)} (token axis {f.axis})"
            )

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

    # --- lengths ---------------------------------------------------------------------------

    @property
    def length(self) -> int:
        """Tokens held by the longest example (within one call a field appended first is ahead)."""
        return max([0] + [f.frame for f in self._fields.values()])  # no max(default=): torch.compile

    @property
    def lengths(self) -> list[int]:
        """Each example's tokens (the field furthest ahead); [] before the first append."""
        per_field = [f.lengths for f in self._fields.values()]
        return [max(col) for col in zip(*per_field, strict=True)] if per_field else []

    @property
    def ragged(self) -> bool:
        """Whether the examples hold different numbers of tokens (attention must mask)."""
        return any(not f.uniform for f in self._fields.values())

    def field_length(self, name: str) -> int:
        """The frame of field `name` (its longest example), 0 if absent: a shape, no read."""
        f = self._fields.get(name)
        return 0 if f is None else f.frame

    def field_lengths(self, name: str) -> list[int]:
        """Each example's tokens in field `name` ([] if absent), on the host."""
        f = self._fields.get(name)
        return [] if f is None else f.lengths

    def lengths_of(self, name: str, device: torch.device | str) -> Tensor:
        """Each example's tokens in field `name`, (b,) int64 on `device`, no host sync."""
        return self._fields[name].lengths_t(torch.device(device))

    def truncate(self, length: int | Sequence[int]) -> None:
        """Forget every token from `length` on, in every field (used to repeat a decode step);
        a sequence gives each example its own length (a ragged batch)."""
        current = self.lengths
        target = self._target(length, current)
        if len(set(target)) > 1 or self.ragged:
            self._check_in_step()
        self._keep_layout(target)
        for f in self._fields.values():
            f.base = [min(x, t) for x, t in zip(f.lengths, target, strict=True)]
            f.added = 0
            f._base_t.clear()
        if self.pages is not None:
            self.pages.release(target)

    def _keep_layout(self, target: list[int]) -> None:
        """Keep `n_visual` true: a prefix layout cut short is still one while every example keeps
        the same number of image tokens; when they differ, the ids are written out to the
        "modality" field (the truth) and the hint becomes None."""
        m = self.n_visual
        if m is None or not target:
            return
        kept = {min(t, m) for t in target}
        if len(kept) == 1:
            self.n_visual = kept.pop()
            return
        if "modality" not in self._fields:
            like = next(iter(self._fields))
            ref = self._fields[like]
            device = ref.store.read(0).device
            ids = (torch.arange(ref.frame, device=device) < m).long().expand(len(target), ref.frame)  # (b, s)
            self.replace("modality", ids.contiguous(), 1, like)
        self.n_visual = None

    def _target(self, length: int | Sequence[int], current: list[int]) -> list[int]:
        if isinstance(length, int):
            if not 0 <= length <= self.length:
                raise ValueError(f"length={length} must be in [0, {self.length}]")
            return [min(length, c) for c in current]
        target = [int(t) for t in length]
        if len(target) != len(current) or any(not 0 <= t <= c for t, c in zip(target, current, strict=True)):
            raise ValueError(
                f"lengths={target} must give each of the {len(current)} examples a length in [0, {current}]"
            )
        return target

    def _check_in_step(self) -> None:
        lengths = {name: f.lengths for name, f in self._fields.items()}
        if len({tuple(x) for x in lengths.values()}) > 1:
            raise ValueError(f"a ragged truncate needs every field at the same lengths; got {lengths}")

    # --- bytes -----------------------------------------------------------------------------

    @property
    def nbytes(self) -> int:
        """Bytes the layout holds: padded, b * the longest example; paged, whole pages; for the
        GQA family on equal lengths, padded, exactly 2*b*g*s*e*itemsize."""
        if self.pages is not None:
            tokens = self.pages.held * self.pages.page_size
            return sum(tokens * f.token_bytes() for f in self._fields.values())
        return sum(len(f.base) * f.frame * f.token_bytes() for f in self._fields.values())

    @property
    def nbytes_needed(self) -> int:
        """Bytes of each example's own tokens, summed: what any layout must hold at least."""
        return sum(sum(f.lengths) * f.token_bytes() for f in self._fields.values())

    @property
    def fields(self) -> dict[str, tuple[int, ...]]:
        """Each field's live shape (padded frame), e.g. {"k": (b, g, s, e), "v": (b, g, s, e)}."""
        out = {}
        for name, f in self._fields.items():
            shape = list(f.shape)
            shape[f.axis] = f.frame
            out[name] = tuple(shape)
        return out


def skips_attention(cache: KVCache | None) -> bool:
    """True inside `KVCache.fill`: the variant has made its cache and state updates and returns
    zeros in place of its attention output."""
    return cache is not None and cache.filling
