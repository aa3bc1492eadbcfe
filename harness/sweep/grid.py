"""The grid the sweep and the check walk: its settings (`GridConfig`), its cells, and the key
that finds a cell's row again.

The grid is variants x backend x compile x modes x seq_len x n_heads x n_kv_heads. Cells are
deduplicated by the spec each variant resolves to (mha and mqa fix g), pairs with h % g != 0
or g > h are skipped and counted, and the cells of one shape run back to back so that a
variant and its mha reference see the same machine state. `expand` builds the cells of both
commands (harness/sweep/runner.py `grid`, harness/check/ratios.py `cells`), once per run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import attn_variants as av
from attn_variants.registry import Mode

from ..variant_choice import VariantChoice, parse_one, parse_variants, with_backends

CompileMode = Literal["off", "default", "max-autotune"]
Skipped = list[tuple[int, int]]  # (n_heads, n_kv_heads) pairs left out: g > h or h % g != 0


@dataclass(frozen=True)
class GridConfig:
    """The settings `[sweep]` and `[check]` share: the grid and the shape of its cells.

    SweepConfig and CheckConfig extend it, each with its own defaults (bench.toml's tables say
    why); the checks below run once, when either is built, so a bad value (an unknown backend
    among them) fails there and nowhere else.
    """

    variants: tuple[str, ...] = ("all",)  # names, 'name:key=value:...' with options, or 'all'
    # The sweep adds it to the grid so every shape has a speedup baseline ('none': don't); the
    # check times every cell against it (through SDPA, its default), so it is not a cell there.
    reference: str = "mha"
    seq_len: tuple[int, ...] = (256, 512, 1024, 2048)
    heads: tuple[int, ...] = (8,)
    kv_heads: tuple[int, ...] = (1, 2, 4, 8)
    modes: tuple[Mode, ...] = ("fwd", "fwd_bwd", "decode")
    # The kernel axis: each variant runs with each of these `backend` options (one given in
    # the variant's own options wins); the reference stays on sdpa. See attn_variants/backends.py.
    backend: tuple[str, ...] = ("sdpa",)
    # torch.compile(mode=..., fullgraph=True) axis; "off" is eager. The reference stays "off".
    compile: tuple[CompileMode, ...] = ("off",)
    batch: int | tuple[int, ...] = 2  # b, or several (tokens/s against batch size): read `batches`
    head_dim: int = 64  # e; the model width is d = h * e, so every h keeps the same head size
    # auto: bfloat16 on CUDA (no fused CUDA kernel takes float32 with h != g, see
    # attn_variants.backends.no_fused_gqa), float32 on CPU. A dtype given anywhere is kept.
    dtype: Literal["auto", "float32", "float64", "float16", "bfloat16"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA when torch sees one
    visual_frac: float = 0.25  # multimodal variants: n_visual = round(visual_frac * seq_len)

    def __post_init__(self) -> None:
        for name in ("variants", "seq_len", "heads", "kv_heads", "modes", "backend", "compile"):
            if not getattr(self, name):
                raise ValueError(f"empty grid: {name} has no values")
        for name in self.backend:
            av.get_backend(name)  # unknown names raise, listing the valid backends
        for name in ("seq_len", "heads", "kv_heads"):
            bad = [v for v in getattr(self, name) if v <= 0]
            if bad:
                raise ValueError(f"{name} values must be positive; got {bad}")
        if not self.batches:
            raise ValueError("empty grid: batch has no values")
        for name, value in [*(("batch", b) for b in self.batches), ("head_dim", self.head_dim)]:
            if value < 1:
                raise ValueError(f"{name}={value} must be >= 1")
        if not 0.0 <= self.visual_frac <= 1.0:
            raise ValueError(f"visual_frac={self.visual_frac} must be in [0, 1]")

    @property
    def batches(self) -> tuple[int, ...]:
        """The batch sizes (`batch` given as one int or several)."""
        return self.batch if isinstance(self.batch, tuple) else (self.batch,)

    def seq_lens(self, mode: str, batch: int) -> tuple[int, ...]:
        """The seq_len axis of `mode` at `batch` (SweepConfig: drawn decode lengths have one)."""
        return self.seq_len

    def serve(self, cell: Cell) -> Cell:
        """`cell` with the command's serving settings (SweepConfig: a decode cell's cache)."""
        return cell


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


def expand(
    cfg: GridConfig, *, reference_first: bool, layout: str = "prefix", images: int = 1
) -> tuple[list[Cell], Skipped]:
    """The cells of `cfg`'s grid, deduplicated by key and grouped by shape, and the pairs skipped.

    `reference_first` (the sweep): the reference runs first at every shape, through sdpa and
    uncompiled, as the speedup baseline. Otherwise (the check) that run is left out of the
    cells, and so is a variant named plainly as the reference: every cell is timed against it.
    Multimodal cells sit in `layout` ("prefix", or "interleaved" with `images` images). The
    config's `seq_lens` and `serve` hooks give decode cells their lengths and cache layout."""
    reference = parse_one(cfg.reference) if cfg.reference != "none" else None
    choices = parse_variants(cfg.variants)
    if not reference_first:
        choices = [c for c in choices if c != reference]
    runs = [(c, comp) for c in with_backends(choices, cfg.backend) for comp in cfg.compile]
    if reference is not None and reference_first:
        runs.insert(0, (reference, "off"))
    elif reference is not None:
        runs = [run for run in runs if run != (reference, "off")]
    pairs = [(h, g) for h in cfg.heads for g in cfg.kv_heads]
    skipped = [(h, g) for h, g in pairs if g > h or h % g]
    cells: dict[tuple[str, ...], Cell] = {}
    placing = {"layout": layout, "images": images}
    for mode in cfg.modes:
        for b in cfg.batches:
            for n in cfg.seq_lens(mode, b):
                for h, g in (p for p in pairs if p not in skipped):
                    for choice, comp in runs:
                        cell = cfg.serve(cell_at(choice, mode, n, h, g, cfg, comp, batch=b, **placing))
                        cells.setdefault(cell.key(), cell)
    if not cells:
        raise ValueError(
            f"empty grid: no valid (n_heads, n_kv_heads) pair in heads={cfg.heads}, "
            f"kv_heads={cfg.kv_heads} (n_heads must be divisible by n_kv_heads)"
        )
    return _by_shape(cells.values()), skipped


