"""An explicit registry of attention variants, filled by `@register(name, ...)`.

Modelled on timm's `register_model` / `list_models`: a plain dict, sorted listing, an error
that names the valid choices, and no import strings as names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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

    def kv_cache_bytes(
        self,
        spec: AttnSpec,
        options: Mapping[str, Any] | None,
        batch: int,
        seq_len: int,
        dtype: torch.dtype,
        tp: int = 1,
    ) -> int:
        """The analytic cache size at (b, n): b*n*cache_elements*itemsize (GQA: 2*b*g*n*e*itemsize),
        per device under tensor parallelism of degree `tp` (1: the whole cache)."""
        itemsize = torch.empty((), dtype=dtype).element_size()
        return batch * seq_len * self.cache_elements(spec, options, tp) * itemsize

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
) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator adding `name` to the registry; stack it to register presets."""
    bad_modes = sorted(set(modes) - set(MODES))
    if bad_modes:
        raise ValueError(f"modes {bad_modes} for {name!r} are not among {list(MODES)}")

    def decorator(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"variant {name!r} is already registered")
        merged = MappingProxyType({**COMMON_OPTIONS, **(options or {})})
        _REGISTRY[name] = VariantInfo(
            name, cls, description, paper, tuple(modes), multimodal, causal_safe, merged, preset,
            uses_kv_heads, cache_per_token, cache_per_device,
        )  # fmt: skip
        return cls

    return decorator


def names() -> list[str]:
    """Every registered variant name, sorted."""
    return sorted(_REGISTRY)


def info(name: str) -> VariantInfo:
    """The registry entry for `name`; unknown names raise ValueError listing valid ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown variant {name!r}; valid variants: {names()}") from None


def create(name: str, spec: AttnSpec, **options: Any) -> nn.Module:
    """Build variant `name` for `spec`, with its options overriding the defaults."""
    entry = info(name)
    return entry.cls(entry.resolve(spec), **entry.resolve_options(options))


def with_kv_heads(n_kv_heads: Callable[[AttnSpec], int]) -> Callable[[AttnSpec], AttnSpec]:
    """A preset that fixes g from the spec, e.g. `with_kv_heads(lambda s: 1)` for MQA."""
    return lambda spec: replace(spec, n_kv_heads=n_kv_heads(spec))
