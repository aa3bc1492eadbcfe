"""Outside variants: modules that call `register`, found without a fork of attnbench.

Two ways in, both standard Python:

- an installed distribution declares an entry point in the group `attnbench.variants`
  (`[project.entry-points."attnbench.variants"]` in its pyproject). Every one is imported the
  first time the registry is read (`names`, `info`, `create`), so its variants appear in every
  command with no other step. `importlib.metadata.entry_points` finds them, as pytest finds its
  plugins (group `pytest11`);
- a one-off module: `load("my_attn")` imports a module by name, `load("path/to/my_attn.py")` a
  file (the CLI's `--plugin`, bench.toml's `plugins = [...]`).

A plugin loads whole or not at all: one that fails to import, registers a name that exists or
declares bad metadata unregisters what it registered before the failure, and the error names
the plugin. An installed plugin's failure does not stop the library (the built-in variants keep
working): it is kept in `errors()` and named by an unknown-variant error; the CLI refuses to run
with it (one line, exit code 2). A plugin given by name or file raises `PluginError` at once.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterable, Iterator
from importlib import metadata
from pathlib import Path

from . import registry

GROUP = "attnbench.variants"


class PluginError(ValueError):
    """A plugin that could not be loaded; the message names it and says why."""


_loaded: dict[str, tuple[str, ...]] = {}  # plugin key (module name or file path) -> names it registered
_modules: dict[str, str] = {}  # plugin key -> the module it imported (forgotten by `state_restored`)
_errors: dict[str, str] = {}  # installed plugins (entry points) that failed, key -> one-line message
_installed_done = False


def load_installed() -> None:
    """Import every entry point of group `attnbench.variants`, once per process. A failure is
    recorded in `errors()`, not raised: the built-in variants must keep working without it."""
    global _installed_done
    if _installed_done:
        return
    _installed_done = True  # before importing: a plugin that reads the registry must not recurse
    for ep in sorted(metadata.entry_points(group=GROUP), key=lambda ep: ep.name):
        dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist is not None else "an unknown distribution"
        key = f"entry point {ep.name} = {ep.value}"
        try:
            _load(key, f"distribution {dist}", ep.module, lambda ep=ep: _run_entry_point(ep))
        except PluginError as err:
            _errors[key] = str(err)


def errors() -> tuple[str, ...]:
    """One line per installed plugin that failed to load (empty when all loaded)."""
    load_installed()
    return tuple(_errors.values())


def load(target: str) -> tuple[str, ...]:
    """Import the plugin `target`, a module name or a .py file; the variant names it registered.
    Loading the same plugin again does nothing. Raises PluginError naming the plugin."""
    load_installed()  # an installed plugin and a given one that register the same name clash here
    target = target.strip()
    if not target:
        raise PluginError("plugin '': give a module name or a .py file")
    if _is_file(target):
        path = Path(target).expanduser().resolve()
        return _load(str(path), f"file {path}", path.stem, lambda: _import_file(target, path))
    return _load(target, f"module {target}", target, lambda: importlib.import_module(target))


def load_all(targets: Iterable[str]) -> tuple[str, ...]:
    """`load` each target in order; every variant name they registered."""
    return tuple(name for target in targets for name in load(target))


def loaded() -> dict[str, tuple[str, ...]]:
    """Each plugin loaded so far (its key) and the variant names it registered."""
    return dict(_loaded)


def _is_file(target: str) -> bool:
    return target.endswith(".py") or "/" in target or "\\" in target or Path(target).is_file()


def _run_entry_point(ep: metadata.EntryPoint) -> None:
    """Import the entry point's module; 'pkg.module:func' also calls func (it registers)."""
    obj = ep.load()
    if ep.attr:
        obj()


def _load(key: str, origin: str, module: str, do_import: Callable[[], object]) -> tuple[str, ...]:
    """Run `do_import` with `register` recording `origin`; undo its registrations on failure."""
    if key in _loaded:
        return _loaded[key]
    before = set(registry._REGISTRY)
    _modules[key] = module
    try:
        with registry.registering_from(origin):
            do_import()
    except Exception as err:  # noqa: BLE001 (any failure of outside code is the plugin's, reported)
        for name in set(registry._REGISTRY) - before:
            del registry._REGISTRY[name]
        raise PluginError(f"plugin {key!r} ({origin}): {_reason(err)}") from None
    names = tuple(sorted(set(registry._REGISTRY) - before))
    _loaded[key] = names
    return names


def _reason(err: BaseException) -> str:
    """'Type: message' on one line; a ValueError (bad metadata, a taken name) keeps its text."""
    text = " ".join(str(err).split())
    if type(err) is ValueError:
        return text
    kind = "cannot be imported" if isinstance(err, (ImportError, SyntaxError)) else "failed on import"
    return f"{kind}: {type(err).__name__}: {text}"


def _import_file(target: str, path: Path) -> object:
    """Import a .py file as the module named by its stem (so classes pickle by reference, e.g.
    to Ray workers that load the same file); a different module of that name is an error."""
    if not path.is_file():
        raise ImportError(f"no such file: {target}")
    name = path.stem
    present = sys.modules.get(name)
    if present is not None:
        where = getattr(present, "__file__", None)
        if where is not None and Path(where).resolve() == path:
            return present
        raise ImportError(f"a module named {name!r} is already imported from {where}; rename the file")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{target} is not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


@contextlib.contextmanager
def state_restored() -> Iterator[None]:
    """Restore the loader's bookkeeping and forget modules imported inside the block (tests)."""
    global _installed_done
    saved = (dict(_loaded), dict(_errors), dict(_modules), _installed_done)
    try:
        yield
    finally:
        for key in set(_modules) - set(saved[2]):
            sys.modules.pop(_modules[key], None)  # imported again, and registering again, next time
        for live, old in zip((_loaded, _errors, _modules), saved, strict=False):
            live.clear()
            live.update(old)
        _installed_done = saved[3]
