"""Where a `KVCache` field keeps its tokens: padded rows, or fixed-size pages and a block table.

- padded: one buffer (b, ..., capacity, ...) per field, example i's token t at row i, slot t;
  every example is as long as the longest (the padding is memory the layout holds).
- paged (vLLM's PagedAttention, Kwon et al. 2023, arXiv 2309.06180; FlexAttention's
  `PagedAttention`; `torch.nn.attention.varlen`'s `block_table`): one physical pool of pages of
  `page_size` tokens per field, (pages * page_size, ...) token-major, so a K/V pool viewed as
  (pages, page_size, g, e) is varlen's layout. A `PageTable` shared by every field of a cache
  maps example i's logical page p to a physical page. Pages are handed out in a seeded random
  order (a permutation of the pool; a page belongs to one example at most), so nothing that
  reads through the table can rely on the layout being secretly contiguous.

Both stores read back a padded frame (b, ..., frame, ...): rows past an example's own length
hold stale or zero values (never NaN: buffers start zeroed), which attention masks out.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


class PaddedStore:
    """A field as one buffer (b, ..., capacity, ...), grown by doubling along the token axis."""

    def __init__(self, like: Tensor, axis: int) -> None:
        shape = list(like.shape)
        shape[axis] = 0
        self.buffer = like.new_zeros(shape)
        self.axis = axis

    def write(self, new: Tensor, starts: list[int], starts_t: Tensor | None) -> None:
        """new (b, ..., n, ...): example i's tokens at slots starts[i] .. starts[i] + n - 1."""
        n, axis = new.shape[self.axis], self.axis
        self._reserve(max(starts) + n)
        if starts_t is None:  # every example starts at the same slot: one slice copy
            self.buffer.narrow(axis, starts[0], n).copy_(new)
            return
        slots = starts_t[:, None] + torch.arange(n, device=new.device)  # (b, n)
        view = [1] * new.dim()
        view[0], view[axis] = new.shape[0], n
        self.buffer.scatter_(axis, slots.view(view).expand(new.shape), new)

    def read(self, frame: int) -> Tensor:
        """The first `frame` slots of every example (b, ..., frame, ...): a view, no copy."""
        return self.buffer.narrow(self.axis, 0, frame)

    def _reserve(self, end: int) -> None:
        capacity = self.buffer.shape[self.axis]
        if end <= capacity:
            return
        shape = list(self.buffer.shape)
        shape[self.axis] = max(end, 2 * capacity)  # doubling: appending a token is a slice write
        grown = self.buffer.new_zeros(shape)
        grown.narrow(self.axis, 0, capacity).copy_(self.buffer)
        self.buffer = grown


class PageTable:
    """Which physical pages hold each example's tokens, shared by every field of one cache.

    `pages[i]` lists example i's physical pages in logical order. The pool grows by doubling;
    its new pages join the free list in a `torch.randperm` order drawn from a generator seeded
    with `seed`, and a page released by `truncate` is the next one handed out (so a repeated
    decode step reuses the same pages)."""

    def __init__(self, page_size: int, seed: int = 0) -> None:
        if not isinstance(page_size, int) or isinstance(page_size, bool) or page_size <= 0:
            raise ValueError(f"page_size={page_size!r} must be a positive integer")
        self.page_size = page_size
        self.generator = torch.Generator().manual_seed(seed)
        self.pool = 0  # physical pages
        self.free: list[int] = []  # handed out from the end
        self.pages: list[list[int]] = []
        self._tables: dict[torch.device, Tensor] = {}  # (b, max pages) per device, until pages change

    def reserve(self, tokens: list[int]) -> bool:
        """Give example i pages for tokens[i] tokens; True when the pool grew (stores must grow)."""
        if not self.pages:
            self.pages = [[] for _ in tokens]
        need = [math.ceil(t / self.page_size) - len(p) for t, p in zip(tokens, self.pages, strict=True)]
        missing = sum(max(0, x) for x in need)
        if not missing:
            return False
        grew = missing > len(self.free)
        if grew:
            self._grow(max(self.pool + missing - len(self.free), 2 * self.pool))
        for held, k in zip(self.pages, need, strict=True):
            held.extend(self.free.pop() for _ in range(max(0, k)))
        self._tables.clear()
        return grew

    def release(self, tokens: list[int]) -> None:
        """Return the pages past tokens[i] of each example to the free list, so that the next
        `reserve` hands each example back the very pages it released (last example first in,
        so first out)."""
        for held, t in reversed(list(zip(self.pages, tokens, strict=True))):
            keep = math.ceil(t / self.page_size)
            while len(held) > keep:
                self.free.append(held.pop())
                self._tables.clear()

    def _grow(self, pool: int) -> None:
        fresh = (torch.randperm(pool - self.pool, generator=self.generator) + self.pool).tolist()
        self.free = fresh + self.free  # pages released earlier are still handed out first
        self.pool = pool

    def table(self, device: torch.device) -> Tensor:
        """The block table (b, max pages), int64, on `device`; missing pages read page 0 (masked)."""
        if device not in self._tables:
            width = max(1, max(len(p) for p in self.pages))
            rows = [p + [0] * (width - len(p)) for p in self.pages]
            self._tables[device] = torch.tensor(rows, dtype=torch.long, device=device)
        return self._tables[device]

    def slots(self, positions: Tensor) -> Tensor:
        """Logical positions (b, n) -> physical rows (b, n) through the table."""
        ps = self.page_size
        table = self.table(positions.device)  # (b, pages)
        return table.gather(1, positions // ps) * ps + positions % ps  # (b, n)

    @property
    def held(self) -> int:
        """Pages handed out to examples."""
        return sum(len(p) for p in self.pages)


class PagedStore:
    """A field as a physical pool (pool * page_size, ...) token-major, read through a PageTable."""

    def __init__(self, like: Tensor, axis: int, table: PageTable) -> None:
        self.axis, self.table = axis, table
        rest = [s for i, s in enumerate(like.shape) if i not in (0, axis)]
        self.physical = like.new_zeros(table.pool * table.page_size, *rest)  # (rows, ...)

    def grow(self) -> None:
        """Follow the table's pool: rows keep their content, new rows start at zero."""
        rows = self.table.pool * self.table.page_size
        if rows > self.physical.shape[0]:
            grown = self.physical.new_zeros(rows, *self.physical.shape[1:])
            grown[: self.physical.shape[0]] = self.physical
            self.physical = grown

    def write(self, new: Tensor, starts: list[int], starts_t: Tensor) -> None:
        """new (b, ..., n, ...): example i's tokens at logical positions starts[i] + j (pages
        already reserved)."""
        n = new.shape[self.axis]
        positions = starts_t[:, None] + torch.arange(n, device=new.device)  # (b, n)
        rows = new.movedim(self.axis, 1).flatten(0, 1)  # (b*n, ...) token-major
        self.physical.index_copy_(0, self.table.slots(positions).flatten(), rows)

    def read(self, frame: int) -> Tensor:
        """Gather every example's first `frame` positions (b, ..., frame, ...): a copy."""
        b = len(self.table.pages)
        device = self.physical.device
        positions = torch.arange(frame, device=device).expand(b, frame)  # (b, frame)
        rows = self.physical.index_select(0, self.table.slots(positions).flatten())  # (b*frame, ...)
        return rows.unflatten(0, (b, frame)).movedim(1, self.axis)  # (b, ..., frame, ...)
