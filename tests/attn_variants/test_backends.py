"""The sdpa backend's K/V expansion where no fused kernel takes GQA (CUDA float32)."""

import pytest
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile
from torch.testing import assert_close

from attn_variants import backends

from ..conftest import CUDA

SHAPES = [  # (b, h, g, n, s, e): s > n is a KV cache; odd sizes included
    (2, 8, 2, 16, 16, 8),
    (3, 6, 3, 7, 7, 5),
    (1, 12, 1, 1, 33, 4),
    (2, 4, 2, 5, 9, 16),
]


@pytest.mark.parametrize(
    "device, dtype, expected",
    [
        ("cuda", torch.float32, True),  # memory-efficient takes fp32 but has no GQA: math
        ("cuda", torch.bfloat16, False),  # flash and cuDNN take GQA in bf16/fp16
        ("cuda", torch.float16, False),
        ("cpu", torch.float32, False),  # CPU flash takes fp32 with enable_gqa
        ("cpu", torch.bfloat16, False),
    ],
)
def test_no_fused_gqa_is_cuda_float32_only(device, dtype, expected):
    assert backends.no_fused_gqa(device, dtype) is expected


def record_sdpa(monkeypatch):
    """Wrap F.scaled_dot_product_attention; the list collects (k heads, enable_gqa) per call."""
    calls, real = [], F.scaled_dot_product_attention

    def recording(q, k, v, **kwargs):
        calls.append((k.shape[1], kwargs["enable_gqa"]))
        return real(q, k, v, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", recording)
    return calls


@pytest.mark.parametrize("b, h, g, n, s, e", SHAPES)
@pytest.mark.parametrize("causal", [True, False])
def test_expanded_kv_matches_eager_in_float64(monkeypatch, b, h, g, n, s, e, causal):
    """Forced on CPU (as on CUDA float32): K/V reach SDPA with h heads, no enable_gqa, same result."""
    monkeypatch.setattr(backends, "no_fused_gqa", lambda device, dtype: True)
    calls = record_sdpa(monkeypatch)
    q = torch.randn(b, h, n, e, dtype=torch.float64)
    k, v = torch.randn(2, b, g, s, e, dtype=torch.float64)
    out = backends.sdpa(q, k, v, causal=causal)
    assert calls == [(h, False)]
    assert_close(out, backends.eager(q, k, v, causal=causal))


def test_cpu_float32_keeps_enable_gqa(monkeypatch):
    calls = record_sdpa(monkeypatch)
    q, k = torch.randn(1, 8, 4, 8), torch.randn(1, 2, 4, 8)
    backends.sdpa(q, k, k, causal=True)
    assert calls == [(2, True)]  # K/V not repeated: the CPU flash kernel takes GQA


@CUDA
def test_cuda_float32_gqa_runs_a_fused_kernel_not_math():
    q = torch.randn(1, 8, 256, 64, device="cuda")
    k, v = torch.randn(2, 1, 2, 256, 64, device="cuda")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        out = backends.sdpa(q, k, v, causal=True)
        torch.cuda.synchronize()
    names = {e.name for e in prof.events()}
    assert "aten::_scaled_dot_product_attention_math" not in names, sorted(n for n in names if "scaled" in n)
    assert_close(out, backends.eager(q, k, v, causal=True), atol=1e-4, rtol=1e-4)
