"""bench.toml -> frozen dataclasses, read with `tomllib`; CLI flags override the file.

bench.toml holds one table per command (`[sweep]`, `[accuracy]`, `[check]`, ...) with the
defaults, and named profiles that override them: `[profiles.quick.sweep]`. Resolution order,
as in fastapi-cli's `resolve()`: dataclass defaults < [section] < [profiles.NAME.section] <
CLI flags. Unknown keys and wrong types raise ValueError naming the key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import tomllib

T = TypeVar("T")
DEFAULT_PATH = Path("bench.toml")


def read_toml(path: Path) -> dict[str, Any]:
    """The parsed file; a missing or malformed file raises ValueError naming it."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ValueError(f"config file {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"config file {str(path)!r} is not valid TOML: {err}") from None


def load(
    cls: type[T],
    section: str,
    *,
    path: Path | None = DEFAULT_PATH,
    profile: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> T:
    """Build `cls` from `[section]`, then `[profiles.<profile>.<section>]`, then `overrides`.

    `path=None` skips the file (dataclass defaults and overrides only). Overrides whose value
    is None are ignored, so unset CLI flags fall through to the file.
    """
    data = read_toml(path) if path is not None else {}
    values: dict[str, Any] = dict(_table(data, section, str(path)))
    if profile is not None:
        profiles = _table(data, "profiles", str(path))
        if profile not in profiles:
            raise ValueError(f"unknown profile {profile!r}; valid profiles: {sorted(profiles)}")
        values.update(_table(profiles[profile], section, f"{path} [profiles.{profile}]"))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return build(cls, values, where=f"[{section}]")


def build(cls: type[T], values: Mapping[str, Any], *, where: str = "") -> T:
    """`cls(**values)` with every value checked against and coerced to its field's type."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in {where}; valid keys: {sorted(fields)}")
    return cls(**{k: coerce(f"{where} {k}".strip(), v, hints[k]) for k, v in values.items()})


def coerce(key: str, value: Any, tp: Any) -> Any:
    """`value` as type `tp` (int, float, str, bool, Literal, Optional, tuple[X, ...])."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        if value not in args:
            raise ValueError(f"{key}={value!r} is not one of {list(args)}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(key, value, arg)
            except ValueError as err:
                errors.append(str(err))
        raise ValueError("; ".join(errors))
    if origin is tuple:
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ValueError(f"{key}={value!r} must be a list")
        return tuple(coerce(key, item, args[0]) for item in value)
    return _scalar(key, value, tp)


def _scalar(key: str, value: Any, tp: Any) -> Any:
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and (type(value) is not tp):
        raise ValueError(f"{key}={value!r} must be of type {tp.__name__}")
    return value


def _table(data: Mapping[str, Any], name: str, where: str) -> Mapping[str, Any]:
    table = data.get(name, {})
    if not isinstance(table, Mapping):
        raise ValueError(f"{name!r} in {where} must be a table")
    return table
