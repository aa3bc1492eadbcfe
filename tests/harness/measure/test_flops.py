"""FLOPs on meta tensors, the peak estimate on fake ones: the real-tensor count, flat memory,
causal FLOPs by hand."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import attn_variants as av
from harness import measure
from harness.measure import flops, workload

CASES = [(name, mode) for name in av.names() for mode in av.info(name).modes]


def _build(name: str, mode: str, n: int, h: int = 4, g: int = 2, e: int = 16, **options):
    """build(device=cpu) -> the Workload of this cell on `device`."""
    info = av.info(name)
    spec = info.resolve(av.AttnSpec(dim=h * e, n_heads=h, n_kv_heads=g))
    m = round(0.25 * n) if info.multimodal else 0
    return lambda device="cpu": workload.build(
        name, spec, mode, batch=2, seq_len=n, n_visual=m, options=options, device=device
    )


def _make(build):
    return lambda device: build(device).step


@pytest.mark.parametrize(("name", "mode", "n"), [(*c, 17) for c in CASES] + [("gqa", "fwd_bwd", 64)])
def test_fake_count_equals_the_real_tensor_count(name, mode, n):
    """Every variant x mode, an odd and an even n: FlopCounterMode over meta tensors counts
    what it counted over real ones (measure.count_flops, the old method, math backend)."""
    build = _build(name, mode, n)
    # The first step of a fresh build on both sides, as the sweep counted it: a stateful decode
    # (dgqa updates its allocation every `window` steps) may count differently on later steps.
    count = flops.count(_make(build)) if mode != "decode" else flops.count_real(build().step)
    assert count.flops == measure.count_flops(build().step)


def test_memory_stays_flat_at_long_n():
    """n = 32768, h = 8: one fp32 score tensor would be 34 GB and the old count ran out of
    memory; counting FLOPs (meta) and estimating the peak (fake) keep the whole process under
    1.5 GiB (torch's import included)."""
    code = (
        "import resource, attn_variants as av\n"
        "from harness.measure import flops, workload\n"
        "spec = av.AttnSpec(dim=512, n_heads=8, n_kv_heads=2)\n"
        "make = lambda d: workload.build('gqa', spec, 'fwd_bwd', batch=1, seq_len=32768, device=d).step\n"
        "assert flops.count(make).flops > 8 * 32768**2 * 64 * 12\n"
        "assert flops.peak_estimate(make, 'cpu') < 2**30\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    max_rss_kib = int(out.stdout.split()[-1])
    assert max_rss_kib < 1.5 * 2**20, f"max RSS {max_rss_kib / 2**20:.2f} GiB"


def test_flops_effective_causal_gqa_by_hand():
    """gqa fwd, b=2 n=40 h=4 g=2 e=16: attention counted over n(n+1)/2 pairs, not n^2."""
    b, n, h, e = 2, 40, 4, 16
    fp = flops.count(_make(_build("gqa", "fwd", n)))
    full, causal = 4 * b * h * n * n * e, 4 * b * h * (n * (n + 1) // 2) * e
    assert fp.flops - fp.flops_effective == full - causal
    assert [c.pairs() for c in fp.attention] == [n * (n + 1) // 2]


def test_flops_effective_mmca_counts_its_blocks():
    """mmca fwd_bwd, m = 10 visual of n = 40: text->text causal (30*31/2 pairs), text->visual
    full (30*10), visual->visual 'self' makes no attention call; backward triples each."""
    b, n, m, h, e = 2, 40, 10, 4, 16
    fp = flops.count(_make(_build("mmca", "fwd_bwd", n)))
    t = n - m
    assert sorted(c.pairs() for c in fp.attention) == sorted([t * (t + 1) // 2, t * m])
    full = 3 * 4 * b * h * (t * t + t * m) * e
    effective = 3 * 4 * b * h * (t * (t + 1) // 2 + t * m) * e
    assert fp.flops - fp.flops_effective == full - effective


def test_decode_is_not_discounted():
    """One query at the end sees every key: effective = counted (meta and real counts)."""
    assert flops.count_real(_build("gqa", "decode", 40)().step).flops_effective > 0
    fp = flops.count(_make(_build("gqa", "decode", 40)))
    assert fp.flops == fp.flops_effective > 0


def test_pairs_bottom_right_when_the_cache_holds_more():
    """n = 3 queries at the end of s = 5 keys see 3, 4, 5 keys."""
    call = flops.AttentionCall(b=1, h=1, n=3, s=5, e=1, causal=True, backward=False)
    assert call.pairs() == 3 + 4 + 5


def test_bytes_moved_by_hand():
    spec = av.AttnSpec(dim=64, n_heads=4, n_kv_heads=2)  # e = 16
    q, kv = 2 * 4 * 10 * 16, 2 * 2 * 10 * 16
    assert flops.bytes_moved("fwd", 2, 10, spec, torch.float32) == 4 * (2 * q + 2 * kv)
    assert flops.bytes_moved("fwd_bwd", 2, 10, spec, torch.bfloat16) == 2 * (6 * q + 6 * kv)
    assert flops.bytes_moved("decode", 2, 10, spec, torch.float32) == 4 * (2 * 2 * 4 * 16 + 2 * kv)
    with pytest.raises(ValueError, match="valid modes"):
        flops.bytes_moved("prefill", 2, 10, spec, torch.float32)


def test_peak_estimate_is_close_to_the_measured_peak():
    """The fake pass's estimate (build + step) is at least the measured step peak (CPU profiler)
    and within a few times it at a small shape: the skip decision has the right scale."""
    build = _build("gqa", "fwd_bwd", 256, h=8, g=2, e=32)
    w = build()
    w.step()
    measured = measure.probe(w.step, torch.device("cpu"), w.reset).peak_mem_bytes
    estimate = flops.peak_estimate(_make(build), torch.device("cpu"))
    assert measured <= estimate <= 4 * measured, (measured, estimate)


def test_backends_restored_after_the_pass():
    before = dict(av.BACKENDS)
    flops.count(_make(_build("gqa", "fwd", 16)))
    flops.peak_estimate(_make(_build("gqa", "fwd", 16)), torch.device("cpu"))
    assert av.BACKENDS == before
