"""pytest-benchmark: forward and fwd_bwd of the GQA family at a fixed small shape.

Not part of the default run: `pytest tests/bench --benchmark-only`.
"""

import pytest
import torch

import attn_variants as av
from harness import workload


@pytest.mark.parametrize("mode", ["fwd", "fwd_bwd"])
@pytest.mark.parametrize("variant", ["mha", "mqa", "gqa"])
def test_grouped(benchmark, variant, mode):
    torch.set_num_threads(2)
    w = workload.build(variant, av.AttnSpec(256, 8, 2), mode, batch=2, seq_len=256)
    benchmark(w.step)
