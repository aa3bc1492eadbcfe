"""Variants named on the command line, with options: `gqa`, `mmca:visual_attention=full`, `all`.

Syntax: `name[:key=value[:key=value...]]`. Values are parsed to the type of the option's
registry default (bool: true/false), so any registered variant works with no change here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

import attn_variants as av

BOOLS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}


@dataclass(frozen=True)
class VariantChoice:
    """A registered variant and the options given for it (sorted; defaults are not listed)."""

    name: str
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def options_text(self) -> str:
        """'key=value;...', the CSV `options` column ('' = registry defaults)."""
        return ";".join(f"{k}={format_value(v)}" for k, v in self.options)

    def label(self, n_kv_heads: int, kv_heads_equiv: float | None = None) -> str:
        """Names carry their parameters: 'gqa_g2', 'mmca_g2[visual_attention=full]'. A variant
        that ignores n_kv_heads (mla) gives its cache as GQA heads instead: 'mla(≡2.25 KV heads)'."""
        suffix = f"[{self.options_text}]" if self.options else ""
        if av.info(self.name).uses_kv_heads:
            return f"{self.name}_g{n_kv_heads}{suffix}"
        equiv = "" if kv_heads_equiv is None else f"(≡{kv_heads_equiv:.3g} KV heads)"
        return f"{self.name}{equiv}{suffix}"

    def label_for(self, spec: av.AttnSpec) -> str:
        """`label` at a resolved spec, the cache equivalent taken from the registry."""
        equiv = av.info(self.name).kv_heads_equiv(spec, dict(self.options))
        return self.label(spec.n_kv_heads, equiv)


def parse_variants(items: Iterable[str], reference: str = "none") -> list[VariantChoice]:
    """Parse `items` ('all' expands to every registered name), then add `reference` first
    unless it is 'none' or already there without options. Order kept, duplicates dropped."""
    choices: list[VariantChoice] = []
    for item in items:
        names = av.names() if item.strip() == "all" else [item]
        choices.extend(parse_one(name) for name in names)
    if reference != "none":
        av.info(reference)  # an unknown reference names the valid variants
        choices.insert(0, VariantChoice(reference))
    return list(dict.fromkeys(choices))


def with_backends(choices: Sequence[VariantChoice], backends: Sequence[str]) -> list[VariantChoice]:
    """Each choice once per backend, as its `backend` option (left out for the registry
    default, so default rows keep options ''); a choice that names a backend keeps it."""
    out: list[VariantChoice] = []
    for choice in choices:
        given = dict(choice.options)
        for backend in [given["backend"]] if "backend" in given else backends:
            default = av.info(choice.name).options["backend"]
            options = {**given, "backend": backend} if backend != default else given
            out.append(VariantChoice(choice.name, tuple(sorted(options.items()))))
    return list(dict.fromkeys(out))


def parse_one(text: str) -> VariantChoice:
    """'name:key=value:...' -> VariantChoice; unknown names or options raise ValueError."""
    name, *pairs = [part.strip() for part in text.split(":")]
    entry = av.info(name)
    given: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            example = "e.g. 'gqa:backend=eager'"
            raise ValueError(f"variant option {pair!r} in {text!r} is not key=value ({example})")
        entry.resolve_options({key: None})  # unknown keys raise, naming the valid options
        given[key.strip()] = parse_value(raw.strip(), entry.options[key], f"{name}:{key}")
    return VariantChoice(name, tuple(sorted(given.items())))


def check_builds(cells: Iterable[tuple[VariantChoice, av.AttnSpec]]) -> None:
    """Build each distinct (variant, options) at each distinct spec of the run, once, before
    any cell runs: a bad option value (`mmca:visual_attention=bogus`, `pgqa:seed=x`) raises
    ValueError naming the variant, instead of an `invalid` row per cell.

    The builds are on the meta device: the run's own specs, with no memory and no weights
    drawn. A variant is refused only when none of its specs builds; one that builds at some
    shapes leaves the others to their cells (an `invalid` row, the run goes on)."""
    specs: dict[VariantChoice, dict[av.AttnSpec, None]] = {}
    for choice, spec in cells:
        specs.setdefault(choice, {})[spec] = None
    for choice, group in specs.items():
        errors = [_build_error(choice, spec) for spec in group]
        if errors and all(errors):
            text = ":".join([choice.name, *(f"{k}={format_value(v)}" for k, v in choice.options)])
            raise ValueError(f"variant {text!r} cannot be built: {errors[0]}")


def _build_error(choice: VariantChoice, spec: av.AttnSpec) -> str:
    """Why `choice` does not build at `spec` ('' if it does). Only ValueError and TypeError
    count: anything else may be the meta device's doing, and the cell itself will tell."""
    try:
        with torch.device("meta"):
            av.create(choice.name, spec, **dict(choice.options))
    except (ValueError, TypeError) as err:
        return str(err)
    except Exception:  # noqa: BLE001 (not evidence against the options; see above)
        return ""
    return ""


def parse_value(raw: str, default: Any, where: str) -> Any:
    """`raw` as the type of `default`. A None default ("unset", e.g. pgqa's seed) says nothing
    of the type: 'none' or '' is None, an int or float literal that number, anything else text."""
    if default is None:
        return _literal(raw)
    if isinstance(default, bool):
        if raw.lower() not in BOOLS:
            raise ValueError(f"option {where}={raw!r} must be a boolean: true or false")
        return BOOLS[raw.lower()]
    for tp in (int, float):
        if isinstance(default, tp):
            try:
                return tp(raw)
            except ValueError:
                raise ValueError(f"option {where}={raw!r} must be of type {tp.__name__}") from None
    return raw


def _literal(raw: str) -> Any:
    if raw.lower() in ("none", ""):
        return None
    for tp in (int, float):
        try:
            return tp(raw)
        except ValueError:
            pass
    return raw


def format_value(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)
