"""torch.compile as an axis: every registered variant compiles with fullgraph=True in every mode
it supports, compile time is kept out of the latency, recompiles are counted.

The registry-wide capture uses torch.compile's "eager" backend: dynamo traces the whole
forward with fullgraph=True (a graph break fails, which is what this test guards) and runs
the captured graph without code generation, ~0.3 s a case on one core, where Inductor's C++
code generation takes 10-90 s a case on this 2-core machine. Training mode goes through
AOTAutograd ("aot_eager") for the variants that mutate state or draw noise inside the graph
(dgqa's buffers, pgqa's noise). Inductor itself, with sdpa and with flex, is checked in
benchmarks/test_compile_inductor.py (minutes on this machine, out of the default run).
"""

import time

import pytest
import torch
from torch.testing import assert_close

import attn_variants as av
from harness import measure
from harness.measure import workload
from harness.sweep import cell as sweep_cell
from harness.sweep import runner as sweep
from harness.sweep.runner import grid
from harness.variant_choice import VariantChoice

SPEC = av.AttnSpec(32, 4, 2)
STATEFUL = {"dgqa", "pgqa"}  # consecutive calls differ (diff-kind state, noise): no equality check


def cases():
    for name in av.names():
        for mode in av.info(name).modes:
            yield name, mode, {}
            if name == "pgqa":
                yield name, mode, {"seed": 3}  # a seeded pgqa once failed to trace its generator


@pytest.mark.parametrize("name, mode, options", list(cases()))
def test_every_variant_compiles_fullgraph(name, mode, options):
    nv = 3 if av.info(name).multimodal else 0
    w = workload.build(
        name,
        SPEC,
        mode,
        batch=2,
        seq_len=12,
        n_visual=nv,
        options=options,
        compile="default",
        compiler="eager",
    )
    out = w.step()  # the second compiled call: no recompile
    assert w.compile_s > 0 and w.graphs_since_build() == 0
    assert torch.isfinite(out).all()
    if name not in STATEFUL:
        assert_close(out, w.uncompiled(), msg=f"{name} {mode}: compiled output differs from eager")


@pytest.mark.parametrize("name", ["dgqa", "pgqa"])
def test_training_state_and_noise_pass_aot_autograd(name):
    options = {"kind": "ema", "window": 2} if name == "dgqa" else {"seed": 1}
    w = workload.build(
        name, SPEC, "fwd_bwd", batch=2, seq_len=12, options=options, compile="default", compiler="aot_eager"
    )
    grad = w.step()
    assert torch.isfinite(grad).all() and w.graphs_since_build() == 0
    if name == "dgqa":  # the buffer updates happen inside the graph: 3 training steps so far
        assert int(w.module.steps) == 3  # eager warm call, first compiled call, this one


def test_dgqa_buffers_update_the_same_compiled_and_eager():
    eager = av.create("dgqa", SPEC, kind="ema").train()
    twin = av.create("dgqa", SPEC, kind="ema").train()
    twin.load_state_dict(eager.state_dict())
    compiled = torch.compile(twin, fullgraph=True, backend="aot_eager")
    for _ in range(3):
        x = torch.randn(2, 12, 32)
        assert_close(compiled(x), eager(x))
    for buffer in ("norm_cache", "allocation", "steps"):
        assert_close(getattr(twin, buffer), getattr(eager, buffer))


def test_seeded_pgqa_is_reproducible_under_compile_and_its_noise_is_uniform():
    def run():
        torch.manual_seed(0)  # the same weights
        module = av.create("pgqa", SPEC, seed=7).eval()
        fn = torch.compile(module, fullgraph=True, backend="eager")
        x = torch.ones(1, 12, 32)
        with torch.no_grad():
            return fn(x), fn(x)

    (a1, a2), (b1, b2) = run(), run()
    assert_close(a1, b1)  # same seed, same draws
    assert_close(a2, b2)
    assert not torch.allclose(a1, a2)  # each call draws fresh noise
    u = av.perturbed.counter_uniform((4, 100_000), 7, torch.tensor(0), torch.float64)
    assert 0 <= u.min() and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.005 and abs(u.std() - 12**-0.5) < 0.005  # uniform [0, 1)
    assert abs(torch.corrcoef(torch.stack([u[0, :-1], u[0, 1:]]))[0, 1]) < 0.02  # neighbours uncorrelated


def slow_compiler(gm, example_inputs):
    """A torch.compile backend that takes 0.4 s to "compile", then runs the graph as is."""
    time.sleep(0.4)
    return gm.forward


