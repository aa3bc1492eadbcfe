"""What the sweep measures besides latency: peak memory, FLOPs, the SDPA backend, the machine.

Every figure here is measured in an untimed pass, never computed from a formula:
- memory: on CUDA, peak allocated above the baseline (`reset_peak_memory_stats`,
  `max_memory_allocated`); on CPU, the peak of the running sum of torch.profiler's allocation
  events over one call;
- the SDPA backend: the kernel's op name in the same profiled call;
- FLOPs: `torch.utils.flop_counter.FlopCounterMode` over one call under the math SDPA backend,
  because on CPU it has no formula for the fused flash kernel and would count 0 for it. Like
  every FlopCounterMode count, causal attention is counted as if full (all n*s scores).
"""

from __future__ import annotations

import contextlib
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}

# aten op name -> the SDPA backend it means (torch/nn/attention; `sdpa_backend` column).
SDPA_OPS = {
    "aten::_scaled_dot_product_flash_attention_for_cpu": "flash_cpu",
    "aten::_scaled_dot_product_flash_attention": "flash",
    "aten::_scaled_dot_product_efficient_attention": "efficient",
    "aten::_scaled_dot_product_cudnn_attention": "cudnn",
    "aten::_scaled_dot_product_fused_attention_overrideable": "overrideable",
    "aten::_scaled_dot_product_attention_math": "math",
    "FlexAttentionAutogradOp": "flex",  # eager flex_attention (the compiled one is inside the graph)
}


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when there is one, else CPU; 'cuda' without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {name!r}; valid devices: ['auto', 'cpu', 'cuda']")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was asked for but torch sees no CUDA device; use 'cpu' or 'auto'")
    return torch.device(name)


def environment(device: torch.device) -> dict[str, str | int]:
    """The machine and software a row was measured on (constant over a run)."""
    return {"git_commit": git_commit(), **host_environment(device)}


def host_environment(device: torch.device) -> dict[str, str | int]:
    """The part of `environment` that belongs to the host running the cell (a Ray worker's own)."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return {
        "device": device.type,
        "device_name": name,
        "host": socket.gethostname(),
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def cpu_name() -> str:
    """The CPU model ('AMD EPYC 9654 96-Core Processor') from /proc/cpuinfo on Linux, else what
    `platform` knows; platform.processor() alone says only 'x86_64' on Linux."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str:
    """`git describe --always --dirty` of this checkout, or 'unknown' outside git."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


@dataclass(frozen=True)
class Probe:
    """What one profiled, untimed call showed."""

    peak_mem_bytes: int  # peak allocated above the level at the call's start
    sdpa_backend: str  # e.g. 'flash_cpu', 'flash', 'math'; 'a+b' if several; 'none' if no SDPA op ran


def probe(step: Callable[[], object], device: torch.device, reset: Callable[[], None] | None = None) -> Probe:
    """Run `step` once under the profiler: its peak memory and the SDPA kernels it called.

    `reset` (Workload.reset) runs first, outside the measurement: in fwd_bwd it drops the last
    call's gradients, so on both devices the peak counts the gradients the call allocates (on
    CUDA the baseline used to hold the old ones, which the call then freed: issue 20)."""
    if reset is not None:
        reset()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=device.type == "cpu")
    with _quiet_stderr(), prof:  # the step already ran unprofiled, with its warnings shown
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) - base
    else:
        peak = _peak_of_allocations(prof)
    # the raw kineto events: prof.events() builds a FunctionEvent tree in Python, 1-8 ms a call
    names = (e.name() for e in prof.profiler.kineto_results.events())
    return Probe(peak_mem_bytes=peak, sdpa_backend=sdpa_backend(names))


def warm_up_tools(device: torch.device) -> float:
    """Pay the measurement tools' one-off cost now; return its seconds. The first FlopCounterMode
    pass over meta tensors and the first profiled call import torch._dynamo (0.8 s on the 2-core
    VM): a cost of the process, which a sweep pays before its clock starts (as it calibrates), not
    in its first cell's FLOP pass, where the harness-overhead figure would count it per cell."""
    start = time.perf_counter()
    meta = torch.empty(2, 2, device="meta")
    with FlopCounterMode(display=False):
        torch.nn.functional.linear(meta, meta)
    probe(lambda: torch.ones(2, device=device) + 1, device)
    return time.perf_counter() - start


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null: libkineto writes two log lines per profiled call
    from C++ (KINETO_LOG_LEVEL does not silence them in torch 2.13), one per sweep cell."""
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def _peak_of_allocations(prof: profile) -> int:
    """Peak of the running sum of the profiler's CPU allocation (+) and free (-) events."""
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    running = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        running += event.nbytes()
        peak = max(peak, running)
    return peak


