"""Every property of one variant, in order; the FLOP count and the multimodal rules.

verdicts = harness.conform.check("gqa", {}, ConformConfig())   # list[Verdict]
failed = [v for v in verdicts if v.status == "fail"]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from attn_variants import KVCache

from ..measure import flops as flop_count
from ..measure import workload
from . import properties as props
from .probe import ConformConfig, Probe, fmt
from .properties import Verdict

UNIMODAL = "unimodal"


def flops(p: Probe) -> Verdict:
    """The sweep counts fwd/fwd_bwd FLOPs on the meta device (no data, no n^2 buffer): that
    must run, and give the real-tensor count. A variant declared `flops_on_meta=False` is
    counted on real tensors by the sweep: that must run, and conform says so."""
    modes = [m for m in ("fwd", "fwd_bwd") if m in p.entry.modes]
    if not modes:
        return Verdict("flops", "n/a", "no fwd or fwd_bwd mode: the sweep counts decode on real tensors")
    counts = []
    for mode in modes:
        try:
            real = flop_count.count_real(_step(p, mode, p.device)).flops
            meta = (
                flop_count.count(lambda dev, mode=mode: _step(p, mode, dev)).flops
                if p.entry.flops_on_meta
                else None
            )
        except Exception as err:  # noqa: BLE001 (the count failing is the finding)
            where = "the meta device" if p.entry.flops_on_meta else "real tensors"
            hint = "; declare flops_on_meta=False to count on real tensors" if p.entry.flops_on_meta else ""
            return Verdict("flops", "fail", f"{mode}: counting on {where} raised {type(err).__name__}: "
                           f"{props.one_line(err)}{hint}")  # fmt: skip
        if meta is not None and meta != real:
            return Verdict(
                "flops", "fail", f"{mode}: {meta} FLOPs on the meta device, {real} on real tensors"
            )
        counts.append(f"{mode} {real / 1e6:.3g} MFLOP")
    how = "on meta = real" if p.entry.flops_on_meta else "on real tensors (declared flops_on_meta=False)"
    return Verdict("flops", "pass", f"{', '.join(counts)} {how}")


def _step(p: Probe, mode: str, device: torch.device) -> Callable[[], object]:
    m = p.cfg.n_visual if p.entry.multimodal else 0
    return workload.build(
        p.name, p.spec, mode, batch=p.cfg.batch, seq_len=p.cfg.seq_len, n_visual=m, dtype=p.dtype,
        device=device, options=p.options, seed=p.cfg.seed,
    ).uncompiled  # fmt: skip


def multimodal(p: Probe) -> Verdict:
    """n_visual=m is the prefix layout's ids; image tokens never see text (unless declared);
    a causal-safe variant leaks no later token in the interleaved layout either."""
    if not p.entry.multimodal:
        return _unimodal(p)
    layouts = p.layouts()
    from attn_variants.modality import prefix

    x, m = p.inputs(), p.cfg.n_visual
    same = p.error(
        p.forward(x, modality=prefix(p.cfg.batch, p.cfg.seq_len, m, p.device)), p.forward(x, n_visual=m)
    )
    if same > p.tol:
        return Verdict("multimodal", "fail", f"n_visual={m} and its modality ids differ by {fmt(same)}")
    seen = max(_text_effect(p, kw) for kw in (layouts["prefix"], layouts["interleaved"]))
    if p.entry.causal_safe:
        text_cut = (4, 7)  # interleaved: text positions after image 1 and after image 2 (probe.interleaved)
        late = props.leak(p, layouts["interleaved"], text_cut)
        if late > p.tol:
            return Verdict("multimodal", "fail", f"interleaved layout: outputs up to a text token changed by "
                           f"{fmt(late)} when later tokens changed")  # fmt: skip
    if not p.entry.isolates_images:
        return Verdict("multimodal", "declared", f"image tokens read text (moved {fmt(seen)})")
    if seen > p.tol:
        return Verdict(
            "multimodal", "fail", f"image-token outputs changed by {fmt(seen)} when only text changed"
        )
    return Verdict(
        "multimodal", "pass", f"image tokens see no text ({fmt(seen)}); n_visual = ids ({fmt(same)})"
    )


def _text_effect(p: Probe, layout: Mapping[str, Any]) -> float:
    """Largest change of image-token outputs when every text token changes."""
    from attn_variants.modality import prefix

    ids = layout.get("modality")
    if ids is None:
        ids = prefix(p.cfg.batch, p.cfg.seq_len, layout["n_visual"], p.device)
    text = (ids == 0).unsqueeze(-1)  # (b, n, 1)
    x = p.inputs()
    x2 = torch.where(text, p.inputs(seed=5, scale=1) * 4, x)  # (b, n, d)
    image = ids != 0  # (b, n)
    return p.error(p.forward(x2, **layout)[image], p.forward(x, **layout)[image])


def _unimodal(p: Probe) -> Verdict:
    """A unimodal variant reads any layout as one causal stream: n_visual changes nothing."""
    x = p.inputs()
    err = p.error(p.forward(x, n_visual=p.cfg.n_visual), p.forward(x))
    if err > p.tol:
        return Verdict(
            "multimodal", "fail", f"unimodal, but n_visual={p.cfg.n_visual} changed the output by {fmt(err)}"
        )
    return Verdict("multimodal", "n/a", f"{UNIMODAL}: n_visual ignored ({fmt(err)})")


def ragged(p: Probe) -> Verdict:
    """A served batch: examples of different lengths in one cache (KVCache.truncate(lengths)).
    A decode step must give each example what it gives that example decoded alone (a
    batch-independent variant), and the paged layout the padded layout's numbers."""
    if "decode" not in p.entry.modes:
        return Verdict("ragged", "n/a", "no decode mode declared")
    x, new, k = p.inputs(), p.inputs(1, seed=6), p.cfg.prefill  # (b, n, d), (b, 1, d)
    lengths = [k - 2 * (i % 2) for i in range(p.cfg.batch)]  # every other example 2 tokens shorter
    steps = {layout: _ragged_step(p, x[:, :k], new, lengths, layout) for layout in ("padded", "paged")}
    paged = p.error(steps["paged"], steps["padded"])
    if paged > p.tol:
        return Verdict(
            "ragged", "fail", f"lengths {lengths}: the paged layout differs from the padded by {fmt(paged)}"
        )
    why = _not_alone(p)
    if why:
        return Verdict(
            "ragged", "declared", f"{why}: not compared with requests alone; paged = padded ({fmt(paged)})"
        )
    alone = [_ragged_step(p, x[i : i + 1, :n], new[i : i + 1], None, "padded") for i, n in enumerate(lengths)]
    err = max(p.error(steps["padded"][i : i + 1], y) for i, y in enumerate(alone))
    if err > p.tol:
        what = (
            f"lengths {lengths}: a ragged decode step differs from each request decoded alone by {fmt(err)}"
        )
        return Verdict(
            "ragged", "fail", f"{what} (tol {p.tol:g}): each example must attend to its own tokens only"
        )
    return Verdict(
        "ragged", "pass", f"lengths {lengths}: = alone ({fmt(err)}), paged = padded ({fmt(paged)})"
    )