def test_compile_time_is_kept_out_of_the_latency_samples(tmp_path, monkeypatch):
    build = workload.build
    monkeypatch.setattr(workload, "build", lambda *a, **k: build(*a, **{**k, "compiler": slow_compiler}))
    cfg = sweep.SweepConfig(
        variants=("gqa",), reference="none", seq_len=(16,), heads=(4,), kv_heads=(2,), modes=("fwd",),
        batch=1, head_dim=8, repeats=5, warmup=1, threads=1, device="cpu", compile=("off", "default"),
        out=str(tmp_path),
    )  # fmt: skip
    df = sweep.run(cfg)
    on, off = (df[df["compile"] == c].iloc[0] for c in ("default", "off"))
    assert on["status"] == "ok" and on["compile_s"] >= 0.4 and on["recompiles"] == 0
    samples = [float(s) for s in on["latency_ms_samples"].split(";")]
    assert len(samples) == 5 and max(samples) < 400  # no sample holds the 0.4 s compile
    assert off["compile"] == "off" and pd_missing(off["compile_s"]) and pd_missing(off["recompiles"])
    assert on["setup_s"] == 0 and off["setup_s"] == 0  # no block masks outside flex


def pd_missing(value) -> bool:
    return value != value or value in ("", None)  # NaN from the CSV


class Recompiling(av.GroupedQueryAttention):
    """Guards on a Python int that changes every call: dynamo recompiles each time."""

    calls = 0

    def forward(self, x, *, n_visual=0, cache=None):
        type(self).calls += 1
        return super().forward(x, n_visual=n_visual, cache=cache) * type(self).calls


@pytest.fixture
def recompiling(temp_variant):
    return temp_variant(Recompiling, modes=("fwd",))


def test_a_cell_that_recompiles_during_timing_says_so(recompiling, monkeypatch):
    build = workload.build
    monkeypatch.setattr(workload, "build", lambda *a, **k: build(*a, **{**k, "compiler": "eager"}))
    cfg = sweep.SweepConfig(variants=(recompiling,), reference="none", seq_len=(8,), heads=(4,),
                            kv_heads=(2,), modes=("fwd",), batch=1, head_dim=8, repeats=3, warmup=0,
                            threads=1, device="cpu", compile=("default",))  # fmt: skip
    cell = grid(cfg)[0][0]
    env = measure.environment(torch.device("cpu"))
    row = sweep_cell.measure_cell(cell, cfg, torch.device("cpu"), torch.float32, env, "test")
    assert row.status == "ok" and row.recompiles >= 3
    assert f"recompiled {row.recompiles} time(s) during timing" in row.error


def test_bad_compile_mode_names_the_choices():
    with pytest.raises(
        ValueError, match=r"compile='fast' is not one of \['off', 'default', 'max-autotune'\]"
    ):
        workload.build("gqa", SPEC, "fwd", batch=1, seq_len=4, compile="fast")


def test_grid_crosses_backends_and_compile_modes_and_keeps_the_reference_plain():
    cfg = sweep.SweepConfig(variants=("gqa", "mmca:backend=eager"), seq_len=(8,), heads=(4,), kv_heads=(2,),
                            modes=("fwd",), backend=("sdpa", "flex"), compile=("off", "default"))  # fmt: skip
    cells = grid(cfg)[0]
    got = {(c.choice.name, c.backend, c.compile) for c in cells}
    assert got == {
        ("mha", "sdpa", "off"),  # the reference: once, plain
        *{("gqa", b, c) for b in ("sdpa", "flex") for c in ("off", "default")},
        *{("mmca", "eager", c) for c in ("off", "default")},  # its own backend option wins
    }
    assert VariantChoice("gqa", (("backend", "flex"),)) in {c.choice for c in cells}
    with pytest.raises(ValueError, match="unknown backend 'fast'"):
        sweep.SweepConfig(backend=("fast",))


def test_sweep_rows_for_the_kernel_axis(tmp_path):
    """Each backend a row: flex with its mask build time and the FLOPs of the same math, the
    kernels a CPU lacks (and flex training on CPU) as unsupported rows saying why."""
    cfg = sweep.SweepConfig(
        variants=("gqa",), reference="none", seq_len=(16,), heads=(4,), kv_heads=(2,),
        modes=("fwd", "fwd_bwd"), batch=1, head_dim=8, repeats=2, warmup=0, threads=1, device="cpu",
        out=str(tmp_path),
        backend=("sdpa", "sdpa_math", "sdpa_efficient", "sdpa_cudnn", "flex"),
    )  # fmt: skip
    df = sweep.run(cfg)
    row = {(r.backend, r.mode): r for r in df.itertuples()}
    assert row["flex", "fwd"].status == "ok" and row["flex", "fwd"].sdpa_backend == "flex"
    assert row["flex", "fwd"].setup_s > 0 and row["sdpa", "fwd"].setup_s == 0
    assert row["flex", "fwd"].flops == row["sdpa", "fwd"].flops > 0
    assert (
        row["sdpa_math", "fwd_bwd"].sdpa_backend == "math" and row["sdpa", "fwd"].sdpa_backend == "flash_cpu"
    )
    for key, why in [
        (("sdpa_efficient", "fwd"), "no CPU kernel for EFFICIENT_ATTENTION"),
        (("sdpa_cudnn", "fwd_bwd"), "no CPU kernel for CUDNN_ATTENTION"),
        (("flex", "fwd_bwd"), "FlexAttention does not support backward on CPU"),
    ]:
        assert row[key].status == "unsupported" and why in row[key].error
    assert set(df["compile"]) == {"off"} and df["compile_s"].isna().all()
