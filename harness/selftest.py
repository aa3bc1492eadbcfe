"""`attnbench selftest`: what to run first on a new machine, before trusting a sweep there.

1. Every variant x mode, fast path (its default `sdpa` backend) against its reference path (the
   same module with the `eager` backend: same weights, same inputs, written for clarity) on the
   device, in float32 and bfloat16 with per-dtype tolerances. fwd compares outputs, fwd_bwd the
   input gradient, decode one step's output.
2. Two questions about CUDA SDPA kernels that only a GPU answers (issue 20):
   - do flash and cuDNN accept kdgqa's decode query, expanded with stride 0 on the head axis?
   - does cuDNN accept the KV cache's live slices (views of a larger buffer)?
   A kernel refusing is an answer, not a failure; a kernel accepting and disagreeing with the
   math kernel is a failure. On CPU these are skipped.
3. A tiny sweep on the device (every cell ok or unsupported) and one check round.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import attn_variants as av

from .check import ratios as check
from .measure import workload
from .sweep import runner as sweep

# Tolerances of the fast path against the eager reference in the same dtype: float32 differs
# by summation order only; bfloat16 keeps 8 mantissa bits (2^-8 ~ 0.4% per rounding) and the
# two paths round the scores and the softmax at different points.
TOLERANCES = {"float32": {"atol": 1e-4, "rtol": 1e-4}, "bfloat16": {"atol": 5e-2, "rtol": 5e-2}}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class Outcome:
    """One line of the selftest table."""

    part: str  # 'variant', 'kernel probe', 'sweep', 'check'
    name: str
    status: str  # 'ok', 'FAIL', 'skipped', or a probe's answer ('accepted', 'rejected')
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.status == "FAIL"


def run(device: torch.device, out: Path) -> list[Outcome]:
    """Every part of the selftest on `device`; the sweep writes under `out`."""
    return [*variants(device), *kernel_probes(device), sweep_round(device, out), check_round(device)]


# --- 1. fast path vs reference ---------------------------------------------------------------


def variants(device: torch.device) -> Iterator[Outcome]:
    for name in av.names():
        for mode in av.info(name).modes:
            for dtype in TOLERANCES:
                yield compare_variant(name, mode, dtype, device)


def compare_variant(name: str, mode: str, dtype: str, device: torch.device, n: int = 37) -> Outcome:
    """The variant's default backend against backend='eager', same seed (weights and inputs).

    n = 37 is odd on purpose (no power-of-two tiling hides an edge case); m = 9 visual tokens."""
    label = f"{name} {mode} {dtype}"
    try:
        fast, ref = (_output(name, mode, dtype, device, n, backend) for backend in ("sdpa", "eager"))
        torch.testing.assert_close(fast, ref, **TOLERANCES[dtype])
    except AssertionError as err:
        return Outcome("variant", label, "FAIL", _first_line(err, "Greatest absolute"))
    except Exception as err:  # noqa: BLE001 (a crash is a failure of this line, the rest goes on)
        return Outcome("variant", label, "FAIL", f"{type(err).__name__}: {_first_line(err)}")
    err = (fast.double() - ref.double()).abs().max().item()
    return Outcome("variant", label, "ok", f"max |fast - eager| = {err:.2e}")


def _output(name: str, mode: str, dtype: str, device: torch.device, n: int, backend: str) -> torch.Tensor:
    info = av.info(name)
    spec = info.resolve(av.AttnSpec(dim=64, n_heads=4, n_kv_heads=2))
    w = workload.build(
        name, spec, mode, batch=2, seq_len=n, n_visual=9 if info.multimodal else 0,
        dtype=DTYPES[dtype], device=device, options={"backend": backend}, seed=0,
    )  # fmt: skip
    torch.manual_seed(1)  # variants that draw noise (pgqa) draw the same in both
    return w.step().detach().clone()


def _first_line(err: BaseException, containing: str = "") -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    chosen = [line for line in lines if containing and containing in line] or lines or [""]
    return chosen[0][:160]


# --- 2. kernel probes (issue 20, item 9) -------------------------------------------------------


def kernel_probes(device: torch.device) -> list[Outcome]:
    names = ("flash: kdgqa decode query, stride 0", "cudnn: kdgqa decode query, stride 0")
    names += ("cudnn: KV-cache slices (decode)",)
    if device.type != "cuda":
        return [Outcome("kernel probe", n, "skipped", "needs CUDA") for n in names]
    q0, k0, v0 = _stride0_query(device)
    qc, kc, vc = _cache_slices(device)
    return [
        _probe(names[0], SDPBackend.FLASH_ATTENTION, q0, k0, v0),
        _probe(names[1], SDPBackend.CUDNN_ATTENTION, q0, k0, v0),
        _probe(names[2], SDPBackend.CUDNN_ATTENTION, qc, kc, vc),
    ]


def _stride0_query(device: torch.device) -> tuple[torch.Tensor, ...]:
    """kdgqa's decode call (keydriven._attend_one_query): q (b, h, 1, e) -> (b, g, h, e) by
    expand, so the g axis has stride 0; k, v (b, g, s, e)."""
    b, h, g, s, e = 2, 32, 8, 1024, 128
    q = torch.randn(b, h, 1, e, device=device, dtype=torch.bfloat16)
    q_all = q.transpose(1, 2).expand(b, g, h, e)  # (b, g, h, e), stride 0 on g
    k, v = (torch.randn(b, g, s, e, device=device, dtype=torch.bfloat16) for _ in range(2))
    return q_all, k, v


def _cache_slices(device: torch.device) -> tuple[torch.Tensor, ...]:
    """One decode step's q (b, h, 1, e) over the KVCache's live k, v (b, h, s, e): narrow views
    of a buffer twice as long (the cache grows by doubling), so not contiguous."""
    b, h, s, e = 2, 32, 1024, 128
    cache = av.KVCache()
    with torch.no_grad():
        cache.update(*(torch.randn(b, h, s, e, device=device, dtype=torch.bfloat16) for _ in range(2)))
        k, v = cache.update(*(torch.randn(b, h, 1, e, device=device, dtype=torch.bfloat16) for _ in range(2)))
    q = torch.randn(b, h, 1, e, device=device, dtype=torch.bfloat16)
    return q, k, v


def _probe(name: str, backend: SDPBackend, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> Outcome:
    """Whether `backend` runs these exact tensors, and if so whether it agrees with math."""
    strides = f"q stride {tuple(q.stride())}, k stride {tuple(k.stride())}"
    with sdpa_kernel(SDPBackend.MATH):
        expected = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    try:
        with sdpa_kernel(backend):
            got = F.scaled_dot_product_attention(q, k, v)
        torch.cuda.synchronize(q.device)
    except RuntimeError as err:
        return Outcome("kernel probe", name, "rejected", f"{_first_line(err)} ({strides})")
    try:
        torch.testing.assert_close(got.float(), expected, **TOLERANCES["bfloat16"])
    except AssertionError as err:
        return Outcome("kernel probe", name, "FAIL", f"accepted but wrong: {_first_line(err, 'Greatest')}")
    return Outcome("kernel probe", name, "accepted", f"matches math ({strides})")


# --- 3. a tiny sweep and one check round ----------------------------------------------------------


def _dtype(device: torch.device) -> str:
    return "bfloat16" if device.type == "cuda" else "float32"


def sweep_round(device: torch.device, out: Path) -> Outcome:
    cfg = sweep.SweepConfig(
        seq_len=(64,), heads=(4,), kv_heads=(2,), batch=1, head_dim=32, repeats=3, warmup=1,
        dtype=_dtype(device), device=device.type, threads=1 if device.type == "cpu" else 0, out=str(out),
    )  # fmt: skip
    return _tally("sweep", "tiny sweep, every variant x mode", lambda: sweep.run(cfg).to_dict("records"))


def check_round(device: torch.device) -> Outcome:
    # Three rounds, the fewest whose exact Mann-Whitney p (0.05) can reach the alpha given here:
    # this run checks that the check measures on this device; it decides nothing.
    cfg = check.CheckConfig(
        seq_len=(64,), heads=(4,), kv_heads=(2,), head_dim=32, rounds=3, passes=1, warmup=1,
        alpha=0.2, dtype=_dtype(device), device=device.type, min_sample_s=0.0,
    )  # fmt: skip
    rows = [{"status": r.status, "error": r.error, "name": r.name} for r in check.measure_all(cfg)]
    return _tally("check", "one check round, every variant vs mha", lambda: rows)


def _tally(part: str, name: str, rows_of: Callable[[], list[dict]]) -> Outcome:
    try:
        rows = rows_of()
    except Exception as err:  # noqa: BLE001
        return Outcome(part, name, "FAIL", f"{type(err).__name__}: {_first_line(err)}")
    bad = [r for r in rows if r["status"] not in ("ok", "unsupported")]
    if bad:
        first = bad[0]
        return Outcome(part, name, "FAIL", f"{len(bad)} of {len(rows)} not ok; first: {first['error'][:120]}")
    return Outcome(part, name, "ok", f"{len(rows)} cells")


def report(outcomes: list[Outcome], out: Path, console: object) -> int:
    """Print the table, write <out>/selftest.csv; 1 if anything failed, else 0."""
    import pandas as pd
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="attnbench selftest")
    for column in ("part", "name", "status", "detail"):
        table.add_column(column, overflow="fold")
    for o in outcomes:
        style = "red" if o.failed else ""
        table.add_row(o.part, escape(o.name), o.status, escape(o.detail), style=style)
    console.print(table)  # type: ignore[attr-defined]
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([o.__dict__ for o in outcomes]).to_csv(out / "selftest.csv", index=False)
    failed = sum(o.failed for o in outcomes)
    summary = f"{len(outcomes) - failed} ok, skipped or answered; {failed} failed; {out / 'selftest.csv'}"
    console.print(summary)  # type: ignore[attr-defined]
    return 1 if failed else 0
