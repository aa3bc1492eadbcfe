"""Where sweep cells run: in this process (`local`) or on long-lived Ray workers (`ray`).

An executor resolves the device, describes the machine the cells run on, and maps a picklable
function over cells, yielding (cell, result) pairs as they finish, in completion order, so the
sweep can flush each row the moment it exists. A result is whatever the function returned, or
the exception that ended its call or its worker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

from .. import measure

T = TypeVar("T")
R = TypeVar("R")
RAY_HINT = 'executor "ray" needs Ray, which is not installed: pip install "attnbench[ray]"'


class LocalExecutor:
    """Cells one after another in this process: nothing else competes for the device."""

    def device(self, name: str) -> torch.device:
        return measure.resolve_device(name)

    def environment(self, device: torch.device) -> dict[str, str | int]:
        return measure.environment(device)

    def map(
        self, fn: Callable[[T], R], items: Sequence[T], *, device: torch.device
    ) -> Iterator[tuple[T, R | BaseException]]:
        for item in items:
            yield item, fn(item)


class Worker:
    """A Ray actor that runs cells one at a time on the device it holds: one per GPU, or per
    `threads` CPUs. It lives for the whole sweep, so its process, imports, CUDA context and
    allocator cache are paid once (a Ray *task* holding a GPU gets a fresh process per call:
    Ray's `max_calls=1` default for GPU tasks), and its thread count is fixed once."""

    def __init__(self, device_type: str, threads: int) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.device = torch.device(device_type)

    def describe(self) -> dict[str, str | int]:
        """This worker's machine: device name, host, torch version and its real thread count."""
        return measure.host_environment(self.device)

    def run(self, fn: Callable[[T], R], item: T) -> R:
        return fn(item)


@dataclass
class RayExecutor:
    """Cells on a pool of `Worker` actors. A GPU worker holds one whole GPU, never a fraction, so
    no two cells share a device and their timings stay independent; a CPU worker reserves one
    CPU slot per thread it runs, for the same reason. Each worker runs one cell at a time."""

    address: str = ""
    threads: int = 0
    workers: list[Any] = field(default_factory=list)

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

    def environment(self, device: torch.device) -> dict[str, str | int]:
        """The driver's code version and a worker's machine: the driver may have no GPU (a
        laptop, a CPU head node), so it never asks its own torch about the device."""
        worker = self._grow(device, 1)[0]
        return {"git_commit": measure.git_commit(), **self.ray.get(worker.describe.remote())}

    def map(
        self, fn: Callable[[T], R], items: Sequence[T], *, device: torch.device
    ) -> Iterator[tuple[T, R | BaseException]]:
        try:
            if not items:
                return
            size = min(len(items), pool_size(self.ray.cluster_resources(), device, self.threads))
            idle = list(self._grow(device, size))
            shared = self.ray.put(fn)  # the settings travel once, not once per cell
            todo, pending = list(items), {}
            while todo or pending:
                while todo and idle:  # each worker runs one cell at a time
                    worker, item = idle.pop(), todo.pop(0)
                    pending[worker.run.remote(shared, item)] = (item, worker)
                done, _ = self.ray.wait(list(pending), num_returns=1)
                item, worker = pending.pop(done[0])
                result = self._get(done[0])
                dead = isinstance(result, self.ray.exceptions.RayActorError)
                idle.append(self._replace(worker, device) if dead else worker)
                yield item, result
        finally:  # done, Ctrl-C, or the caller stopped early: free the devices
            self.close()

    def close(self) -> None:
        """End every worker (their devices go back to the cluster)."""
        for worker in self.workers:
            self.ray.kill(worker)
        self.workers = []

    def _grow(self, device: torch.device, n: int) -> list[Any]:
        """At least `n` workers for `device` (started here if needed); returns them all."""
        gpu = device.type == "cuda"
        slots = {"num_gpus": 1, "num_cpus": 1} if gpu else {"num_cpus": max(1, self.threads)}
        actor = self.ray.remote(max_restarts=0, **slots)(Worker)
        while len(self.workers) < n:
            self.workers.append(actor.remote(device.type, self.threads))
        return self.workers

    def _replace(self, dead: Any, device: torch.device) -> Any:
        """A fresh worker in place of one whose process died (the sweep goes on)."""
        self.workers.remove(dead)
        return self._grow(device, len(self.workers) + 1)[-1]

    def _get(self, ref: Any) -> Any:
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayError as err:  # the cell raised, or its worker died
            return err


def pool_size(resources: dict[str, float], device: torch.device, threads: int) -> int:
    """How many workers the cluster holds at once: one per GPU, or one per `threads` CPUs."""
    if device.type == "cuda":
        return max(1, int(resources.get("GPU", 0)))
    return max(1, int(resources.get("CPU", 1)) // max(1, threads))


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
