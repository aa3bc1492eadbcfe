"""Mixture-of-Head attention, MoH (Jin et al. 2024, arXiv 2410.11842).

Official code: SkyworkAI/MoH, `MoH-DiT/models.py` `MoHAttention` (learned router, as in MoH-ViT)
and `MoH-LLaMA3/Inference_code/modeling_llama.py` `LlamaAttention` (query-norm router).

Heads are experts: h_s shared heads are always on; each token picks K of the h - h_s routed
heads; every head's output is multiplied by its per-token gate before `o_proj`. It keeps the
GQA layout (g KV heads, `q_proj`/`k_proj`/`v_proj`/`o_proj`), so an MHA uptrains into it with a
fresh router (`from_mha(mha, g, variant="moh")`, as MoH-LLaMA3 continue-tunes LLaMA3-8B).

Routers, option `router`:
- "learned" (DiT/ViT): gates = softmax(wg(x)) over the routed heads; keep the top K;
  g_r = (gates * mask) / max(sum, eps) * K. Shared gates g_s = softmax(wg_1(x)) * h_s
  (g_s = 1 when h_s = 1). With both kinds, [a1, a2] = 2 softmax(wg_0(x)) scales g_s and g_r.
  With K = 0 every head is shared and gated by softmax(wg_1(x)) * h_s.
  Load-balance loss in training: l_aux = E * sum_i f_i P_i, P the mean gates and f the mean
  mask over tokens, E = h - h_s; exposed as `module.aux_loss`, weighted by `aux_loss_coef`
  (the harness adds coef * its mean over layers to the task loss).
- "qnorm" (LLaMA3): no parameters; a routed head's logit is ||q_i||_2 (before any positional
  encoding; this family has none) divided by the std across the routed heads, softmax, top-K;
  binary gates (1 for shared and chosen heads); no aux loss.

Compute is dense, as in the official code: every head is computed, then gated (unselected
heads get 0). `active_head_frac` (the share of non-zero gates in the last forward) is left on
the module for the harness, which records it with `flops_active` (see harness/measure/__init__.py).
`reference_forward` is a loop over heads with eager softmax.

Departures from the official code, and why:
- q/k/v/o are separate `q_proj`/`k_proj`/`v_proj`/`o_proj` (official DiT: fused `qkv`, `proj`):
  `official_state_dict` splits `qkv` and renames `proj`; router names are unchanged.
- h_s = 1 with routed heads: the official DiT code calls `wg_1`, which it only builds for
  h_s > 1 (an AttributeError); here g_s = 1, the softmax of a single logit times h_s.
- qnorm with one routed head: the std of one logit is NaN in the official code; here the
  logit is used as is (softmax of one logit is 1 either way). The std is clamped to eps so
  equal norms give equal logits, not a division by zero.
- The gates are not exposed through a global list (`MoHAttention.LOAD_BALANCING_LOSSES`): the
  aux loss stays on the module (no global state).
- Defaults, where the issue is silent: h_s = max(1, h/2) and K = min(h - h_s, max(1, h/4)),
  MoH-LLaMA3's 50% shared + 25% routed (75% of the heads active at h = 8); router "learned".
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from .backends import eager
from .cache import KVCache
from .grouped import GroupedQueryAttention
from .registry import register
from .spec import AttnSpec

PAPER = "https://arxiv.org/abs/2410.11842"
Router = Literal["learned", "qnorm"]
ROUTERS: tuple[Router, ...] = ("learned", "qnorm")


def topk_mask(probs: Tensor, k: int) -> Tensor:
    """(..., E) -> 0/1 of probs' dtype, 1 at each row's top k (official: one_hot(topk).sum)."""
    return torch.zeros_like(probs).scatter(-1, probs.topk(k, dim=-1).indices, 1.0)


class MixtureOfHeadsAttention(GroupedQueryAttention):
    """MoH on the GQA layout: x (b, n, d) -> (b, n, d), each head's output scaled by its gate."""

    fresh_on_uptrain = ("wg", "wg_0", "wg_1")  # router weights from_mha leaves at their init

    def __init__(
        self,
        spec: AttnSpec,
        *,
        backend: str = "sdpa",
        shared_heads: int | None = None,
        routed_heads: int | None = None,
        router: Router = "learned",
        aux_loss_coef: float = 0.01,
    ) -> None:
        super().__init__(spec, backend=backend)
        h, d = spec.n_heads, spec.dim
        h_s = max(1, h // 2) if shared_heads is None else shared_heads
        k = min(h - h_s, max(1, h // 4)) if routed_heads is None else routed_heads
        self._check_options(h, h_s, k, router, aux_loss_coef)
        self.shared_heads, self.routed_heads, self.router = h_s, k, router
        self.aux_loss_coef = aux_loss_coef
        self.aux_loss: Tensor | None = None  # l_aux of the last training forward (learned router)
        self.active_head_frac: Tensor | None = None  # share of non-zero gates in the last forward
        if router == "learned":
            if k > 0:
                self.wg = nn.Linear(d, h - h_s, bias=False)
                if h_s > 0:
                    self.wg_0 = nn.Linear(d, 2, bias=False)
            if h_s > 1:
                self.wg_1 = nn.Linear(d, h_s, bias=False)

    @staticmethod
    def _check_options(h: int, h_s: int, k: int, router: str, coef: float) -> None:
        if router not in ROUTERS:
            raise ValueError(f"router={router!r} is not one of {list(ROUTERS)}")
        if not (isinstance(h_s, int) and 0 <= h_s <= h):
            raise ValueError(f"shared_heads={h_s!r} must be an integer in [0, n_heads={h}]")
        if not (isinstance(k, int) and 0 <= k <= h - h_s):
            raise ValueError(f"routed_heads={k!r} must be in [0, n_heads - shared_heads = {h} - {h_s}]")
        if k == 0 and h_s != h:
            raise ValueError(f"routed_heads=0 needs shared_heads=n_heads={h} (got shared_heads={h_s})")
        if not coef >= 0:
            raise ValueError(f"aux_loss_coef={coef!r} must be >= 0")

    def forward(
        self, x: Tensor, *, n_visual: int = 0, modality: Tensor | None = None, cache: KVCache | None = None
    ) -> Tensor:
        """x (b, n, d) -> (b, n, d). Unimodal: `n_visual` and `modality` (b, n) are only validated."""
        self._check_input(x, n_visual, modality)
        q, k, v = self.project(x)  # (b, h, n, e), (b, g, n, e), (b, g, n, e)
        gates = self.gates(x, q)  # (b, n, h)
        if cache is not None:
            k, v = cache.update(k, v)  # (b, g, s, e)
        o = self.attend(q, k, v, n_visual=n_visual, cache=cache)  # (b, h, n, e)
        return self.merge(o * gates.transpose(1, 2)[..., None])  # gate (b, h, n, 1) per head and token

    def gates(self, x: Tensor, q: Tensor) -> Tensor:
        """Per-token head gates (b, n, h), shared heads first; sets aux_loss and active_head_frac."""
        self.aux_loss = None
        gates = self.learned_gates(x) if self.router == "learned" else self.qnorm_gates(q)
        self.active_head_frac = (gates != 0).to(torch.float32).mean().detach()
        return gates

    def learned_gates(self, x: Tensor) -> Tensor:
        """The DiT/ViT router (see module doc): x (b, n, d) -> (b, n, h)."""
        h_s, k = self.shared_heads, self.routed_heads
        if k == 0:  # every head shared
            return self._shared(x, h_s)
        probs = self.wg(x).softmax(dim=-1)  # (b, n, E)
        mask = topk_mask(probs, k)  # (b, n, E)
        if self.training:  # l_aux = E * sum_i f_i P_i over the b*n tokens
            self.aux_loss = probs.shape[-1] * (probs.mean((0, 1)) * mask.mean((0, 1))).sum()
        routed = probs * mask
        eps = torch.finfo(routed.dtype).eps
        routed = routed / routed.sum(dim=-1, keepdim=True).clamp_min(eps) * k  # (b, n, E)
        if h_s == 0:
            return routed
        a = 2 * self.wg_0(x).softmax(dim=-1)  # (b, n, 2): shared vs routed weight
        return torch.cat([self._shared(x, h_s) * a[..., :1], routed * a[..., 1:]], dim=-1)  # (b, n, h)

    def _shared(self, x: Tensor, h_s: int) -> Tensor:
        """Shared gates (b, n, h_s): softmax(wg_1(x)) * h_s, or 1 for a single shared head."""
        if h_s == 1:
            return x.new_ones(*x.shape[:-1], 1)  # (b, n, 1)
        return self.wg_1(x).softmax(dim=-1) * h_s  # (b, n, h_s)

    def qnorm_gates(self, q: Tensor) -> Tensor:
        """The LLaMA3 router: q (b, h, n, e) -> binary gates (b, n, h) from routed query norms."""
        h_s, k = self.shared_heads, self.routed_heads
        b, h, n, _ = q.shape
        shared = q.new_ones(b, n, h_s)  # (b, n, h_s)
        if k == 0:
            return shared
        logits = torch.linalg.vector_norm(q[:, h_s:], dim=-1).transpose(1, 2)  # (b, n, E)
        if h - h_s > 1:
            std = logits.std(dim=-1, keepdim=True).clamp_min(torch.finfo(logits.dtype).eps)
            logits = logits / std
        mask = topk_mask(logits.softmax(dim=-1), k)  # (b, n, E)
        return torch.cat([shared, mask], dim=-1)  # (b, n, h)

    @torch.no_grad()
    def reference_forward(self, x: Tensor, *, cache: KVCache | None = None) -> Tensor:
        """The plain path: eager softmax one head at a time, each output times its gate."""
        q, k, v = self.project(x)  # (b, h, n, e), (b, g, n, e), (b, g, n, e)
        gates = self.gates(x, q)  # (b, n, h)
        if cache is not None:
            k, v = cache.update(k, v)  # (b, g, s, e)
        rep = self.spec.group_size
        heads = []
        for i in range(self.spec.n_heads):
            kv = i // rep  # query head i reads KV head i // (h/g)
            o_i = eager(q[:, i : i + 1], k[:, kv : kv + 1], v[:, kv : kv + 1], causal=self.spec.causal)
            heads.append(o_i * gates[:, None, :, i, None])  # (b, 1, n, e)
        return self.merge(torch.cat(heads, dim=1))  # (b, h, n, e) -> (b, n, d)

    def extra_repr(self) -> str:
        routing = f"shared={self.shared_heads}, routed={self.routed_heads}, router={self.router}"
        return f"{super().extra_repr()}, {routing}"


def official_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """An official MoH-DiT/ViT `MoHAttention` state dict in this module's names: the fused
    `qkv` (3*h*e rows, q then k then v) split into q_proj/k_proj/v_proj, `proj` -> `o_proj`;
    router weights (`wg`, `wg_0`, `wg_1`) keep their names. Official checkpoints are MHA (g = h)."""
    out: dict[str, Tensor] = {}
    for name, tensor in state.items():
        kind, _, param = name.rpartition(".")
        if kind == "qkv":
            for proj, part in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3, dim=0), strict=True):
                out[f"{proj}.{param}"] = part  # (h*e, ...) each
        elif kind == "proj":
            out[f"o_proj.{param}"] = tensor
        else:
            out[name] = tensor
    return out


register(
    "moh",
    description=(
        "Mixture-of-Head attention: shared heads plus top-K routed heads per token, outputs gated. "
        "None: shared_heads=h/2, routed_heads=h/4 (MoH-LLaMA3, 75% active)."
    ),
    paper=PAPER,
    options=dict(shared_heads=None, routed_heads=None, router="learned", aux_loss_coef=0.01),
)(MixtureOfHeadsAttention)
