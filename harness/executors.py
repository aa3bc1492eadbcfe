"""Where sweep cells run: in this process (`local`) or as tasks on a Ray cluster (`ray`).

An executor maps a picklable function over cells and yields (cell, result) pairs as they
finish, in completion order, so the sweep can flush each row the moment it exists. A result
is whatever the function returned, or the exception that ended its task or its worker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from . import measure

T = TypeVar("T")
R = TypeVar("R")
RAY_HINT = 'executor "ray" needs Ray, which is not installed: pip install "attnbench[ray]"'


class LocalExecutor:
    """Cells one after another in this process: nothing else competes for the device."""

    def device(self, name: str) -> torch.device:
        return measure.resolve_device(name)

    def map(
        self, fn: Callable[[T], R], items: Sequence[T], *, device: torch.device
    ) -> Iterator[tuple[T, R | BaseException]]:
        for item in items:
            yield item, fn(item)


@dataclass
class RayExecutor:
    """One Ray task per cell. A GPU cell holds one whole GPU, never a fraction, so no two cells
    share a device and their timings stay independent; a CPU cell reserves one CPU slot per
    thread it runs, for the same reason."""

    address: str = ""
    threads: int = 0

    def __post_init__(self) -> None:
        self.ray = import_ray()
        if not self.ray.is_initialized():
            self.ray.init(address=self.address or None, include_dashboard=False, log_to_driver=False)

    def device(self, name: str) -> torch.device:
        """The cluster's device: 'auto' is CUDA when the cluster has GPUs (this host may have none)."""
        if name not in ("auto", "cpu", "cuda"):
            return measure.resolve_device(name)  # raises, naming the valid devices
        has_gpu = self.ray.cluster_resources().get("GPU", 0) >= 1
        if name == "cuda" and not has_gpu:
            raise ValueError(
                "device='cuda' was asked for but the Ray cluster has no GPU; use 'cpu' or 'auto'"
            )
        return torch.device("cuda" if name == "cuda" or (name == "auto" and has_gpu) else "cpu")

    def map(
        self, fn: Callable[[T], R], items: Sequence[T], *, device: torch.device
    ) -> Iterator[tuple[T, R | BaseException]]:
        if not items:
            return
        gpu = device.type == "cuda"
        slots = {"num_gpus": 1, "num_cpus": 1} if gpu else {"num_cpus": max(1, self.threads)}
        remote = self.ray.remote(max_retries=0, **slots)(_call)
        shared = self.ray.put(fn)  # the settings travel once, not once per cell
        pending = {remote.remote(shared, item): item for item in items}
        try:
            while pending:
                done, _ = self.ray.wait(list(pending), num_returns=1)
                item = pending.pop(done[0])
                yield item, self._get(done[0])
        finally:  # Ctrl-C, or the caller stopped early: cancel what has not finished
            for ref in pending:
                self.ray.cancel(ref, force=True)

    def _get(self, ref: Any) -> Any:
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayError as err:  # the task raised, or its worker died
            return err


def _call(fn: Callable[[T], R], item: T) -> R:
    """The Ray task: `fn(item)` on a worker (Ray wants a plain function to decorate)."""
    return fn(item)


def make(name: str, address: str = "", threads: int = 0) -> LocalExecutor | RayExecutor:
    """The executor called `name` ('local' or 'ray')."""
    if name == "local":
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(address, threads)
    raise ValueError(f"unknown executor {name!r}; valid executors: ['local', 'ray']")


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ValueError(RAY_HINT) from None
    return ray
