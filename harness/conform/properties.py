"""The contract's properties, each measured on a `Probe` with no reference implementation.

Each function returns a `Verdict`: pass, fail (with the measured error and the tolerance), n/a
(the property does not apply: an undeclared mode, a unimodal variant) or declared (the registry
says the property does not hold, e.g. kdgqa is not causal-safe; the measured value is shown,
and nothing is believed from the flag alone where it claims more).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from .probe import Probe, fmt

Status = Literal["pass", "fail", "n/a", "declared"]


@dataclass(frozen=True)
class Verdict:
    """One property of one variant: its status and what was measured."""

    prop: str
    status: Status
    detail: str


def shape(p: Probe) -> Verdict:
    """forward(x (b, n, d)) is (b, n, d), x's dtype and device, and finite."""
    x = p.inputs()
    y = p.forward(x)
    if not isinstance(y, Tensor):
        return Verdict("shape", "fail", f"forward returned {type(y).__name__}, not a tensor")
    got = (tuple(y.shape), y.dtype, y.device.type)
    want = (tuple(x.shape), x.dtype, x.device.type)
    if got != want:
        return Verdict("shape", "fail", f"output (shape, dtype, device) {got}; expected {want}")
    bad = (~torch.isfinite(y)).sum().item()
    if bad:
        return Verdict("shape", "fail", f"{bad} of {y.numel()} outputs are not finite")
    return Verdict("shape", "pass", f"{tuple(y.shape)} {str(y.dtype).removeprefix('torch.')}, finite")


def batch(p: Probe) -> Verdict:
    """Example 0's output does not change when example 1's input does."""
    x = p.inputs()
    x2 = x.clone()
    x2[1] = p.inputs(seed=2, scale=1)[1] * 4
    err = p.error(p.forward(x2)[0], p.forward(x)[0])
    if not p.entry.batch_independent:
        return Verdict("batch", "declared", f"batch-coupled; example 0 moved by {fmt(err)}")
    if err > p.tol:
        return Verdict(
            "batch", "fail", f"example 0 changed by {fmt(err)} when example 1 changed (tol {p.tol:g})"
        )
    return Verdict("batch", "pass", f"max change {fmt(err)}")


