"""MMCA: multi-modal causal attention with grouped KV heads, and the concat baseline.

DeepSpeed-VisualChat (Yao et al. 2023, arXiv 2309.14327, section 3.1) over x = [visual (m);
text (n - m)] with shared q/k/v/o projections and GQA heads (the seed project's "MGQA"):

- a text query gets two attentions, each softmax-normalised on its own, then summed: causal
  self-attention over the text keys, and cross-attention over all m visual keys. One softmax
  over both modalities lets the text keys swamp the visual weights;
- a visual query never sees text. `visual_attention="self"` (the paper's choice): it attends
  only to itself, so its output is its own value; "full": bidirectional among visual tokens.

With m = 0 this is causal GQA exactly. `concat`, the single-softmax LLaVA-style baseline, is
plain `GroupedQueryAttention` reading [visual; text] as one causal stream.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import flex
from .backends import causal_mask
from .cache import KVCache
from .grouped import GQA_PAPER, GroupedQueryAttention
from .registry import create, register
from .spec import AttnSpec

MMCA_PAPER = "https://arxiv.org/abs/2309.14327"
VISUAL_ATTENTION = ("self", "full")


@register(
    "mmca",
    description=(
        "Multi-modal causal attention: text attends causally to text and to all visual tokens "
        "(two softmaxes, summed); visual tokens never see text."
    ),
    paper=MMCA_PAPER,
    multimodal=True,
    options={"visual_attention": "self"},  # "self": DeepSpeed-VisualChat's choice; "full": ablation
)
class MultiModalCausalAttention(GroupedQueryAttention):
    """forward(x (b, n, d), *, n_visual=m, cache=None) -> (b, n, d), x = [visual; text].

    Decode: a prefill with a cache records m in `cache.n_visual`; later calls hold text only
    and attend to the cached visual keys (one softmax) and cached text keys (another).
    """

    def __init__(self, spec: AttnSpec, *, backend: str = "sdpa", visual_attention: str = "self") -> None:
        if visual_attention not in VISUAL_ATTENTION:
            raise ValueError(
                f"visual_attention={visual_attention!r} is not valid; choose one of {list(VISUAL_ATTENTION)}"
            )
        super().__init__(spec, backend=backend)
        self.visual_attention = visual_attention

    def forward(self, x: Tensor, *, n_visual: int = 0, cache: KVCache | None = None) -> Tensor:
        if cache is not None and cache.length and n_visual:
            raise ValueError(
                f"n_visual={n_visual} with a KV cache already holding {cache.length} tokens: visual "
                "tokens go first, in the prefill; later calls decode text only (n_visual=0)"
            )
        return super().forward(x, n_visual=n_visual, cache=cache)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, *, n_visual: int, cache: KVCache | None) -> Tensor:
        """q (b, h, n, e), k/v (b, g, s, e) -> (b, h, n, e); the first n_visual queries are visual."""
        if cache is not None and k.shape[2] == q.shape[2]:  # the prefill: remember m for decode
            cache.n_visual = n_visual
        m_k = cache.n_visual if cache is not None else n_visual  # leading visual keys
        if self.backend_name == "flex" and k.shape[2] == q.shape[2]:  # block masks, whole sequence
            return flex.mmca(
                q, k, v, n_visual=n_visual, visual_attention=self.visual_attention, causal=self.spec.causal
            )
        if n_visual == 0:
            return self._text(q, k, v, m_k)  # (b, h, n, e)
        visual = self._visual(q[:, :, :n_visual], k[:, :, :n_visual], v[:, :, :n_visual])  # (b, h, m, e)
        if n_visual == q.shape[2]:  # no text
            return visual
        text = self._text(q[:, :, n_visual:], k, v, m_k)  # (b, h, n - m, e)
        return torch.cat([visual, text], dim=2)  # (b, h, n, e)

    def _text(self, q: Tensor, k: Tensor, v: Tensor, m: int) -> Tensor:
        """Text queries q (b, h, n_t, e) over keys [visual (m); text]: two softmaxes, summed."""
        causal, p = self.spec.causal, self.dropout_p
        # Causal self-attention over the text keys (bottom-right aligned when a cache holds more).
        out = self.backend(q, k[:, :, m:], v[:, :, m:], causal=causal, dropout_p=p)  # (b, h, n_t, e)
        if m:
            # Cross-attention over every visual key, normalised on its own (arXiv 2309.14327 §3.1).
            out = out + self.backend(q, k[:, :, :m], v[:, :, :m], causal=False, dropout_p=p)
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

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, visual_attention={self.visual_attention}"


# The concat baseline is GroupedQueryAttention itself: one softmax over [visual; text] as one
# causal stream. Registered under its own name, multimodal, so a sweep or the accuracy task
# gives it the same n_visual as mmca and the two rows line up.
register(
    "concat",
    description=(
        "Concat baseline for mmca (LLaVA-style): visual then text tokens as one causal stream, "
        "one softmax; the gqa module under a multimodal name."
    ),
    paper=GQA_PAPER,
    multimodal=True,
)(GroupedQueryAttention)


def reference(module: MultiModalCausalAttention, x: Tensor, n_visual: int) -> Tensor:
    """The plain eager MMCA of `module`'s weights, for tests: x (b, n, d) -> (b, n, d).

    Full (n, n) scores, one explicit mask per normalisation group, a softmax over each, the
    weights summed. A row that a group does not reach gets weight 0 there (not NaN).
    """
    q, k, v = module.project(x)  # (b, h, n, e), (b, g, n, e), (b, g, n, e)
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)  # (b, h, n, e)
    scores = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5  # (b, h, n, n)
    weights = sum(_masked_softmax(scores, mask) for mask in _masks(module, x.shape[1], n_visual, x.device))
    return module.merge(weights @ v)  # (b, h, n, e) -> (b, n, d)


def _masks(module: MultiModalCausalAttention, n: int, m: int, device: torch.device) -> list[Tensor]:
    """(n, n) bool masks, one per softmax: text->text, text->visual, visual->visual."""
    is_visual = torch.arange(n, device=device) < m  # (n,)
    text_q, visual_k = ~is_visual[:, None], is_visual[None, :]  # (n, 1), (1, n)
    text_text = text_q & ~visual_k
    if module.spec.causal:
        text_text = text_text & causal_mask(n, n, device)
    visual_visual = is_visual[:, None] & visual_k
    if module.visual_attention == "self":
        visual_visual = visual_visual & torch.eye(n, dtype=torch.bool, device=device)
    return [text_text, text_q & visual_k, visual_visual]


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
