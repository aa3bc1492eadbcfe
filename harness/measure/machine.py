"""The machine model a timing figure belongs to: figures are only ever compared within one model.

A ratio variant / mha is not a machine-independent number: another CPU runs other SDPA and BLAS
kernels (oneDNN picks AVX-512 or AMX code where the CPU has it), so the same code gives other
ratios there. The model is therefore the CPU's name, its vendor family/model numbers (a VM
may show only 'AMD EPYC' for several generations) and the instruction-set extensions the
kernels dispatch on; on a GPU, the GPU's name.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable

import torch

# The extensions torch's CPU kernels (ATen's dispatch, oneDNN, the BLAS) choose code paths by.
ISA_FLAGS = (
    "avx", "avx2", "fma", "avx_vnni", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
    "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve", "sve2",
)  # fmt: skip


def model(device: torch.device) -> str:
    """'cpu AMD EPYC (AuthenticAMD 25/1; avx avx2 fma)' or 'cuda NVIDIA H100 80GB HBM3'."""
    if device.type == "cuda":
        return f"cuda {torch.cuda.get_device_name(device)}"
    return cpu_model(read_cpuinfo())


def read_cpuinfo(path: str = "/proc/cpuinfo") -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ({} where there is none: macOS, Windows)."""
    fields: dict[str, str] = {}
    try:
        with open(path) as f:
            for line in f:
                if not line.strip():
                    break  # the first processor's block ends at the first blank line
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_model(info: dict[str, str]) -> str:
    """The model string of a CPU from its cpuinfo fields; without them, what platform and torch
    know (the processor name and the vector capability torch dispatches to)."""
    name = info.get("model name") or platform.processor() or platform.machine()
    ids = " ".join(info.get(k, "") for k in ("vendor_id", "CPU implementer")).strip()
    numbers = "/".join(info[k] for k in ("cpu family", "model", "CPU part") if info.get(k))
    flags = isa(info.get("flags", info.get("Features", "")).split())
    if not info:
        flags = torch.backends.cpu.get_cpu_capability().lower()
    where = "; ".join(part for part in (f"{ids} {numbers}".strip(), flags) if part)
    return f"cpu {name} ({where})" if where else f"cpu {name}"


def isa(flags: Iterable[str]) -> str:
    """The ISA_FLAGS among `flags`, in ISA_FLAGS order, space-separated."""
    have = set(flags)
    return " ".join(f for f in ISA_FLAGS if f in have)


def of(env: dict) -> str:
    """The model of the device a run's environment (`measure.environment`) names."""
    if env["device"] == "cpu":
        return cpu_model(read_cpuinfo())
    return f"{env['device']} {env['device_name']}"