def cell_at(
    choice: VariantChoice,
    mode: str,
    n: int,
    h: int,
    g: int,
    cfg: GridConfig,
    compile: str = "off",
    *,
    batch: int | None = None,
    layout: str = "prefix",
    images: int = 1,
) -> Cell:
    """The cell of `choice` at (mode, n, h, g): the variant's preset resolves g, multimodal
    variants get round(visual_frac * n) visual tokens; `cfg` gives batch, head_dim, dtype and
    visual_frac. Multimodal cells of the interleaved layout hold `images` images."""
    entry = av.info(choice.name)
    spec = entry.resolve(av.AttnSpec(dim=h * cfg.head_dim, n_heads=h, n_kv_heads=g))
    n_visual = round(cfg.visual_frac * n) if entry.multimodal else 0
    cell_layout = layout if n_visual else "prefix"
    n_images = images if cell_layout == "interleaved" else int(n_visual > 0)
    b = cfg.batches[0] if batch is None else batch
    return Cell(choice, mode, b, n, n_visual, spec, cfg.dtype, cell_layout, n_images, compile)


def _by_shape(cells: Iterable[Cell]) -> list[Cell]:
    """Group the cells of one (mode, n, h) together, in grid order (stable)."""
    cells = list(cells)
    shapes = list(dict.fromkeys((c.mode, c.batch, c.seq_len, c.spec.n_heads) for c in cells))
    return sorted(cells, key=lambda c: shapes.index((c.mode, c.batch, c.seq_len, c.spec.n_heads)))
