"""MMCA: multi-modal causal attention with grouped KV heads, and the concat baseline.

DeepSpeed-VisualChat (Yao et al. 2023, arXiv 2309.14327, section 3.1), with shared q/k/v/o
projections and GQA heads (the seed project's "MGQA"), over any layout of text and images:
`modality` (b, n) gives each token's id, 0 text and k >= 1 image k (attn_variants/modality.py).

- a **text** query at position i gets two attentions, each softmax-normalised on its own, then
  summed: over the text keys j <= i, and over the image keys j <= i (all images so far, one
  softmax). One softmax over both modalities lets the text keys swamp the image weights. **A
  branch with no key contributes 0**: text before any image gets text attention only. (The
  reference code masks with finfo.min, so there an empty branch becomes a uniform average
  over all earlier tokens, text included: a leak we do not reproduce; docs/variants.md, "mmca".)
- an **image** query of image k never sees text or other images. `visual_attention="self"`
  (the paper's choice): it attends only to itself, so its output is its own value; "full":
  bidirectional attention over the tokens of image k.

With every token text this is causal GQA exactly. `n_visual=m` is the prefix layout [image 1
(m); text], run by three SDPA calls on contiguous slices (no mask tensor); any other layout runs
two SDPA calls with boolean (b, 1, n, s) masks, no Python loop over tokens, images or examples.
`concat`, the single-softmax LLaVA-style baseline, is plain `GroupedQueryAttention` reading the
same sequence as one causal stream.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import decode, flex
from . import modality as layout
from .backends import Backend
from .cache import KVCache, skips_attention
from .grouped import GQA_PAPER, GroupedQueryAttention
from .registry import create, register
from .spec import AttnSpec

MMCA_PAPER = "https://arxiv.org/abs/2309.14327"
VISUAL_ATTENTION = ("self", "full")


@register(
    "mmca",
    description=(
        "Multi-modal causal attention: text attends causally to text and to earlier image tokens "
        "(two softmaxes, summed); image tokens never see text or other images."
    ),
    paper=MMCA_PAPER,
    multimodal=True,
    options={"visual_attention": "self"},  # "self": DeepSpeed-VisualChat's choice; "full": ablation
)
class MultiModalCausalAttention(GroupedQueryAttention):
    """forward(x (b, n, d), *, n_visual=0, modality=None, cache=None) -> (b, n, d).

    Decode and chunked prefill: the cache keeps every token's modality id (field "modality",
    (b, s)); each call appends a chunk of any modality, with `modality` for its tokens (None:
    text, or the n_visual prefix on an empty cache). A new image may arrive in any round.
    """

    def __init__(self, spec: AttnSpec, *, backend: str = "sdpa", visual_attention: str = "self") -> None:
        if visual_attention not in VISUAL_ATTENTION:
            raise ValueError(
                f"visual_attention={visual_attention!r} is not valid; choose one of {list(VISUAL_ATTENTION)}"
            )
        super().__init__(spec, backend=backend)
        self.visual_attention = visual_attention

    def forward(
        self, x: Tensor, *, n_visual: int = 0, modality: Tensor | None = None, cache: KVCache | None = None
    ) -> Tensor:
        GroupedQueryAttention._check_input(self, x, n_visual)  # the values are checked below, with the cache
        layout.check_call(x, n_visual, modality)
        past = None if modality is None else self._past(cache, x)  # (b, s0) ids, to check the new ones
        m = self._prefix_length(n_visual, modality, past, cache)  # every check before any append
        q, k, v = self.project(x)
        cached = cache.length if cache is not None else 0
        # The prefix slices hold image queries only without a cache (an image continued from the
        # cache, "self", takes the masked path).
        fast = m is not None and (cached == 0 or m <= cached) and not (cache is not None and cache.ragged)
        if cache is not None:
            k, v = cache.update(k, v)  # (b, g, s, e)
            ids = self._remember(cache, x, modality, m, need=not fast)  # (b, s), or None
        else:
            ids = None if fast else self._new_ids(x, modality)  # (b, n)
        return self.merge(self.attend(q, k, v, n_visual=m if fast else None, cache=cache, modality=ids))

    @staticmethod
    def _new_ids(x: Tensor, modality: Tensor | None) -> Tensor:
        """This call's ids (b, n) for the general path: given, or text (a text chunk after images)."""
        return modality.long() if modality is not None else x.new_zeros(x.shape[:2], dtype=torch.long)

    @staticmethod
    def _past(cache: KVCache | None, x: Tensor) -> Tensor | None:
        """The cached tokens' ids (b, s0), or None for an empty cache. A prefix layout is not
        stored (`cache.n_visual` and the length say it exactly, truncated or not): it is
        rebuilt here, so a decode step of the prefix layout costs nothing extra."""
        if cache is None or not cache.length:
            return None
        past = cache.get("modality")
        if past is not None:
            return past
        if cache.n_visual is None:
            raise ValueError(
                f"the cache holds {cache.length} tokens but no modality ids (filled by another variant?)"
            )
        return layout.prefix(x.shape[0], cache.length, cache.n_visual, x.device)

    def _prefix_length(
        self, n_visual: int, modality: Tensor | None, past: Tensor | None, cache: KVCache | None
    ) -> int | None:
        """m when the whole sequence (cached + new) is the prefix layout, else None (after checks)."""
        if modality is None:
            if cache is None or not cache.length:
                return n_visual
            if n_visual:
                raise ValueError(
                    f"n_visual={n_visual} with a KV cache already holding {cache.length} tokens: n_visual "
                    "means the leading tokens of the sequence; give a later image as modality= ids"
                )
            return cache.n_visual  # text appended to a prefix layout keeps it one
        if cache is not None and cache.ragged:  # the general path; this call's ids are checked
            if layout.concrete(modality):
                layout.check_values(modality.long(), modality.shape[1])
            return None
        full = modality if past is None else torch.cat([past, modality.long()], dim=1)  # (b, s)
        if not layout.concrete(full):
            return None  # fake or traced: the general path, right for every layout
        return layout.check_values(full, modality.shape[1], whole_images=self.visual_attention == "full")

    def _remember(
        self, cache: KVCache, x: Tensor, modality: Tensor | None, m: int | None, *, need: bool
    ) -> Tensor | None:
        """Keep the ids in the cache's "modality" field (b, s), token axis 1, once the masked
        path needs them (`need`) and from then on; return every key's ids then, else None."""
        stored, before = "modality" in cache, cache.n_visual
        cache.n_visual = m
        if not stored and not need:
            return None  # the prefix layout: the hint and the length say it all
        new = self._new_ids(x, modality)  # (b, n)
        b, n = new.shape
        if not stored and cache.ragged:  # each example's ids written out once, over the frame
            return self._write_out(cache, new, before)
        if not stored and cache.length > n:  # the prefix layout so far, written out once
            new = torch.cat([layout.prefix(b, cache.length - n, before, x.device), new], dim=1)  # (b, s)
        (ids,) = cache.append(1, modality=new)  # (b, s)
        return ids

    @staticmethod
    def _write_out(cache: KVCache, new: Tensor, m: int | None) -> Tensor:
        """A ragged cache's ids (b, s) in the "modality" field: the prefix layout of m image
        tokens, this call's ids at each example's own last n positions."""
        b, n = new.shape
        frame = cache.field_length("k")
        at = cache.lengths_of("k", new.device)[:, None] - n + torch.arange(n, device=new.device)  # (b, n)
        ids = layout.prefix(b, frame, m or 0, new.device).scatter(1, at, new)  # (b, s)
        return cache.replace("modality", ids, 1, like="k")

    def attend(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        *,
        n_visual: int | None,
        cache: KVCache | None,
        modality: Tensor | None = None,
    ) -> Tensor:
        """q (b, h, n, e), k/v (b, g, s, e) -> (b, h, n, e); the queries are the last n keys.

        n_visual: m when the keys are the prefix layout (m image tokens, then text), else None
        and `modality` (b, s) gives every key's id."""
        if skips_attention(cache):  # KVCache.fill: keys, values and modality ids are cached
            return q.new_zeros(*q.shape[:-1], v.shape[-1])  # (b, h, n, e)
        n, s = q.shape[2], k.shape[2]
        if n_visual is not None and (s == n or n_visual <= s - n):  # image queries only without a cache
            return self._prefix(q, k, v, n_visual, self._kernel(cache))
        if n_visual is not None and modality is None:
            modality = layout.prefix(q.shape[0], s, n_visual, q.device)  # (b, s)
        if modality is None:
            raise ValueError("attend needs modality ids (b, s) when the keys are not the prefix layout")
        lengths = cache.lengths_of("k", q.device) if cache is not None and cache.ragged else None
        return self._interleaved(q, k, v, modality, self._kernel(cache), lengths)

    def _kernel(self, cache: KVCache | None) -> Backend:
        """The backend, or with a cache the registry's decode path (`decode.attend`: each KV
        head's query heads as its rows where that is faster), with the backend's signature."""
        if cache is None:
            return self.backend
        return decode.kernel(self.backend_name)

    def _prefix(self, q: Tensor, k: Tensor, v: Tensor, m: int, kernel: Backend) -> Tensor:
        """Keys [image (m); text]: three SDPA calls on slices, no mask tensor (the fast path)."""
        if self.backend_name == "flex" and k.shape[2] == q.shape[2]:  # block masks, whole sequence
            return flex.mmca(
                q, k, v, n_visual=m, visual_attention=self.visual_attention, causal=self.spec.causal
            )
        n_v = max(0, m - (k.shape[2] - q.shape[2]))  # image queries: all m, or none (decode)
        if n_v == 0:
            return self._text(q, k, v, m, kernel)  # (b, h, n, e)
        visual = self._visual(q[:, :, :n_v], k[:, :, :n_v], v[:, :, :n_v])  # (b, h, m, e)
        if n_v == q.shape[2]:  # no text
            return visual
        text = self._text(q[:, :, n_v:], k, v, m, kernel)  # (b, h, n - m, e)
        return torch.cat([visual, text], dim=2)  # (b, h, n, e)

    def _text(self, q: Tensor, k: Tensor, v: Tensor, m: int, kernel: Backend) -> Tensor:
        """Text queries q (b, h, n_t, e) over keys [visual (m); text]: two softmaxes, summed."""
        causal, p = self.spec.causal, self.dropout_p
        # Causal self-attention over the text keys (bottom-right aligned when a cache holds more).
        out = kernel(q, k[:, :, m:], v[:, :, m:], causal=causal, dropout_p=p)  # (b, h, n_t, e)
        if m:
            # Cross-attention over every visual key, normalised on its own (arXiv 2309.14327 §3.1).
            out = out + kernel(q, k[:, :, :m], v[:, :, :m], causal=False, dropout_p=p)
        return out

    def _visual(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Visual queries q (b, h, m, e) over the visual keys k/v (b, g, m, e) only."""
        if self.visual_attention == "full":
            return self.backend(q, k, v, causal=False, dropout_p=self.dropout_p)  # (b, h, m, e)
        # "self": softmax over one key is 1, so the output is the token's own value, read by the
        # h/g query heads of its group (no attention math). Dropout drops that single weight.
        b, g, m, e = v.shape
        out = v[:, :, None].expand(b, g, q.shape[1] // g, m, e).reshape(b, q.shape[1], m, e)  # (b, h, m, e)
        if self.dropout_p:
            out = out * F.dropout(out.new_ones(b, q.shape[1], m, 1), p=self.dropout_p)
        return out

    def _interleaved(
        self, q: Tensor, k: Tensor, v: Tensor, ids: Tensor, kernel: Backend, lengths: Tensor | None = None
    ) -> Tensor:
        """Any layout, ids (b, s): two SDPA calls with boolean (b, 1, n, s) masks, summed.
        `lengths` (b,): a ragged batch, example i's keys its first lengths[i] (the rest padding).

        The first softmax holds each row's own group (text: text keys j <= i; image k: image k,
        or itself for "self"), the second text -> image keys j <= i. A row with no image key yet
        would be all-masked (NaN in SDPA): it gets every key and its output is replaced by 0,
        the empty branch. Masks come from per-token bounds, three (b, n, s) comparisons."""
        own, cross, has_cross = self._masks(ids, q.shape[2], lengths)  # (b, n, s), (b, n, s), (b, n)
        p = self.dropout_p
        out = kernel(q, k, v, causal=False, dropout_p=p, mask=own[:, None])  # (b, h, n, e)
        image = kernel(q, k, v, causal=False, dropout_p=p, mask=cross[:, None])  # (b, h, n, e)
        return out + torch.where(has_cross[:, None, :, None], image, 0.0)  # (b, h, n, e)

    def _masks(self, ids: Tensor, n: int, lengths: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """ids (b, s), the queries each example's last n (of lengths (b,), or of s) -> own
        (b, n, s), cross (b, n, s), has_cross (b, n)."""
        b, s = ids.shape
        pos = torch.arange(s, device=ids.device)  # (s,) key positions
        ends = lengths if lengths is not None else torch.full((b,), s, device=ids.device)  # (b,)
        q_pos = ends[:, None] - n + torch.arange(n, device=ids.device)  # (b, n): query i at end - n + i
        q_ids = ids.gather(1, q_pos)  # (b, n)
        valid = pos < ends[:, None]  # (b, s): an example's own keys, not the padding after them
        text_q = q_ids == 0  # (b, n)
        last = q_pos if self.spec.causal else (ends[:, None] - 1).expand(b, n)  # (b, n) a text row's last key
        # Own group: key code id * s + position orders keys by (image, position), so a row's keys
        # are one code range [lo, hi]: its text up to `last`, its image, or (for "self") itself.
        code = ids * s + pos  # (b, s)
        whole = self.visual_attention == "full"
        lo = q_ids * s + torch.where(text_q | whole, 0, q_pos)  # (b, n)
        hi = q_ids * s + torch.where(text_q, last, s - 1 if whole else q_pos)  # (b, n)
        own = (code[:, None, :] >= lo[:, :, None]) & (code[:, None, :] <= hi[:, :, None])  # (b, n, s)
        own = own & valid[:, None, :]
        # Cross: image keys j <= last for text rows (rank = position for image keys, s for text).
        rank = torch.where((ids > 0) & valid, pos, s)  # (b, s)
        first_image = rank.min(dim=1, keepdim=True).values  # (b, 1)
        has_cross = text_q & (first_image <= last)  # (b, n)
        # A row without image keys (image rows, text before any image) would be all-masked, NaN
        # in SDPA: it takes every key (rank <= s) instead, and its output is zeroed by the caller.
        limit = torch.where(has_cross, last, s)  # (b, n)
        cross = rank[:, None, :] <= limit[:, :, None]  # (b, n, s)
        return own, cross, has_cross

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, visual_attention={self.visual_attention}"


# The concat baseline is GroupedQueryAttention itself: one softmax over the whole sequence as
# one causal stream. Registered under its own name, multimodal, so a sweep or the accuracy
# task gives it the same layout as mmca and the two rows line up.
register(
    "concat",
    description=(
        "Concat baseline for mmca (LLaVA-style): text and image tokens as one causal stream, "
        "one softmax; the gqa module under a multimodal name."
    ),
    paper=GQA_PAPER,
    multimodal=True,
)(GroupedQueryAttention)


def reference(
    module: MultiModalCausalAttention, x: Tensor, n_visual: int = 0, *, modality: Tensor | None = None
) -> Tensor:
    """The plain eager MMCA of `module`'s weights, for tests: x (b, n, d) -> (b, n, d).

    Full (n, n) scores, one explicit mask per normalisation group built token pair by token
    pair from the rules in the module docstring, a softmax over each, the weights summed. A
    row that a group does not reach gets weight 0 there (not NaN).
    """
    b, n, _ = x.shape
    ids = modality if modality is not None else layout.prefix(b, n, n_visual)  # (b, n)
    q, k, v = module.project(x)  # (b, h, n, e), (b, g, n, e), (b, g, n, e)
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)  # (b, h, n, e)
    scores = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5  # (b, h, n, n)
    weights = sum(_masked_softmax(scores, mask.to(x.device)) for mask in _masks(module, ids.tolist()))
    return module.merge(weights @ v)  # (b, h, n, e) -> (b, n, d)


def _masks(module: MultiModalCausalAttention, ids: list[list[int]]) -> list[Tensor]:
    """(b, 1, n, n) bool masks, one per softmax: text->text, text->image, image->image."""
    b, n = len(ids), len(ids[0])
    masks = {group: torch.zeros(b, 1, n, n, dtype=torch.bool) for group in ("text", "image", "own image")}
    for row in range(b):
        for i in range(n):
            for j in range(n):
                group = _group(module, ids[row], i, j)
                if group:
                    masks[group][row, 0, i, j] = True
    return list(masks.values())


def _group(module: MultiModalCausalAttention, ids: list[int], i: int, j: int) -> str | None:
    """Which softmax query i puts key j in, or None if i may not see j."""
    if ids[i] == 0:  # text: earlier (or, non-causal, any) text and image keys, two softmaxes
        if module.spec.causal and j > i:
            return None
        return "text" if ids[j] == 0 else "image"
    if ids[j] != ids[i]:  # an image never sees text or another image
        return None
    return "own image" if module.visual_attention == "full" or i == j else None


def _masked_softmax(scores: Tensor, mask: Tensor) -> Tensor:
    """softmax of `scores` over the keys `mask` allows; rows with no allowed key are all 0."""
    weights = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)
    return weights.nan_to_num(0.0)


class SimpleMMCA(nn.Module):
    """The seed project's API (`mmca_mgqa`), a thin wrapper over the registered `mmca`.

    attn(v (b, m, d), t (b, n_t, d)) -> (visual_out (b, m, d), text_out (b, n_t, d)); m and
    n_t may differ. One forward over [v; t], split back. Unlike the seed, the streams are not
    added together and the batch dimension is kept.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        kv_heads: int = 2,
        dropout: float = 0.0,
        causal: bool = True,
        visual_attention: str = "self",
        backend: str = "sdpa",
    ) -> None:
        super().__init__()
        spec = AttnSpec(dim, heads, kv_heads, causal=causal, dropout=dropout)
        self.attn = create("mmca", spec, visual_attention=visual_attention, backend=backend)

    def forward(self, v: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        if v.dim() != 3 or t.dim() != 3 or v.shape[0] != t.shape[0] or v.shape[2] != t.shape[2]:
            raise ValueError(
                f"v {tuple(v.shape)} and t {tuple(t.shape)} must be (b, m, d) and (b, n_t, d) "
                "with the same b and d"
            )
        m = v.shape[1]
        out = self.attn(torch.cat([v, t], dim=1), n_visual=m)  # (b, m + n_t, d)
        return out[:, :m], out[:, m:]  # (b, m, d), (b, n_t, d)