def _not_alone(p: Probe) -> str:
    """Why a request decoded alone is no reference for this variant ('' when it is)."""
    if not p.entry.batch_independent:
        return "batch-coupled"
    if not p.entry.decode_exact:  # pgqa: a batch of prompts draws other noise than one prompt
        return "not a forward"
    return ""


def _ragged_step(p: Probe, prompt, new, lengths: list[int] | None, layout: str):
    """Prefill `prompt` (b, k, d), cut example i to lengths[i], decode `new` (b, 1, d) -> (b, 1, d)."""
    module, cache = p.module(), KVCache(layout=layout, page_size=3)  # small pages: several per example
    torch.manual_seed(p.cfg.seed + 1)
    with torch.no_grad():
        module(prompt, cache=cache)
        if lengths is not None:
            cache.truncate(lengths)
        return module(new, cache=cache)


PROPERTIES: tuple[Callable[[Probe], Verdict], ...] = (
    props.shape, props.batch, props.causal, props.modes, props.decode, props.cache, props.fill,
    ragged, props.grad, flops, multimodal,
)  # fmt: skip
NAMES = (
    "shape",
    "batch",
    "causal",
    "modes",
    "decode",
    "cache",
    "fill",
    "ragged",
    "grad",
    "flops",
    "multimodal",
)


def check(name: str, options: Mapping[str, Any], cfg: ConformConfig) -> list[Verdict]:
    """Every property of variant `name` with `options`; a property that raises is a failure
    naming the exception (a variant that cannot build fails every property the same way)."""
    p = Probe(name, dict(options), cfg)
    out = []
    for prop, fn in zip(NAMES, PROPERTIES, strict=True):
        try:
            out.append(fn(p))
        except Exception as err:  # noqa: BLE001 (the variant's error is the finding)
            out.append(Verdict(prop, "fail", f"raised {type(err).__name__}: {props.one_line(err)}"))
    return out
