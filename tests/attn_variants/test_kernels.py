"""The kernel axis (backends.py, flex.py): flex, forced SDPA kernels and eager compute the same
attention for every registered variant; what a device cannot run is refused with a reason."""

import pytest
import torch
from torch.testing import assert_close

import attn_variants as av
from attn_variants import backends
from attn_variants.flex import MASKS
from harness import measure
from harness.measure import workload

CPU = torch.device("cpu")
CPU_BACKENDS = ["sdpa", "sdpa_flash", "sdpa_math", "eager", "flex"]  # what a CPU can run
TOL = {torch.float32: dict(atol=2e-5, rtol=1e-4), torch.float64: dict(atol=1e-10, rtol=1e-8)}


def twins(name, spec, names, dtype, **options):
    """One module per backend, all with the first one's weights (and state)."""
    if name == "pgqa":
        options.setdefault("seed", 3)  # the same noise for every backend: one generator stream each
    first = av.create(name, spec, backend=names[0], **options).to(dtype).eval()
    out = {names[0]: first}
    for backend in names[1:]:
        module = av.create(name, spec, backend=backend, **options).to(dtype).eval()
        module.load_state_dict(first.state_dict())
        out[backend] = module
    return out


def n_visual_for(name, n):
    return n // 4 + 1 if av.info(name).multimodal else 0


@pytest.mark.parametrize("name", av.names())
@pytest.mark.parametrize("n, dtype", [(37, torch.float32), (130, torch.float64)])  # odd; past a 128 block
def test_every_backend_matches_eager_forward(name, n, dtype):
    spec = av.AttnSpec(48, 6, 2)
    modules = twins(name, spec, CPU_BACKENDS, dtype)
    x = torch.randn(2, n, 48, dtype=dtype)
    m = n_visual_for(name, n)
    with torch.no_grad():  # flex on CPU is inference only
        out = {b: module(x, n_visual=m) for b, module in modules.items()}
    for backend in CPU_BACKENDS:
        assert_close(out[backend], out["eager"], **TOL[dtype], msg=f"{name} {backend} vs eager")


@pytest.mark.parametrize("visual_attention", ["self", "full"])
@pytest.mark.parametrize("m", [0, 1, 9, 40])  # none, one, some, all visual (n = 40)
def test_flex_mmca_block_masks_match_the_reference(visual_attention, m):
    spec = av.AttnSpec(32, 4, 2)
    module = av.create("mmca", spec, backend="flex", visual_attention=visual_attention).double().eval()
    x = torch.randn(2, 40, 32, dtype=torch.float64)
    with torch.no_grad():
        assert_close(module(x, n_visual=m), av.mmca.reference(module, x, m))


@pytest.mark.parametrize("name", av.names())
def test_every_backend_matches_eager_decode(name):
    spec = av.AttnSpec(32, 4, 2)
    modules = twins(name, spec, CPU_BACKENDS, torch.float32)
    x, steps = torch.randn(2, 19, 32), torch.randn(2, 3, 32)
    outs = {}
    with torch.no_grad():
        for backend, module in modules.items():
            cache = av.KVCache()
            module(x, n_visual=n_visual_for(name, 19), cache=cache)  # prefill
            outs[backend] = torch.cat([module(steps[:, i : i + 1], cache=cache) for i in range(3)], dim=1)
    for backend in CPU_BACKENDS:
        assert_close(outs[backend], outs["eager"], **TOL[torch.float32], msg=f"{name} {backend}")


def test_flex_is_causal_later_tokens_do_not_leak():
    module = av.create("gqa", av.AttnSpec(32, 4, 2), backend="flex").eval()
    x = torch.randn(1, 150, 32)
    y = x.clone()
    y[:, 100:] = torch.randn(1, 50, 32)  # change the future only
    with torch.no_grad():
        assert_close(module(x)[:, :100], module(y)[:, :100])
        assert not torch.allclose(module(x)[:, 100:], module(y)[:, 100:])


def test_block_masks_are_built_once_per_shape_and_timed():
    MASKS.clear()
    module = av.create("gqa", av.AttnSpec(32, 4, 2), backend="flex").eval()
    with torch.no_grad():
        module(torch.randn(1, 64, 32))
        built, seconds = len(MASKS), MASKS.seconds
        module(torch.randn(2, 64, 32))  # another batch, same (n, s): the same mask
        assert (len(MASKS), MASKS.seconds) == (built, seconds) and seconds > 0
        module(torch.randn(1, 65, 32))  # another length: one more mask
        assert len(MASKS) == built + 1