def sdpa_backend(op_names: Iterable[str]) -> str:
    """The SDPA backends named by these op names, joined with '+'; 'none' if there were none."""
    found = sorted({SDPA_OPS[name] for name in op_names if name in SDPA_OPS})
    return "+".join(found) if found else "none"


def count_flops(step: Callable[[], object]) -> int:
    """FLOPs of one call of `step`, counted under the math SDPA backend (see module doc)."""
    return count_flops_detail(step)[0]


# The attention core under the math backend: q k^T and p v are batched matmuls (bmm); the
# projections are mm/addmm. Fused SDPA ops, where counted, are attention too.
ATTENTION_OPS = ("bmm", "baddbmm", "_scaled_dot_product")


def count_flops_detail(step: Callable[[], object]) -> tuple[int, int]:
    """(all FLOPs, attention-core FLOPs) of one call of `step`, counted as in `count_flops`."""
    counter = FlopCounterMode(display=False)
    with sdpa_kernel(SDPBackend.MATH), counter:
        step()
    per_op = counter.get_flop_counts().get("Global", {})
    attention = sum(n for op, n in per_op.items() if str(op).split(".")[-1].startswith(ATTENTION_OPS))
    return counter.get_total_flops(), attention


def active_heads(module: torch.nn.Module, flops: int, attention_flops: int) -> dict[str, float | None]:
    """`active_head_frac` (the share of non-zero head gates in the module's last call, MoH) and
    `flops_active`: `flops` with the attention core counted for the active heads only, what a
    kernel that skipped gated-off heads would do. Both None for variants without head gates."""
    frac = getattr(module, "active_head_frac", None)
    if frac is None:
        return dict(active_head_frac=None, flops_active=None)
    frac = float(frac)  # read after an untimed call, outside any timed region
    return dict(active_head_frac=frac, flops_active=round(flops - (1.0 - frac) * attention_flops))


# Allocation failures that are not torch.OutOfMemoryError: the CPU allocator's message, and
# cuBLAS/cuDNN failing to get workspace ("CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate").
OOM_MESSAGES = (
    "out of memory",
    "can't allocate memory",
    "cublas_status_alloc_failed",
    "cudnn_status_alloc_failed",
    "cudnn_status_not_enough_workspace",
    "cusolver_status_alloc_failed",
)


def is_oom(err: BaseException) -> bool:
    """CUDA's OutOfMemoryError, the CPU allocator failing, or a cuBLAS/cuDNN allocation failure."""
    if isinstance(err, torch.OutOfMemoryError):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and any(m in text for m in OOM_MESSAGES)


class MemorySkip(Exception):
    """A cell whose estimated peak does not fit the memory it may use (status skipped_memory)."""

    def __init__(self, message: str, estimate: int) -> None:
        super().__init__(message)
        self.estimate = estimate


def memory_limit(device: torch.device, limit_mb: float = 0.0) -> int | None:
    """Bytes a cell may use: `limit_mb` when > 0; on CUDA otherwise what the allocator can still
    get, the smaller of the driver's free memory plus this process's cached blocks and the
    per-process fraction's cap; None (no check) on CPU without a limit."""
    if limit_mb > 0:
        return int(limit_mb * 2**20)
    if device.type != "cuda":
        return None
    free, total = torch.cuda.mem_get_info(device)
    allocated = torch.cuda.memory_allocated(device)
    cap = int(torch.cuda.get_per_process_memory_fraction(device) * total) - allocated
    return min(free + torch.cuda.memory_reserved(device) - allocated, cap)


def check_fits(estimate: int, limit: int | None) -> None:
    """Raise MemorySkip naming both figures when `estimate` exceeds `limit`."""
    if limit is not None and estimate > limit:
        raise MemorySkip(
            f"estimated peak {estimate / 2**30:.2f} GiB (fake-tensor pass) exceeds the "
            f"{limit / 2**30:.2f} GiB this cell may use",
            estimate,
        )