def leak(p: Probe, layout: dict | None = None, cuts: tuple[int, ...] | None = None) -> float:
    """Largest change of outputs up to t when every token after t changes, over the cuts t."""
    x, n = p.inputs(), p.cfg.seq_len
    errs = []
    for t in cuts or (n // 3, 2 * n // 3):
        x2 = x.clone()
        x2[:, t + 1 :] = p.inputs(seed=3, scale=1)[:, t + 1 :] * 4
        errs.append(
            p.error(p.forward(x2, **(layout or {}))[:, : t + 1], p.forward(x, **(layout or {}))[:, : t + 1])
        )
    return max(errs)


def causal(p: Probe) -> Verdict:
    """Causal-safe variants: perturbing tokens after t leaves outputs up to t unchanged."""
    err = leak(p)
    if not p.entry.causal_safe:
        hint = "" if err > p.tol else " (none at these shapes)"
        return Verdict("causal", "declared", f"not causal-safe; leak {fmt(err)}{hint}")
    if err > p.tol:
        return Verdict("causal", "fail", f"outputs up to t changed by {fmt(err)} when tokens after t changed "
                       f"(tol {p.tol:g}): it reads the future")  # fmt: skip
    return Verdict("causal", "pass", f"leak {fmt(err)}")


def modes(p: Probe) -> Verdict:
    """Every declared mode runs: fwd, fwd_bwd (a backward), decode (a prefill and one step)."""
    runs: dict[str, Callable[[], object]] = {
        "fwd": lambda: p.forward(p.inputs()),
        "fwd_bwd": lambda: _backward(p),
        "decode": lambda: _decode(p, p.inputs(), {}),
    }
    for mode in p.entry.modes:
        try:
            runs[mode]()
        except Exception as err:  # noqa: BLE001 (any failure of a declared mode is the finding)
            return Verdict("modes", "fail", f"{mode} raised {type(err).__name__}: {one_line(err)}")
    return Verdict("modes", "pass", ", ".join(p.entry.modes))


def decode(p: Probe) -> Verdict:
    """A prefill, then one token at a time, equals one full forward (causal-safe variants) or,
    step by step, the last row of a forward over the prefix so far (the others)."""
    if "decode" not in p.entry.modes:
        return Verdict("decode", "n/a", "no decode mode declared")
    errs = {name: _decode_error(p, kw) for name, kw in _decode_layouts(p).items()}
    err = max(errs.values())
    against = "one forward" if p.entry.causal_safe else "forwards over each prefix"
    where = ", ".join(f"{k} {fmt(v)}" for k, v in errs.items())
    if not p.entry.decode_exact:
        return Verdict("decode", "declared", f"not a forward; vs {against}: {where}")
    if err > p.tol:
        return Verdict(
            "decode", "fail", f"prefill + decode differs from {against} by {where} (tol {p.tol:g})"
        )
    return Verdict("decode", "pass", f"vs {against}: {where}")


def _decode_layouts(p: Probe) -> dict[str, dict]:
    return {"text": {}, "prefix": {"n_visual": p.cfg.n_visual}} if p.entry.multimodal else {"text": {}}


def _decode(p: Probe, x: Tensor, layout: dict) -> tuple[Tensor, object]:
    """Prefill p.cfg.prefill tokens (with `layout`), then decode the rest one by one: (b, n, d)."""
    import attn_variants as av

    module, cache, k = p.module(), av.KVCache(), p.cfg.prefill
    torch.manual_seed(p.cfg.seed + 1)
    with torch.no_grad():
        outs = [module(x[:, :k], cache=cache, **layout)]
        outs += [module(x[:, t : t + 1], cache=cache) for t in range(k, x.shape[1])]
    return torch.cat(outs, dim=1), cache  # (b, n, d)


def _decode_error(p: Probe, layout: dict) -> float:
    x = p.inputs()
    if p.entry.causal_safe:
        got, _ = _decode(p, x, layout)
        return p.error(got, p.forward(x, **layout))
    return _stepwise_error(p, x, layout)


def _stepwise_error(p: Probe, x: Tensor, layout: dict) -> float:
    """Each call of the decode (the prefill, then each step) against a forward over every token
    so far, run by a copy of the module as it was just before the call (dgqa's eval state moves
    with every call, as the paper's code does): its last rows."""
    import attn_variants as av

    module, cache, k = p.module(), av.KVCache(), p.cfg.prefill
    errs = []
    with torch.no_grad():
        for start, stop in [(0, k), *((t, t + 1) for t in range(k, x.shape[1]))]:
            twin = copy.deepcopy(module)
            torch.manual_seed(p.cfg.seed + 1)
            got = module(x[:, start:stop], cache=cache, **(layout if start == 0 else {}))
            torch.manual_seed(p.cfg.seed + 1)
            errs.append(p.error(got, twin(x[:, :stop], **layout)[:, start:]))
    return max(errs)


def cache(p: Probe) -> Verdict:
    """The declared cache bytes (registry) equal the cache's real `nbytes` after a prefill and
    after the decode steps."""
    if "decode" not in p.entry.modes:
        return Verdict("cache", "n/a", "no decode mode declared")
    import attn_variants as av

    x, k, b = p.inputs(), p.cfg.prefill, p.cfg.batch
    module, c = p.module(), av.KVCache()
    sizes = []  # (tokens, real bytes, fields) after the prefill and after one decode step
    with torch.no_grad():
        for start, stop in ((0, k), (k, k + 1)):
            module(x[:, start:stop], cache=c)
            sizes.append((stop, c.nbytes, ", ".join(f"{n} {shape}" for n, shape in c.fields.items())))
    per_token = p.entry.cache_bytes_per_token(p.spec, p.options, p.dtype)
    wrong = [(s, real, fields) for s, real, fields in sizes if real != b * s * per_token]
    if wrong:
        s, real, fields = wrong[0]
        declared = f"declared {b * s * per_token} B at b={b}, s={s}"
        held = f"the cache holds {real} B ({fields}): {per_token} B/token declared, {real / (b * s):g} real"
        return Verdict("cache", "fail", f"{declared}; {held}")
    return Verdict("cache", "pass", f"{per_token} B/token = nbytes")


def fill(p: Probe) -> Verdict:
    """`KVCache.fill` (the sweep's decode prefill, which may skip the attention) leaves the same
    cache as a forward, and the next decode step gives the same output."""
    if "decode" not in p.entry.modes:
        return Verdict("fill", "n/a", "no decode mode declared")
    import attn_variants as av

    x, k = p.inputs(), p.cfg.prefill
    caches, steps = [], []
    for use_fill in (False, True):
        module, c = p.module(), av.KVCache()
        torch.manual_seed(p.cfg.seed + 1)
        with torch.no_grad():
            c.fill(module, x[:, :k]) if use_fill else module(x[:, :k], cache=c)
            steps.append(module(x[:, k : k + 1], cache=c))
        caches.append(c)
    if caches[0].fields != caches[1].fields:
        return Verdict("fill", "fail", f"fill left fields {caches[1].fields}; a forward {caches[0].fields}")
    errs = [p.error(caches[1].get(n), caches[0].get(n)) for n in caches[0].fields]
    err = max([p.error(steps[1], steps[0]), *errs])
    if err > p.tol:
        return Verdict(
            "fill", "fail", f"after fill the cache or next step differs by {fmt(err)} (tol {p.tol:g})"
        )
    return Verdict("fill", "pass", f"max diff {fmt(err)}")


def _backward(p: Probe) -> tuple[Tensor, dict[str, Tensor | None], set[str]]:
    """One training step: forward in train mode, backward of a random upstream gradient. The
    input's gradient, each parameter's, and the parameters the forward read."""
    module = p.module(train=True)
    params = dict(module.named_parameters())
    x = p.inputs().requires_grad_(True)
    reader = _ReadParams({id(t): n for n, t in params.items()})
    torch.manual_seed(p.cfg.seed + 1)
    with reader:
        y = module(x)
    y.backward(p.inputs(seed=4))
    return x.grad, {n: t.grad for n, t in params.items()}, reader.read


class _ReadParams(torch.overrides.TorchFunctionMode):
    """Names of the parameters passed to any torch function while active: what the forward reads."""

    def __init__(self, ids: dict[int, str]) -> None:
        super().__init__()
        self.ids, self.read = ids, set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        for t in torch.utils._pytree.tree_leaves((args, kwargs)):
            if id(t) in self.ids:
                self.read.add(self.ids[id(t)])
        return func(*args, **kwargs)


def grad(p: Probe) -> Verdict:
    """fwd_bwd: every parameter the forward reads gets a finite, nonzero gradient, and so does x."""
    if "fwd_bwd" not in p.entry.modes:
        return Verdict("grad", "n/a", "no fwd_bwd mode declared")
    x_grad, grads, read = _backward(p)
    missing = sorted(n for n in read if grads[n] is None)
    bad = sorted(n for n in read if grads[n] is not None and not torch.isfinite(grads[n]).all())
    zero = sorted(n for n in read if grads[n] is not None and not grads[n].any())
    if x_grad is None or not torch.isfinite(x_grad).all() or not x_grad.any():
        missing = ["the input x", *missing]
    problems = [f"no gradient: {missing}" if missing else "", f"not finite: {bad}" if bad else "",
                f"all zero: {zero}" if zero else ""]  # fmt: skip
    if any(problems):
        return Verdict(
            "grad",
            "fail",
            f"of {len(read)} parameters read by the forward, " + "; ".join(filter(None, problems)),
        )
    unread = len(grads) - len(read)
    note = f"; {unread} never read" if unread else ""
    return Verdict("grad", "pass", f"{len(read)}/{len(read)} read parameters get gradients{note}")


def one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:300]