def test_flex_refuses_dropout_and_uneven_heads():
    q, k = torch.randn(1, 4, 8, 8), torch.randn(1, 2, 8, 8)
    with pytest.raises(ValueError, match="dropout_p=0.1: the flex backend has no attention dropout"):
        backends.get_backend("flex")(q, k, k, causal=True, dropout_p=0.1)
    with pytest.raises(ValueError, match="h=4 are not divisible by key/value heads g=3"):
        backends.get_backend("flex")(q, torch.randn(1, 3, 8, 8), torch.randn(1, 3, 8, 8), causal=True)


def test_unknown_backend_names_the_valid_ones():
    with pytest.raises(ValueError, match="unknown backend 'cuda_magic'.*'flex'.*'sdpa_math'"):
        av.create("gqa", av.AttnSpec(32, 4), backend="cuda_magic")


@pytest.mark.parametrize(
    "backend, mode, why",
    [
        ("sdpa_efficient", "fwd", "no CPU kernel for EFFICIENT_ATTENTION"),
        ("sdpa_cudnn", "decode", "no CPU kernel for CUDNN_ATTENTION"),
        ("flex", "fwd_bwd", "FlexAttention does not support backward on CPU"),
    ],
)
def test_what_a_cpu_cannot_run_is_unsupported_with_a_reason(backend, mode, why):
    assert why in backends.unsupported(backend, CPU, mode)
    with pytest.raises(workload.UnsupportedMode, match=why):
        workload.build("gqa", av.AttnSpec(32, 4, 2), mode, batch=1, seq_len=8, options={"backend": backend})


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("mode", ["fwd", "decode"])
def test_what_a_cpu_can_run_is_supported(backend, mode):
    assert backends.unsupported(backend, CPU, mode) == ""


@pytest.mark.parametrize(
    "backend, kernel",
    [("sdpa", "flash_cpu"), ("sdpa_flash", "flash_cpu"), ("sdpa_math", "math"), ("flex", "flex")],
)
def test_sdpa_backend_names_the_kernel_that_ran(backend, kernel):
    w = workload.build("gqa", av.AttnSpec(32, 4, 2), "fwd", batch=1, seq_len=16, options={"backend": backend})
    assert measure.probe(w.step, CPU).sdpa_backend == kernel


def test_forced_kernel_refusal_is_recognised():
    err = RuntimeError("No available kernel. Aborting execution.")
    assert backends.is_unavailable(err) and backends.is_unavailable(NotImplementedError("x"))
    assert not backends.is_unavailable(RuntimeError("other")) and not backends.is_unavailable(ValueError())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("backend", ["sdpa_flash", "sdpa_efficient", "sdpa_cudnn", "sdpa_math", "flex"])
def test_forced_kernels_on_cuda_match_eager_or_refuse_cleanly(backend):
    spec, dtype = av.AttnSpec(128, 4, 2), torch.bfloat16
    modules = twins("gqa", spec, ["eager", backend], dtype)
    x = torch.randn(2, 64, 128, dtype=dtype, device="cuda")
    with torch.no_grad():
        ref = modules["eager"].cuda()(x)
        try:
            out = modules[backend].cuda()(x)
        except RuntimeError as err:  # e.g. cuDNN missing on this GPU: must be the clean refusal
            assert backends.is_unavailable(err), err
            return
    assert_close(out, ref, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("visual_attention", ["self", "full"])
def test_flex_interleaved_mmca_matches_eager(visual_attention):
    """Interleaved images (modality ids): flex builds a block mask from the dense layout mask."""
    modules = twins(
        "mmca", av.AttnSpec(32, 4, 2), ["eager", "flex"], torch.float64, visual_attention=visual_attention
    )
    ids = workload.modality_ids(2, 40, 12, 3)  # (b, n): text, image 1, text, image 2, text, image 3, text
    x = torch.randn(2, 40, 32, dtype=torch.float64)
    with torch.no_grad():
        assert_close(modules["flex"](x, modality=ids), modules["eager"](x, modality=ids))
