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
    """Without recorded calls: the spec's widths; weights and x in/out are in the scope too."""
    spec = av.AttnSpec(dim=64, n_heads=4, n_kv_heads=2)  # e = 16
    q, kv, x = 2 * 4 * 10 * 16, 2 * 2 * 10 * 16, 2 * 10 * 64
    assert flops.bytes_moved("fwd", 2, 10, spec, torch.float32) == 4 * (2 * x + 2 * q + 2 * kv)
    assert flops.bytes_moved("fwd", 2, 10, spec, torch.float32, weight_bytes=100) == 100 + 4 * (
        2 * x + 2 * q + 2 * kv
    )
    assert flops.bytes_moved("fwd_bwd", 2, 10, spec, torch.bfloat16) == 3 * 2 * (2 * x + 2 * q + 2 * kv)
    with pytest.raises(ValueError, match="decode: roof.decode_bytes"):
        flops.bytes_moved("decode", 2, 10, spec, torch.float32)


def test_mla_bytes_moved_uses_its_own_widths():
    """mla's q and k are nope + rope wide and its values v_head_dim (padded to q's width for one
    SDPA call): the recorded calls carry those widths, not the spec's e."""
    build = _build("mla", "fwd", 17)
    count = flops.count(_make(build))
    (call,) = count.attention
    w = build()
    qk = w.module.dims.qk_nope_head_dim + w.module.dims.qk_rope_head_dim
    assert call.e == qk and call.e != w.spec.head_dim and call.g == call.h
    moved = flops.bytes_moved("fwd", 2, 17, w.spec, torch.float32, calls=count.attention)
    assert moved == 4 * (2 * 2 * 17 * w.spec.dim + 2 * 2 * call.h * 17 * (qk + call.ev))


def test_sweep_bytes_moved_share_the_scope_of_flops_effective(tmp_path):
    """fwd: weights + x in/out + attention tensors; decode: bytes_moved == decode_bytes (the cache
    the variant holds: mla's latent, not MHA's K/V), so bw_util and roof_s read the same bytes."""
    from harness.measure import roof
    from harness.sweep import runner

    cfg = runner.SweepConfig(
        variants=("mla", "gqa"), seq_len=(16,), heads=(4,), kv_heads=(2,), modes=("fwd", "decode"), batch=1,
        head_dim=8, repeats=2, warmup=0, threads=1, device="cpu", out=str(tmp_path), reference="none",
    )  # fmt: skip
    df = runner.run(cfg).set_index(["variant", "mode"])
    for variant in ("mla", "gqa"):
        dec = df.loc[(variant, "decode")]
        assert dec["bytes_moved"] == dec["decode_bytes"]
        spec = av.info(variant).resolve(av.AttnSpec(32, 4, 2))
        module = av.create(variant, spec)
        assert dec["bytes_moved"] == dec["kv_cache_bytes"] + roof.weight_bytes(module) + 2 * 32 * 4
        fwd = df.loc[(variant, "fwd")]
        assert fwd["bytes_moved"] > roof.weight_bytes(module) + 2 * 16 * 32 * 4
    mla_cache = df.loc[("mla", "decode"), "kv_cache_bytes"]
    assert mla_cache == 16 * (4 * 8 + 4) * 4  # b*n*(kv_lora + rope)*itemsize, not 2*b*h*n*e


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


def _hand_pairs(ids: torch.Tensor) -> int:
    """Pairs interleaved MMCA ('self') must compute, from the modality ids (b, n) by hand: its
    own-group call (text: text keys j <= i; image: itself) and its text -> image call (image
    keys j <= i; a text row with none yet is given every key, then zeroed)."""
    total = 0
    for row in ids.tolist():
        n = len(row)
        for i, kind in enumerate(row):
            if kind:
                total += 1 + n  # itself; in the cross call an image row is given every key
                continue
            total += sum(1 for j in range(i + 1) if row[j] == 0)
            images = sum(1 for j in range(i + 1) if row[j] != 0)
            total += images or n
    return total


def test_interleaved_mmca_flops_effective_from_its_masks():
    """The masked calls ran on meta with no mask values; the count takes their density from the
    masks the real step builds: the pairs counted by hand from the modality ids, not n * n."""
    n, m, b, h, e = 24, 8, 2, 4, 16
    spec = av.AttnSpec(dim=h * e, n_heads=h, n_kv_heads=2)
    kw = dict(batch=b, seq_len=n, n_visual=m, layout="interleaved", images=2)

    def make(device):
        return workload.build("mmca", spec, "fwd", device=device, **kw).step

    counted = flops.count(make)
    assert all(c.masked and c.mask_pairs is None for c in counted.attention)
    assert counted.flops_effective == counted.flops  # before: every pair of a masked call counted
    dense = flops.with_mask_density(counted, make, torch.device("cpu"))
    ids = workload.modality_ids(b, n, m, 2)
    spared = 4 * h * e * (len(counted.attention) * b * n * n - _hand_pairs(ids))
    assert dense.flops - dense.flops_effective == spared > 0


def test_moh_flops_active_is_taken_from_flops_effective(tmp_path):
    """The active heads' share of the causal count: below flops_effective, never above it."""
    from harness.sweep import runner

    cfg = runner.SweepConfig(
        variants=("moh",), seq_len=(16,), heads=(4,), kv_heads=(4,), modes=("fwd",), batch=1, head_dim=8,
        repeats=2, warmup=0, threads=1, device="cpu", out=str(tmp_path), reference="none",
    )  # fmt: skip
    row = runner.run(cfg).iloc[0]
    w = workload.build("moh", av.AttnSpec(32, 4, 4), "fwd", batch=1, seq_len=16)
    _, attention = measure.count_flops_detail(w.step)  # the full-count attention core
    spared = row["flops"] - row["flops_effective"]
    assert row["flops_active"] == round(row["flops_effective"] - 0.25 * (attention - spared))
    assert row["flops_active"] < row["flops_effective"]
