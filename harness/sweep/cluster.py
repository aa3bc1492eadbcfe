"""What a Ray sweep needs to know about its cluster and ships to it.

- The driver's code: every Ray worker runs the attnbench packages and `--plugin` files of the
  driver, sent as Ray `runtime_env` `py_modules` (whatever the nodes have installed), and
  `code_hash` lets a worker confirm it runs exactly those files (a mismatch is an error row).
- Where a cell ran: the node's Ray accelerator label (`accelerator_type:H100`, the resource Ray
  gives a GPU node of that model and that `--accelerator-type` asks for) and the GPU's index.
- How many workers fit: counted node by node (a worker cannot span nodes).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import inspect
import os
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from .. import measure

PACKAGES = ("attn_variants", "harness", "reports", "benchstats")  # the ones that exist are shipped
LABEL = "accelerator_type:"  # Ray's resource prefix for a node's accelerator model
EXCLUDES = ["__pycache__", "*.pyc"]


def packages() -> list[Path]:
    """The folders this process imports the attnbench packages from (found, not imported:
    `reports` would import matplotlib); benchstats only where it exists."""
    found = []
    for name in PACKAGES:
        spec = sys.modules[name].__spec__ if name in sys.modules else importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            found.append(Path(list(spec.submodule_search_locations)[0]))
    return found


def plugin_files(plugins: Iterable[str]) -> list[Path]:
    """The `--plugin` targets that are .py files, or modules given by name that are one file."""
    files = []
    for target in plugins:
        path = Path(target).expanduser()
        if target.endswith(".py") or path.is_file():
            files.append(path.resolve())
            continue
        spec = importlib.util.find_spec(target)
        if spec is not None and spec.origin and spec.origin.endswith(".py"):
            is_package = spec.submodule_search_locations is not None
            files.append(Path(spec.origin).parent if is_package else Path(spec.origin))
    return files


def runtime_env(plugins: Iterable[str]) -> dict[str, Any]:
    """Ray's runtime_env that makes a worker import the driver's packages and plugin files, their
    folders uploaded to the cluster (gcs:// URIs). Ray takes local paths only in `ray.init`'s
    job-wide runtime_env; an actor's needs them uploaded first, which Ray's own uploader does
    (the one `ray.init` calls), so the sweep works in a Ray session someone else started."""
    from ray._private.runtime_env.py_modules import upload_py_modules_if_needed

    modules = [str(p) for p in (*packages(), *plugin_files(plugins))]
    env = {"py_modules": modules, "excludes": EXCLUDES}
    upload = functools.partial(upload_py_modules_if_needed, env)
    if "include_gitignore" in inspect.signature(upload_py_modules_if_needed).parameters:
        upload = functools.partial(upload, include_gitignore=True)
    with tempfile.TemporaryDirectory() as scratch:
        env = upload(scratch_dir=scratch)
    return {"py_modules": env["py_modules"]}


def worker_plugins(plugins: Iterable[str]) -> tuple[str, ...]:
    """The plugin targets as a worker loads them: a file by its module name, which py_modules put
    on its path (the driver's path may not exist on the worker's node)."""
    return tuple(Path(t).stem if t.endswith(".py") or Path(t).is_file() else t for t in plugins)


def code_hash(plugins: Iterable[str] = ()) -> str:
    """sha256 (12 hex digits) of the .py files this process imports attnbench and the plugins
    from, by their path inside their package: equal on the driver and a worker running its code."""
    digest = hashlib.sha256()
    roots = packages() + plugin_files(plugins)
    for root in roots:
        files = sorted(root.rglob("*.py")) if root.is_dir() else [root]
        for f in (f for f in files if "__pycache__" not in f.parts):
            digest.update(f"{root.name}/{f.relative_to(root) if root.is_dir() else ''}\0".encode())
            digest.update(f.read_bytes())
    return digest.hexdigest()[:12]


@functools.cache
def worker_code_hash(plugins: tuple[str, ...]) -> str:
    """`code_hash` of a worker process, computed once."""
    return code_hash(plugins)


def gpu_index(device: torch.device) -> str:
    """The physical index of the GPU the cell runs on ('' on CPU): the entry of
    CUDA_VISIBLE_DEVICES torch's device stands for (Ray sets it to the GPU it granted)."""
    if device.type != "cuda":
        return ""
    index = device.index
    if index is None:
        index = torch.cuda.current_device() if torch.cuda.is_available() else 0
    visible = [v for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    return visible[index].strip() if index < len(visible) else str(index)


def node_label() -> str:
    """The accelerator label of the Ray node this process runs on ('' outside Ray or unlabelled)."""
    try:
        import ray
    except ImportError:
        return ""
    if not ray.is_initialized():
        return ""
    here = ray.get_runtime_context().get_node_id()
    for node in ray.nodes():
        if node["NodeID"] == here:
            return labels(node["Resources"])
    return ""


def labels(resources: dict[str, float]) -> str:
    """The accelerator labels among a node's resources ('H100'; 'a+b' if several)."""
    return "+".join(sorted(k.removeprefix(LABEL) for k in resources if k.startswith(LABEL)))


def where(device: torch.device) -> dict[str, str | int]:
    """The host, device and its index, and the node label a cell runs on (the row's columns)."""
    return {**measure.host_environment(device), "gpu_index": gpu_index(device), "accelerator": node_label()}


def capacity(nodes: list[dict], device: torch.device, threads: int, accelerator: str = "") -> int:
    """How many workers the alive nodes hold: one per GPU, or one per `threads` CPUs, node by
    node; with `accelerator`, only on nodes carrying that label."""
    total = 0
    for node in (n for n in nodes if n.get("Alive", True)):
        res = node["Resources"]
        if accelerator and f"{LABEL}{accelerator}" not in res:
            continue
        if device.type == "cuda":
            total += int(res.get("GPU", 0))
        else:
            total += int(res.get("CPU", 0)) // max(1, threads)
    return total


def check_label(nodes: list[dict], accelerator: str) -> None:
    """`accelerator` names a label some alive node carries (ValueError naming the labels there)."""
    found = sorted(
        {lab for n in nodes if n.get("Alive", True) for lab in labels(n["Resources"]).split("+") if lab}
    )
    if accelerator and accelerator not in found:
        raise ValueError(
            f"accelerator_type={accelerator!r}: no node of the Ray cluster carries it; "
            f"labels there: {found or 'none'}"
        )
