"""Where sweep cells run: in this process (`local`) or on long-lived Ray workers (`ray`).

An executor resolves the device, describes the machine the cells run on, and maps a picklable
function over cells, yielding (cell, result) pairs as they finish, in completion order, so the
sweep can flush each row the moment it exists. A result is whatever the function returned, or
the exception that ended its call or its worker.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

from .. import measure
from ..records import error_text
from . import boot, cluster

T = TypeVar("T")
R = TypeVar("R")
RAY_HINT = 'executor "ray" needs Ray, which is not installed: pip install "attnbench[ray]"'


class LocalExecutor:
    """Cells one after another in this process: nothing else competes for the device."""

    def device(self, name: str) -> torch.device:
        return measure.resolve_device(name)

    def prepare(self, device: torch.device, cells: int) -> None:
        """Nothing to start: the cells run here."""

    def environment(self, device: torch.device) -> dict[str, str | int]:
        return {**measure.environment(device), "gpu_index": cluster.gpu_index(device)}

    def map(
        self, fn: Callable[[T], R], items: Sequence[T], *, device: torch.device
    ) -> Iterator[tuple[T, R | BaseException, int]]:
        for item in items:
            yield item, fn(item), 1


class Worker:
    """A Ray actor (started through boot.Boot) that runs cells one at a time on the device it
    holds: one per GPU, or per `threads` CPUs. It lives for the whole sweep, so its process,
    imports, CUDA context and allocator cache are paid once (a Ray *task* holding a GPU gets a
    fresh process per call: Ray's `max_calls=1` default for GPU tasks), and its thread count is
    fixed once."""

    def __init__(self, device_type: str, threads: int) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.device = torch.device(device_type)

    def describe(self, plugins: tuple[str, ...] = ()) -> dict[str, str | int]:
        """This worker's machine (device name and index, host, node label, torch version, its
        real thread count) and the hash of the code it imports."""
        return {**cluster.where(self.device), "code_hash": cluster.worker_code_hash(plugins)}

    def run(self, fn: Callable[[T], R], item: T) -> R:
        return fn(item)


class WorkerLost(RuntimeError):
    """A cell whose worker died on every try: it kills its worker, or nodes kept going away."""

    def __init__(self, attempts: int, last: BaseException) -> None:
        cause = str(last).strip().splitlines()[0] if str(last).strip() else type(last).__name__
        super().__init__(
            f"the worker died on each of {attempts} attempt(s), so the cell was not measured "
            f"(it kills its worker, or its nodes went away); last: {type(last).__name__}: {cause}"
        )


@dataclass
class RayExecutor:
    """Cells on a pool of `Worker` actors. A GPU worker holds one whole GPU, never a fraction, so
    no two cells share a device and their timings stay independent; a CPU worker reserves one
    CPU slot per thread it runs, for the same reason. Each worker runs one cell at a time.

    A cell whose worker died (its process, or its node: preemption, a GPU off the bus) runs
    again on another worker, up to `retries` more times; a cell that raised is never rerun. With
    `accelerator_type`, workers go only to nodes of that Ray accelerator label. Workers import
    the driver's code (cluster.runtime_env), `plugins` included."""

    address: str = ""
    threads: int = 0
    retries: int = 2
    accelerator_type: str = ""
    plugins: tuple[str, ...] = ()
    workers: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ray = import_ray()
        if not self.ray.is_initialized():
            self.ray.init(address=self.address or None, include_dashboard=False, log_to_driver=False)
        cluster.check_label(self.ray.nodes(), self.accelerator_type)
        self.env = cluster.runtime_env(self.plugins)
        lost = self.ray.exceptions
        self.lost = (lost.RayActorError, lost.WorkerCrashedError, lost.NodeDiedError)

    def device(self, name: str) -> torch.device:
        """The cluster's device: 'auto' is CUDA when the cluster has GPUs (this host may have none)."""
        if name not in ("auto", "cpu", "cuda"):
            return measure.resolve_device(name)  # raises, naming the valid devices
        has_gpu = cluster.capacity(self.ray.nodes(), torch.device("cuda"), 1, self.accelerator_type) >= 1
        if name == "cuda" and not has_gpu:
            raise ValueError(
                "device='cuda' was asked for but the Ray cluster has no GPU"
                + (f" on nodes labelled {self.accelerator_type!r}" if self.accelerator_type else "")
                + "; use 'cpu' or 'auto'"
            )
        return torch.device("cuda" if name == "cuda" or (name == "auto" and has_gpu) else "cpu")

    def prepare(self, device: torch.device, cells: int) -> None:
        """Start the workers for `cells` cells at once (they start in parallel, seconds each:
        a process, torch's import, the driver's code unpacked on their node)."""
        self._grow(device, self._size(device, cells))

    def environment(self, device: torch.device) -> dict[str, str | int]:
        """The driver's code version and a worker's machine: the driver may have no GPU (a
        laptop, a CPU head node), so it never asks its own torch about the device. A worker
        that does not run the driver's code is refused here, before any cell."""
        described = self._first_answer(device)
        mine = cluster.code_hash(self.plugins)
        if described.pop("code_hash") != mine:
            raise ValueError(f"a Ray worker on {described['host']} does not run the driver's code ({mine})")
        return {"git_commit": measure.git_commit(), **described}

    def map(
        self, fn: Callable[[T], R], items: Sequence[T], *, device: torch.device
    ) -> Iterator[tuple[T, R | BaseException, int]]:
        """(item, result, attempts) as cells finish. A worker takes cells once it has started
        (a replacement for a lost one may never fit on the cluster that is left)."""
        try:
            if not items:
                return
            starting = {w.describe.remote(): w for w in self._grow(device, self._size(device, len(items)))}
            shared = self.ray.put(fn)  # the settings travel once, not once per cell
            todo: deque[tuple[T, int]] = deque((item, 1) for item in items)
            idle: list[Any] = []
            running: dict[Any, tuple[T, int, Any]] = {}
            while todo or running:
                while todo and idle:  # each worker runs one cell at a time
                    worker, (item, attempt) = idle.pop(), todo.popleft()
                    running[worker.run.remote(shared, item)] = (item, attempt, worker)
                if not running and not starting:
                    raise RuntimeError(f"no Ray worker is left to run {len(todo)} cell(s)")
                done = self.ray.wait([*running, *starting], num_returns=1)[0][0]
                if done in starting:
                    self._started(done, starting, idle)
                    continue
                item, attempt, worker = running.pop(done)
                result = self._get(done)
                if isinstance(result, self.lost):
                    starting.update(self._replace(worker, device))
                    if attempt <= self.retries:  # on the next free worker, ahead of the rest
                        todo.appendleft((item, attempt + 1))
                        continue
                    result = WorkerLost(attempt, result)
                else:
                    idle.append(worker)
                yield item, result, attempt
        finally:  # done, Ctrl-C, or the caller stopped early: free the devices
            self.close()

    def _first_answer(self, device: torch.device) -> dict[str, Any]:
        """The description of the first worker that answers (one lost as it started, with its
        node, is passed over: map drops it)."""
        last: BaseException | None = None
        for worker in self._grow(device, 1):
            result = self._get(worker.describe.remote(cluster.worker_plugins(self.plugins)))
            if not isinstance(result, BaseException):
                return result
            last = result
        raise RuntimeError(f"no Ray worker started: {error_text(last)}" if last else "no Ray worker started")

    def close(self) -> None:
        """End every worker (their devices go back to the cluster)."""
        for worker in self.workers:
            self.ray.kill(worker)
        self.workers = []

    def _size(self, device: torch.device, cells: int) -> int:
        """Workers for `cells` cells: as many as the cluster holds, at most one per cell."""
        fits = cluster.capacity(self.ray.nodes(), device, self.threads, self.accelerator_type)
        return max(1, min(cells, fits))

    def _started(self, ref: Any, starting: dict[Any, Any], idle: list[Any]) -> None:
        """A worker answered (it takes cells), or died before it could (it is dropped)."""
        worker = starting.pop(ref)
        if isinstance(self._get(ref), self.lost):
            self.workers.remove(worker)
        else:
            idle.append(worker)

    def _grow(self, device: torch.device, n: int) -> list[Any]:
        """At least `n` workers for `device` (started here if needed); returns them all."""
        gpu = device.type == "cuda"
        slots = {"num_gpus": 1, "num_cpus": 1} if gpu else {"num_cpus": max(1, self.threads)}
        if self.accelerator_type:
            slots["accelerator_type"] = self.accelerator_type
        self.ray.cloudpickle.register_pickle_by_value(boot)  # it imports nothing of attnbench there
        actor = self.ray.remote(max_restarts=0, runtime_env=self.env, **slots)(boot.Boot)
        shipped = len(self.env["py_modules"])
        while len(self.workers) < n:
            self.workers.append(actor.remote(shipped, device.type, self.threads))
        return self.workers

    def _replace(self, dead: Any, device: torch.device) -> dict[Any, Any]:
        """A fresh worker in place of one whose process died, and the call that says it started."""
        self.workers.remove(dead)
        fresh = self._grow(device, len(self.workers) + 1)[-1]
        return {fresh.describe.remote(): fresh}

    def _get(self, ref: Any) -> Any:
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayError as err:  # the cell raised, or its worker died
            return err


def make(name: str, address: str = "", threads: int = 0, **ray: Any) -> LocalExecutor | RayExecutor:
    """The executor called `name` ('local' or 'ray'; `ray`: RayExecutor's retries,
    accelerator_type and plugins)."""
    if name == "local":
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(address, threads, **ray)
    raise ValueError(f"unknown executor {name!r}; valid executors: ['local', 'ray']")


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ValueError(RAY_HINT) from None
    return ray
