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

    def cache_elements(self, spec: AttnSpec, options: Mapping[str, Any] | None = None) -> int:
        """Elements the KV cache holds per token and sequence, for the resolved spec."""
        spec = self.resolve(spec)
        if self.cache_per_token is None:
            return 2 * spec.n_kv_heads * spec.head_dim
        return self.cache_per_token(spec, self.resolve_options(options or {}))

    def kv_cache_bytes(
        self, spec: AttnSpec, options: Mapping[str, Any] | None, batch: int, seq_len: int, dtype: torch.dtype
    ) -> int:
        """The analytic cache size at (b, n): b*n*cache_elements*itemsize (GQA: 2*b*g*n*e*itemsize)."""
        itemsize = torch.empty((), dtype=dtype).element_size()
        return batch * seq_len * self.cache_elements(spec, options) * itemsize

    def kv_heads_equiv(self, spec: AttnSpec, options: Mapping[str, Any] | None = None) -> float:
        """The g of a GQA with the same cache per token: cache_elements / (2e)."""
        return self.cache_elements(spec, options) / (2 * self.resolve(spec).head_dim)


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
            uses_kv_heads, cache_per_token,
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
