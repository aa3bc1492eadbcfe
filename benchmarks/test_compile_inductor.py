"""Inductor end to end (minutes on a 2-core CPU, so out of the default run):

    pytest benchmarks/test_compile_inductor.py

The default suite captures every variant with torch.compile's "eager" backend
(tests/harness/measure/test_compile.py); this runs the real code generation the sweep uses.
"""

import pytest
from torch.testing import assert_close

import attn_variants as av
from harness.measure import workload

SPEC = av.AttnSpec(32, 4, 2)


@pytest.mark.parametrize("mode", ["fwd", "fwd_bwd", "decode"])
def test_inductor_compiles_gqa_and_matches_eager(mode):
    w = workload.build("gqa", SPEC, mode, batch=2, seq_len=12, compile="default")
    assert_close(w.step(), w.uncompiled())
    assert w.graphs_since_build() == 0


@pytest.mark.parametrize("mode", ["fwd", "decode"])
def test_inductor_compiles_flex_and_matches_eager_sdpa(mode):
    """Inductor's CPU flex template (10-150 s to compile here), past one 128-token block."""
    w = workload.build(
        "gqa", SPEC, mode, batch=1, seq_len=130, options={"backend": "flex"}, compile="default"
    )
    ref = workload.build("gqa", SPEC, mode, batch=1, seq_len=130)
    assert_close(w.step(), ref.step(), atol=2e-5, rtol=1e-4)
