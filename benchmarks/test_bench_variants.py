"""pytest-benchmark: every registered variant's fwd and fwd_bwd at one fixed small shape.

Not in the default run (pyproject's addopts ignores benchmarks):

    pytest benchmarks --benchmark-only                      # time them
    pytest benchmarks --benchmark-only --benchmark-save=main   # keep a run (.benchmarks/)
    pytest benchmarks --benchmark-only --benchmark-compare=0001 --benchmark-compare-fail=median:15%

Absolute times, one process after another: good for a look on a quiet machine; the CI gate
on a shared one is `attnbench check` (ratios interleaved with mha). Parametrised from the
registry, so a newly registered variant is benchmarked with no change here. The step is
harness/measure/workload.py's, the same one the sweep and the check time.
"""

import pytest
import torch

import attn_variants as av
from harness.measure import workload

B, N, H, G, E = 2, 256, 8, 2, 32  # b, n, h, g (g < h: grouped variants run grouped), e
VISUAL_FRAC = 0.25  # multimodal variants: the first quarter of the tokens are visual (as the sweep)


@pytest.fixture(autouse=True)
def one_thread():
    """One thread, as the check: on a shared machine more threads measure the neighbours."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize("mode", ["fwd", "fwd_bwd"])
@pytest.mark.parametrize("variant", av.names())
def test_variant(benchmark, variant, mode):
    entry = av.info(variant)
    if mode not in entry.modes:
        pytest.skip(f"{variant} does not support {mode} (registry entry: {list(entry.modes)})")
    spec = entry.resolve(av.AttnSpec(H * E, H, G))
    n_visual = round(VISUAL_FRAC * N) if entry.multimodal else 0
    w = workload.build(variant, spec, mode, batch=B, seq_len=N, n_visual=n_visual)
    benchmark.extra_info.update(n_kv_heads=spec.n_kv_heads, seq_len=N, n_visual=n_visual)
    benchmark(w.step)
