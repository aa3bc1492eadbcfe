"""bench.toml -> frozen dataclasses, read with `tomllib`; CLI flags override the file.

bench.toml holds one table per command (`[sweep]`, `[accuracy]`, `[check]`, ...) with the
defaults, and named profiles that override them: `[profiles.quick.sweep]`. Resolution order,
as in fastapi-cli's `resolve()`: dataclass defaults < [section] < [profiles.NAME.section] <
CLI flags. Unknown keys and wrong types raise ValueError naming the key.

Plugins (attn_variants/plugins.py) accumulate rather than override: a top-level
`plugins = [...]` (before any table) applies to every command, a command's table may add its
own, and each `--plugin` flag adds one more; a config with a `plugins` field gets them all, in
that order, once each.

Which file (`find`): `--config FILE`, which must exist; else `./bench.toml` if there is one;
else the built-in defaults, the package's `harness/bench.toml`. That file is a symlink to the
checkout's top-level bench.toml, so the two are one file: the wheel carries its content
(package-data), and an edit to either is an edit to both.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar

import tomllib

T = TypeVar("T")
DEFAULT_PATH = Path("bench.toml")  # looked for in the working folder
BUILTIN = "built-in defaults"
Source = Literal["--config", "./bench.toml", "built-in defaults"]


@dataclass(frozen=True)
class Settings:
    """A parsed settings file and where it came from (run.json records `record()`)."""

    data: Mapping[str, Any]
    source: Source
    path: str  # the file read: absolute, or the packaged defaults' location

    @property
    def plugins(self) -> tuple[str, ...]:
        """The top-level `plugins = [...]`: modules or .py files every command imports."""
        return coerce(f"{self.path} plugins", self.data.get("plugins", []), tuple[str, ...])

    def record(self, profile: str | None = None) -> dict[str, Any]:
        """run.json's `settings`: which file the run's config was read from, and the profile."""
        return {"source": self.source, "path": self.path, "profile": profile}


def defaults_text() -> str:
    """The built-in defaults with their comments: the installed package's bench.toml."""
    return resources.files("harness").joinpath("bench.toml").read_text(encoding="utf-8")


def find(path: Path | None = None) -> Settings:
    """`path` (it must exist), else ./bench.toml if present, else the built-in defaults."""
    if path is not None:
        return Settings(read_toml(path), "--config", str(Path(path).resolve()))
    if DEFAULT_PATH.is_file():
        return Settings(read_toml(DEFAULT_PATH), "./bench.toml", str(DEFAULT_PATH.resolve()))
    where = str(resources.files("harness").joinpath("bench.toml"))
    return Settings(parse_toml(defaults_text(), BUILTIN), BUILTIN, where)


def write_defaults(path: Path, *, force: bool = False) -> Path:
    """The built-in defaults, comments and all, written to `path` (a folder: FOLDER/bench.toml);
    an existing file is kept unless `force`. Returns the file written."""
    path = Path(path) / DEFAULT_PATH.name if Path(path).is_dir() else Path(path)
    if path.exists() and not force:
        raise ValueError(f"{str(path)!r} exists; keep it, or overwrite it with --force")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(defaults_text(), encoding="utf-8")
    except OSError as err:
        raise ValueError(f"cannot write {str(path)!r}: {err.strerror or err}") from None
    return path


def read_toml(path: Path) -> dict[str, Any]:
    """The parsed file; a missing or malformed file raises ValueError naming it."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        hint = f"write one with `attnbench init {path}`"
        raise ValueError(f"config file {str(path)!r} does not exist ({hint})") from None
    except (OSError, UnicodeDecodeError) as err:  # a folder, no permission, not text
        reason = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
        raise ValueError(f"config file {str(path)!r} cannot be read: {reason or err}") from None
    return parse_toml(text, f"config file {str(path)!r}")


def parse_toml(text: str, where: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{where} is not valid TOML: {err}") from None


def load(
    cls: type[T],
    section: str,
    *,
    path: Path | None = None,
    profile: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    settings: Settings | None = None,
) -> T:
    """Build `cls` from `[section]`, then `[profiles.<profile>.<section>]`, then `overrides`.

    The file is `settings`, or `find(path)`: `path`, ./bench.toml, or the built-in defaults.
    Overrides whose value is None are ignored, so unset CLI flags fall through to the file.
    """
    settings = settings if settings is not None else find(path)
    data, where = settings.data, settings.path
    values: dict[str, Any] = dict(_table(data, section, where))
    if profile is not None:
        profiles = _table(data, "profiles", where)
        if profile not in profiles:
            raise ValueError(f"unknown profile {profile!r}; valid profiles: {sorted(profiles)}")
        if section not in _table(profiles, profile, where):  # it would run the defaults silently
            having = sorted(p for p, t in profiles.items() if isinstance(t, Mapping) and section in t)
            raise ValueError(
                f"profile {profile!r} has no [profiles.{profile}.{section}] table; "
                f"profiles with one: {having}"
            )
        values.update(_table(profiles[profile], section, f"{where} [profiles.{profile}]"))
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    table = values.get("plugins", [])  # not a list: `build` names it
    if "plugins" in {f.name for f in dataclasses.fields(cls)} and isinstance(table, (list, tuple)):
        given["plugins"] = list(dict.fromkeys([*settings.plugins, *table, *given.get("plugins", ())]))
    values.update(given)
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
