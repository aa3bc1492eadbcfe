"""An explicit registry of attention variants, filled by `@register(name, ...)`.

Modelled on timm's `register_model` / `list_models`: a plain dict, sorted listing, an error
that names the valid choices, and no import strings as names. Installed plugins (entry points
of group `attnbench.variants`, attn_variants/plugins.py) are imported the first time it is read.

Besides what `attnbench list` prints, an entry declares the contract properties that
`attnbench conform` holds the variant to (harness/conform): causal safety, batch independence,
whether a decode step equals a forward over the prefix, the cache bytes per token, whether its
FLOPs can be counted on the meta device, and (multimodal) whether image tokens never see text.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Literal

import torch
from torch import nn

from .spec import AttnSpec

Mode = Literal["fwd", "fwd_bwd", "decode"]
MODES: tuple[Mode, ...] = ("fwd", "fwd_bwd", "decode")

# Every variant takes `backend`: the kernel axis (see backends.py), separate from the variant.
COMMON_OPTIONS: Mapping[str, Any] = MappingProxyType({"backend": "sdpa"})


@dataclass(frozen=True)
class VariantInfo:
    """What `attnbench list` prints about one registered variant."""

    name: str
    cls: type[nn.Module]
    description: str
    paper: str
    modes: tuple[Mode, ...] = MODES
    multimodal: bool = False
    causal_safe: bool = True
    options: Mapping[str, Any] = field(default_factory=dict)
    # A preset rewrites the spec, e.g. mha forces g = h; None keeps the caller's spec.
    preset: Callable[[AttnSpec], AttnSpec] | None = None
    # False: n_kv_heads means nothing to this variant (mla caches a latent, not K/V heads); the
    # sweep runs it once per (n, h) and labels give its cache as "≡ g KV heads".
    uses_kv_heads: bool = True
    # Cached elements per token (one layer, one sequence) from (spec, resolved options); None is
    # the GQA family's K and V: 2*g*e.
    cache_per_token: Callable[[AttnSpec, Mapping[str, Any]], int] | None = None
    # The same per device under tensor parallelism of degree tp (query heads split tp ways), from
    # (spec, resolved options, tp): the design's replication rule. None: the GQA family's KV heads
    # split while there are enough of them, 2*ceil(g/tp)*e, if cache_per_token is None too, else
    # the whole cache on every device (a rule no variant declared is taken as replication).
    cache_per_device: Callable[[AttnSpec, Mapping[str, Any], int], int] | None = None
    # Bytes per token and sequence held beside those elements whatever the activations' dtype,
    # e.g. kdgqa's float64 running key norms (8*g); None: nothing else.
    cache_extra_bytes: Callable[[AttnSpec, Mapping[str, Any]], int] | None = None
    # False: one example's output depends on the others' (kdgqa's norms summed over the batch).
    batch_independent: bool = True
    # False: a decode step is not a forward over the prefix (pgqa draws each new token's noise
    # alone); conform then checks that decode runs, not what it computes.
    decode_exact: bool = True
    # False: the forward cannot run on the meta device (it reads values on the host); the sweep
    # counts fwd/fwd_bwd FLOPs on real tensors instead (one real call, n^2 memory at most).
    flops_on_meta: bool = True
    # Multimodal: True when an image token never sees text (mmca); False for a baseline that reads
    # one causal stream (concat). Always False for a unimodal variant.
    isolates_images: bool = False
    # Where the entry came from: "built in", or the distribution, module or file that registered it.
    origin: str = "built in"

    def resolve(self, spec: AttnSpec) -> AttnSpec:
        """The spec this variant actually runs with (presets fix n_kv_heads)."""
        return self.preset(spec) if self.preset else spec

    def resolve_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults overlaid with `options`; unknown names raise ValueError."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ValueError(
                f"unknown option(s) {unknown} for variant {self.name!r}; "
                f"valid options: {sorted(self.options)}"
            )
        return {**self.options, **options}

    def cache_elements(self, spec: AttnSpec, options: Mapping[str, Any] | None = None, tp: int = 1) -> int:
        """Elements the KV cache holds per token and sequence, for the resolved spec; with tp > 1,
        on each of tp tensor-parallel devices (the design's replication rule)."""
        spec = self.resolve(spec)
        check_tp(tp, spec)
        resolved = self.resolve_options(options or {})
        if tp > 1 and self.cache_per_device is not None:
            return self.cache_per_device(spec, resolved, tp)
        if self.cache_per_token is None:
            return 2 * -(-spec.n_kv_heads // tp) * spec.head_dim  # KV heads split, ceil(g/tp) a device
        return self.cache_per_token(spec, resolved)

    def cache_bytes_per_token(
        self, spec: AttnSpec, options: Mapping[str, Any] | None, dtype: torch.dtype, tp: int = 1
    ) -> int:
        """Bytes the cache holds per token and sequence: cache_elements*itemsize + cache_extra_bytes
        (on each of tp devices; the extra bytes are taken as replicated, no rule splits them)."""
        itemsize = torch.empty((), dtype=dtype).element_size()
        extra = 0
        if self.cache_extra_bytes is not None:
            extra = self.cache_extra_bytes(self.resolve(spec), self.resolve_options(options or {}))
        return self.cache_elements(spec, options, tp) * itemsize + extra

    def kv_cache_bytes(
        self,
        spec: AttnSpec,
        options: Mapping[str, Any] | None,
        batch: int,
        seq_len: int,
        dtype: torch.dtype,
        tp: int = 1,
    ) -> int:
        """The analytic cache size at (b, n): b*n*cache_bytes_per_token (GQA: 2*b*g*n*e*itemsize),
        per device under tensor parallelism of degree `tp` (1: the whole cache)."""
        return batch * seq_len * self.cache_bytes_per_token(spec, options, dtype, tp)

    def kv_heads_equiv(self, spec: AttnSpec, options: Mapping[str, Any] | None = None) -> float:
        """The g of a GQA with the same cache per token: cache_elements / (2e)."""
        return self.cache_elements(spec, options) / (2 * self.resolve(spec).head_dim)


def check_tp(tp: object, spec: AttnSpec) -> None:
    """tp devices split the h query heads: a positive divisor of h."""
    if not isinstance(tp, int) or isinstance(tp, bool) or tp <= 0:
        raise ValueError(f"tp={tp!r} must be a positive integer")
    if spec.n_heads % tp:
        raise ValueError(
            f"tp={tp} does not divide n_heads={spec.n_heads}: tensor parallelism splits the query heads"
        )


_REGISTRY: dict[str, VariantInfo] = {}
_ORIGIN: list[str] = []  # set by the plugin loader while it imports a plugin (registering_from)
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")  # no ':', ',' or '=': the CLI's variant syntax uses them


def register(
    name: str,
    *,
    description: str,
    paper: str,
    modes: tuple[Mode, ...] = MODES,
    multimodal: bool = False,
    causal_safe: bool = True,
    options: Mapping[str, Any] | None = None,
    preset: Callable[[AttnSpec], AttnSpec] | None = None,
    uses_kv_heads: bool = True,
    cache_per_token: Callable[[AttnSpec, Mapping[str, Any]], int] | None = None,
    cache_per_device: Callable[[AttnSpec, Mapping[str, Any], int], int] | None = None,
    cache_extra_bytes: Callable[[AttnSpec, Mapping[str, Any]], int] | None = None,
    batch_independent: bool = True,
    decode_exact: bool = True,
    flops_on_meta: bool = True,
    isolates_images: bool | None = None,
) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator adding `name` to the registry; stack it to register presets.

    Bad metadata raises ValueError naming the variant and the field. `isolates_images` defaults
    to `multimodal` (a multimodal variant keeps image tokens from text unless it says not)."""
    isolates = multimodal if isolates_images is None else isolates_images
    flags = dict(multimodal=multimodal, causal_safe=causal_safe, uses_kv_heads=uses_kv_heads,
                 batch_independent=batch_independent, decode_exact=decode_exact,
                 flops_on_meta=flops_on_meta, isolates_images=isolates)  # fmt: skip
    _check_metadata(name, description, paper, modes, options, flags)
    _check_callables(
        name, preset=preset, cache_per_token=cache_per_token, cache_per_device=cache_per_device,
        cache_extra_bytes=cache_extra_bytes,
    )  # fmt: skip
    if isolates and not multimodal:
        raise ValueError(f"variant {name!r}: isolates_images=True needs multimodal=True")
    origin = _ORIGIN[-1] if _ORIGIN else _caller_origin()

    def decorator(cls: type[nn.Module]) -> type[nn.Module]:
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise ValueError(f"variant {name!r}: register decorates an nn.Module subclass, not {cls!r}")
        if name in _REGISTRY:
            raise ValueError(f"variant {name!r} is already registered ({_REGISTRY[name].origin})")
        merged = MappingProxyType({**COMMON_OPTIONS, **(options or {})})
        _REGISTRY[name] = VariantInfo(
            name, cls, description, paper, tuple(modes), multimodal, causal_safe, merged, preset,
            uses_kv_heads, cache_per_token, cache_per_device, cache_extra_bytes, batch_independent,
            decode_exact, flops_on_meta, isolates, origin,
        )  # fmt: skip
        return cls

    return decorator


def _check_metadata(
    name: object, description: object, paper: object, modes: object, options: object, flags: dict[str, object]
) -> None:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ValueError(f"variant name {name!r} must match {NAME.pattern} (letters, digits, _ . -)")
    for key, value in (("description", description), ("paper", paper)):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"variant {name!r}: {key}={value!r} must be a non-empty string")
    if isinstance(modes, str) or not isinstance(modes, (tuple, list)) or not modes:
        raise ValueError(f"variant {name!r}: modes={modes!r} must be a non-empty tuple of {list(MODES)}")
    bad_modes = sorted(set(modes) - set(MODES), key=str)
    if bad_modes:
        raise ValueError(f"variant {name!r}: modes {bad_modes} are not among {list(MODES)}")
    named = isinstance(options, Mapping) and all(isinstance(k, str) for k in options)
    if options is not None and not named:
        raise ValueError(f"variant {name!r}: options={options!r} must map option names to defaults")
    for key, value in flags.items():
        if not isinstance(value, bool):
            raise ValueError(f"variant {name!r}: {key}={value!r} must be True or False")


def _check_callables(name: str, **functions: object) -> None:
    for key, fn in functions.items():
        if fn is not None and not callable(fn):
            raise ValueError(f"variant {name!r}: {key}={fn!r} must be callable or None")


def _caller_origin() -> str:
    """'built in' for attn_variants' own modules, else 'module NAME' of the code calling register."""
    module = sys._getframe(2).f_globals.get("__name__", "?")
    return "built in" if module.split(".")[0] == "attn_variants" else f"module {module}"


@contextlib.contextmanager
def registering_from(origin: str) -> Iterator[None]:
    """Entries registered inside the block record `origin` (the plugin loader's)."""
    _ORIGIN.append(origin)
    try:
        yield
    finally:
        _ORIGIN.pop()


@contextlib.contextmanager
def restored() -> Iterator[None]:
    """Whatever is registered (or loaded as a plugin) inside the block is gone after it: for tests,
    which must not leave the registry dirty for the next one."""
    from . import plugins

    saved = dict(_REGISTRY)
    with plugins.state_restored():
        try:
            yield
        finally:
            _REGISTRY.clear()
            _REGISTRY.update(saved)


def _installed() -> None:
    from . import plugins  # here: plugins imports this module

    plugins.load_installed()


def names() -> list[str]:
    """Every registered variant name, sorted (installed plugins' included)."""
    _installed()
    return sorted(_REGISTRY)


def info(name: str) -> VariantInfo:
    """The registry entry for `name`; unknown names raise ValueError listing valid ones (and any
    installed plugin that failed to load, which may be why)."""
    _installed()
    try:
        return _REGISTRY[name]
    except KeyError:
        from .plugins import errors

        broken = "".join(f"; {line}" for line in errors())
        raise ValueError(f"unknown variant {name!r}; valid variants: {names()}{broken}") from None


def create(name: str, spec: AttnSpec, **options: Any) -> nn.Module:
    """Build variant `name` for `spec`, with its options overriding the defaults."""
    entry = info(name)
    return entry.cls(entry.resolve(spec), **entry.resolve_options(options))


def with_kv_heads(n_kv_heads: Callable[[AttnSpec], int]) -> Callable[[AttnSpec], AttnSpec]:
    """A preset that fixes g from the spec, e.g. `with_kv_heads(lambda s: 1)` for MQA."""
    return lambda spec: replace(spec, n_kv_heads=n_kv_heads(spec))
