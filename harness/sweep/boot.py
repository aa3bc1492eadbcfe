"""The first thing a Ray worker does: put the driver's shipped code ahead of anything else.

Ray puts the driver's working directory (and its script's folder) at the front of every
worker's `sys.path`, ahead of the runtime_env's `py_modules`: a checkout there, or on a node
whose path holds another attnbench, would shadow the driver's code. `Boot` moves the shipped
folders (the first entries of the worker's PYTHONPATH, where Ray puts py_modules) to the front,
forgets any attnbench module already imported, then imports the real `executors.Worker`.

This module travels to the workers by value (cloudpickle.register_pickle_by_value): loading it
there imports nothing of attnbench. Keep its imports to the standard library.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

PACKAGES = ("attn_variants", "harness", "reports", "benchstats")


def prefer_shipped(count: int) -> list[str]:
    """Move the first `count` PYTHONPATH entries (Ray's py_modules folders) to the front of
    sys.path and drop imported attnbench modules; the folders moved."""
    shipped = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p][:count]
    sys.path[:] = shipped + [p for p in sys.path if p not in shipped]
    for name in [m for m in sys.modules if m.split(".")[0] in PACKAGES]:
        del sys.modules[name]
    importlib.invalidate_caches()
    return shipped


class Boot:
    """The Ray actor: an `executors.Worker` imported from the shipped code."""

    def __init__(self, shipped: int, *args: Any) -> None:
        prefer_shipped(shipped)
        self.worker = importlib.import_module("harness.sweep.executors").Worker(*args)

    def describe(self, *args: Any) -> dict:
        return self.worker.describe(*args)

    def run(self, fn: Any, item: Any) -> Any:
        return self.worker.run(fn, item)
