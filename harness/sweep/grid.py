"""The sweep's grid: which cells a config asks for, and the key that finds a cell's row again.

The grid is variants x backend x compile x modes x seq_len x n_heads x n_kv_heads. Cells are
deduplicated by the spec each variant resolves to (mha and mqa fix g), pairs with h % g != 0
or g > h are skipped and counted, and the cells of one shape run back to back so that a
variant and its mha reference see the same machine state. The check (harness/check/ratios.py) builds its
cells with the same `cell_at`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import attn_variants as av
from attn_variants import plugins

from ..variant_choice import VariantChoice, parse_one, parse_variants, with_backends
from .config import SweepConfig


@dataclass(frozen=True)
class Cell:
    """One point of the grid: a variant (with options) at one resolved shape and mode."""

    choice: VariantChoice
    mode: str
    batch: int
    seq_len: int
    n_visual: int
    spec: av.AttnSpec  # after the variant's preset
    dtype: str
    layout: str = "prefix"  # where the n_visual image tokens sit (multimodal variants)
    n_images: int = 0  # images in the sequence: 1 for prefix with n_visual > 0
    compile: str = "off"
    # Decode as served (workload.Serving): each request's cache length ((): all at seq_len),
    # drawn from `length_dist`; the KV cache layout and page size; query tokens per step.
    lengths: tuple[int, ...] = ()
    length_dist: str = "fixed"
    kv_layout: str = "padded"
    page_size: int = 16
    q_len: int = 1

    @property
    def serving(self) -> tuple[str, ...]:
        """The key's serving part: () for a fixed, padded, one-token decode (and every other
        mode), so existing CSVs and the check baseline still match."""
        return serving_key(self.length_dist, self.kv_layout, self.page_size, self.q_len)

    def key(self) -> tuple[str, ...]:
        s = self.spec
        values = (self.choice.name, self.choice.options_text, self.mode, self.batch, self.seq_len)
        key = (*values, self.n_visual, s.n_heads, s.n_kv_heads, s.head_dim, self.dtype)
        # The prefix layout and compile "off" keep the old key, so existing CSVs and the check
        # baseline still match.
        key = key if self.layout == "prefix" else (*key, self.layout, self.n_images)
        key = key if self.compile == "off" else (*key, f"compile={self.compile}")
        return tuple(map(str, (*key, *self.serving)))

    @property
    def backend(self) -> str:
        """The kernel this cell asks for: its `backend` option, or the registry default."""
        return dict(self.choice.options).get("backend", av.info(self.choice.name).options["backend"])


def row_key(row: dict[str, str]) -> tuple[str, ...]:
    """The `Cell.key` of a row read back from a CSV (resume)."""
    names = ("variant", "options", "mode", "batch", "seq_len", "n_visual", "n_heads", "n_kv_heads")
    key = tuple(str(row[k]) for k in (*names, "head_dim", "dtype"))
    layout = row.get("layout")
    layout = layout if isinstance(layout, str) and layout else "prefix"  # older CSVs: prefix
    key = key if layout == "prefix" else (*key, layout, str(row["n_images"]))
    compile = row.get("compile")
    compile = compile if isinstance(compile, str) and compile else "off"  # older CSVs: off
    key = key if compile == "off" else (*key, f"compile={compile}")
    if row.get("mode") != "decode" or not isinstance(row.get("kv_layout"), str) or not row["kv_layout"]:
        return key  # older CSVs, other modes: no serving part
    return (
        *key,
        *serving_key(
            row["lengths"], row["kv_layout"], int(float(row["page_size"])), int(float(row["q_len"]))
        ),
    )


def serving_key(dist: str, kv_layout: str, page_size: int, q_len: int) -> tuple[str, ...]:
    """() for the plain decode (fixed, padded, one token), else what sets the cell apart."""
    if (dist, kv_layout, q_len) == ("fixed", "padded", 1):
        return ()
    layout = f"kv={kv_layout}" + (f":{page_size}" if kv_layout == "paged" else "")
    return (f"lengths={dist}", layout, f"q_len={q_len}")


def grid(cfg: SweepConfig) -> tuple[list[Cell], list[tuple[int, int]]]:
    """The cells to run, and the (n_heads, n_kv_heads) pairs skipped as invalid."""
    plugins.load_all(cfg.plugins)  # their variants are named in cfg.variants
    choices = with_backends(parse_variants(cfg.variants), cfg.backend)
    runs = [(c, comp) for c in choices for comp in cfg.compile]
    if cfg.reference != "none":
        runs.insert(0, (parse_one(cfg.reference), "off"))  # the speedup baseline: sdpa, eager
    pairs = [(h, g) for h in cfg.heads for g in cfg.kv_heads]
    skipped = [(h, g) for h, g in pairs if g > h or h % g]
    cells: dict[tuple[str, ...], Cell] = {}
    for mode in cfg.modes:
        for b in cfg.batches:
            for n in _seq_lens(cfg, mode, b):
                for h, g in (p for p in pairs if p not in skipped):
                    for choice, comp in runs:
                        cell = with_serving(cell_at(choice, mode, n, h, g, cfg, comp, batch=b), cfg)
                        cells.setdefault(cell.key(), cell)
    if not cells:
        raise ValueError(
            f"empty grid: no valid (n_heads, n_kv_heads) pair in heads={cfg.heads}, "
            f"kv_heads={cfg.kv_heads} (n_heads must be divisible by n_kv_heads)"
        )
    return _by_shape(cells.values()), skipped


def _seq_lens(cfg: SweepConfig, mode: str, batch: int) -> tuple[int, ...]:
    """The seq_len axis; a decode cell whose lengths are drawn has one: the longest drawn."""
    if mode != "decode" or cfg.length_dist.fixed:
        return cfg.seq_len
    return (max(cfg.length_dist.draw(batch, 0, cfg.seed)),)


def with_serving(cell: Cell, cfg: SweepConfig) -> Cell:
    """A decode cell with the sweep's serving settings; other modes unchanged."""
    if cell.mode != "decode":
        return cell
    dist = cfg.length_dist
    lengths = () if dist.fixed else tuple(dist.draw(cell.batch, cell.seq_len, cfg.seed))
    return replace(
        cell, lengths=lengths, length_dist=dist.text, kv_layout=cfg.kv_layout, page_size=cfg.page_size,
        q_len=cfg.q_len,
    )  # fmt: skip


def cell_at(
    choice: VariantChoice,
    mode: str,
    n: int,
    h: int,
    g: int,
    cfg: SweepConfig | Any,
    compile: str = "off",
    *,
    batch: int | None = None,
) -> Cell:
    """The cell of `choice` at (mode, n, h, g): the variant's preset resolves g, multimodal
    variants get round(visual_frac * n) visual tokens. `cfg` gives batch, head_dim, dtype and
    visual_frac (a SweepConfig, or the check's CheckConfig, which has the same fields; the
    check has no `layout`, so its cells are prefix). Multimodal cells of the interleaved
    layout hold `images` images."""
    entry = av.info(choice.name)
    spec = entry.resolve(av.AttnSpec(dim=h * cfg.head_dim, n_heads=h, n_kv_heads=g))
    n_visual = round(cfg.visual_frac * n) if entry.multimodal else 0
    cell_layout = getattr(cfg, "layout", "prefix") if n_visual else "prefix"
    images = getattr(cfg, "images", 1) if cell_layout == "interleaved" else int(n_visual > 0)
    b = cfg.batch if batch is None else batch
    return Cell(choice, mode, b, n, n_visual, spec, cfg.dtype, cell_layout, images, compile)


def _by_shape(cells: Iterable[Cell]) -> list[Cell]:
    """Group the cells of one (mode, n, h) together, in grid order (stable)."""
    cells = list(cells)
    shapes = list(dict.fromkeys((c.mode, c.batch, c.seq_len, c.spec.n_heads) for c in cells))
    return sorted(cells, key=lambda c: shapes.index((c.mode, c.batch, c.seq_len, c.spec.n_heads)))
