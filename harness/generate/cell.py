"""One generate cell (a variant at one context length) measured into a row.

The order inside a cell, and why:
1. `warmup` untimed generations (at least one when compiling: the first decode step compiles,
   and its wall time is `compile_s`);
2. one generation under the profiler (`measure.probe`): the peak memory above the weights
   (CUDA allocator statistics, or the CPU profiler's allocation events) and the SDPA kernel;
   untimed, so it is also a warm-up;
3. the timed generation: `ttft_s`, every decode step, `wall_s`;
4. attention's share of a decode step at the last context (harness/generate/share.py).
A cell that fails is a row with its status and error; the run goes on.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from typing import Any

import torch

import attn_variants as av

from .. import measure
from ..measure import timing
from ..records import STATUSES, error_text
from ..variant_choice import VariantChoice
from . import loop, share
from .decoder import Decoder, DecoderConfig, cache_nbytes


@dataclass(frozen=True)
class GenerateRow:
    """One variant x context: a whole greedy generation in the decoder. Times in seconds."""

    run_id: str
    timestamp: str
    git_commit: str
    device: str
    device_name: str
    host: str
    torch_version: str
    threads: int
    dtype: str
    variant: str
    options: str  # 'key=value;...' given for the variant ('' = registry defaults)
    batch: int  # b
    context: int  # P, the prompt's tokens
    new_tokens: int  # T, generated tokens (the first from the prefill)
    n_visual: int  # leading image tokens of the prompt (multimodal variants), else 0
    layers: int  # L
    dim: int  # d
    n_heads: int  # h
    n_kv_heads: int  # g after the variant's preset
    head_dim: int  # e
    kv_heads_equiv: float  # the g of a GQA with this cache per token (mla: its latent and rope key)
    vocab: int
    compile: str  # torch.compile mode of the decode step outside attention; off
    cache_layout: str  # padded, or paged:<page size> (attn_variants/paged.py)
    status: str
    error: str = ""
    ttft_s: float | None = None  # prefill of P tokens and the first token's argmax
    tpot_s: float | None = None  # median decode step (time per output token), T - 1 steps
    tpot_mean_s: float | None = None
    tpot_p10_s: float | None = None
    tpot_p90_s: float | None = None
    tokens_per_s: float | None = None  # b * (T - 1) / the decode steps' seconds: decode alone
    wall_s: float | None = None  # the whole generation on one clock (prefill + every step)
    tpot_samples_ms: str = ""  # every decode step, ';'-separated
    # Median decode step in this thread's CPU time: on the CPU with one thread, the step's work
    # without the time a busy machine preempted it (empty on CUDA and with more threads).
    tpot_cpu_s: float | None = None
    timing: str = ""  # timing.method_name: cpu_perf_counter or cuda_event (one step per sample)
    peak_mem_bytes: int | None = None  # measured peak above the weights over one whole generation
    cache_bytes: int | None = (
        None  # every layer's KVCache.nbytes at the end (P + T - 1 tokens; paged: whole pages)
    )
    kv_cache_bytes: int | None = None  # the registry's analytic cache at P + T - 1 tokens, all layers
    attn_share: float | None = None  # attention's share of a decode step at context P + T - 1
    attn_share_method: str = ""  # how the attention calls were timed (share.method)
    attn_s: float | None = None  # median seconds in the attention calls of one decode step
    share_step_s: float | None = None  # median plain decode step at that context (share pass)
    attn_step_ratio: float | None = None  # bracketed / plain step: what the timers cost (1 = nothing)
    sdpa_backend: str = ""  # SDPA kernels seen in the profiled generation
    compile_s: float | None = None  # the first compiled decode step (never in the timings)
    cell_s: float | None = None  # the whole cell: build, warm-up, probe, timed generation, share

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status={self.status!r} is not one of {list(STATUSES)}")


def refusal(name: str) -> str:
    """Why a registered variant cannot generate here ('' if it can)."""
    entry = av.info(name)
    if "decode" not in entry.modes:
        return f"variant {name!r} has no decode mode (modes: {list(entry.modes)}); it cannot generate"
    if not entry.causal_safe:
        return (
            f"variant {name!r} is not causal-safe: its output at a token depends on later tokens, so a "
            "generation with a KV cache is not the model's own forward (attnbench list)"
        )
    return ""


def measure_cell(
    choice: VariantChoice, context: int, cfg: Any, device: torch.device, env: dict, run_id: str
) -> GenerateRow:
    """One row: the cell measured, or why it was not (status and error)."""
    start = time.perf_counter()
    dcfg = decoder_config(choice, cfg)
    n_visual = round(cfg.visual_frac * context) if av.info(choice.name).multimodal else 0
    ident = identity(choice, context, n_visual, dcfg, cfg, env, run_id)
    why = refusal(choice.name)
    if why:
        return GenerateRow(**ident, status="unsupported", error=why)
    try:
        fields, status, error = _measure(dcfg, cfg, context, n_visual, device), "ok", ""
    except Exception as err:  # noqa: BLE001 (any failure is recorded, the run goes on)
        status = "oom" if measure.is_oom(err) else "invalid" if isinstance(err, ValueError) else "error"
        fields, error = {}, error_text(err)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return GenerateRow(
        **ident, status=status, error=error, cell_s=round(time.perf_counter() - start, 6), **fields
    )


def decoder_config(choice: VariantChoice, cfg: Any) -> DecoderConfig:
    """The decoder of this variant at the run's sizes."""
    return DecoderConfig(
        choice.name, vocab=cfg.vocab, dim=cfg.dim, n_heads=cfg.heads, n_kv_heads=cfg.kv_heads,
        layers=cfg.layers, mlp_hidden=cfg.mlp_hidden, options=dict(choice.options),
    )  # fmt: skip


def identity(choice, context, n_visual, dcfg: DecoderConfig, cfg, env, run_id) -> dict[str, Any]:
    """The fields every row carries, measured or not."""
    spec = dcfg.spec()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return dict(
        run_id=run_id, timestamp=stamp, **env, dtype=cfg.dtype, variant=choice.name,
        options=choice.options_text, batch=cfg.batch, context=context, new_tokens=cfg.new_tokens,
        n_visual=n_visual, layers=cfg.layers, dim=cfg.dim, n_heads=spec.n_heads,
        n_kv_heads=spec.n_kv_heads, head_dim=spec.head_dim, vocab=cfg.vocab, compile=cfg.compile,
        cache_layout=cfg.cache_layout + (f":{cfg.page_size}" if cfg.cache_layout == "paged" else ""),
        kv_heads_equiv=av.info(choice.name).kv_heads_equiv(spec, dict(choice.options)),
    )  # fmt: skip


def build(dcfg: DecoderConfig, cfg: Any, context: int, device: torch.device) -> tuple[Decoder, torch.Tensor]:
    """The decoder (seeded random weights, eval mode) and a seeded prompt (b, P) on `device`."""
    torch.manual_seed(cfg.seed)
    with device:  # weights initialised where they live: d = 2048 on the CPU takes seconds
        model = Decoder(dcfg).to(dtype=measure.DTYPES[cfg.dtype]).eval()
    gen = torch.Generator().manual_seed(cfg.seed + context)
    prompt = torch.randint(0, cfg.vocab, (cfg.batch, context), generator=gen).to(device)  # (b, P)
    return model, prompt


def _measure(dcfg: DecoderConfig, cfg: Any, context: int, n_visual: int, device: torch.device) -> dict:
    model, prompt = build(dcfg, cfg, context, device)
    step = loop.decode_step(model) if cfg.compile == "off" else loop.compiled_step(model, cfg.compile)
    layout = dict(layout=cfg.cache_layout, page_size=cfg.page_size)
    run = lambda: loop.generate(model, prompt, cfg.new_tokens, n_visual=n_visual, step=step, **layout)  # noqa: E731
    compiling = cfg.compile != "off"
    # The first compiled decode step compiles: compile_s. Dynamo reuses the graphs of an earlier cell
    # of the run (same shapes outside attention), so there it is one step's time.
    compile_s = (run().step_s or [None])[0] if compiling else None
    for _ in range(cfg.warmup - compiling):
        run()
    probed = measure.probe(run, device)
    gen = run()
    fields = _timings(gen, cfg.batch, device)
    last = gen.tokens[:, -1:]  # (b, 1), the token the generation would feed next
    caches = gen.caches
    shared = share.measure(model, caches, step, last, cfg.share_steps)
    return dict(
        **fields,
        peak_mem_bytes=probed.peak_mem_bytes,
        cache_bytes=cache_nbytes(caches),
        kv_cache_bytes=model.kv_cache_bytes(caches[0].length, cfg.batch),
        attn_share=shared.attn_share, attn_share_method=shared.method, attn_s=shared.attn_s,
        share_step_s=shared.step_s, attn_step_ratio=shared.attn_step_ratio,
        sdpa_backend=probed.sdpa_backend, compile_s=compile_s,
    )  # fmt: skip


def _timings(gen: loop.Generation, batch: int, device: torch.device) -> dict[str, Any]:
    steps, one_thread = gen.step_s, device.type == "cpu" and torch.get_num_threads() == 1
    spread = timing.summarize(steps) if steps else None
    decode_s = sum(steps)
    return dict(
        ttft_s=gen.ttft_s,
        tpot_s=spread.median if spread else None,
        tpot_mean_s=decode_s / len(steps) if steps else None,
        tpot_p10_s=spread.p10 if spread else None,
        tpot_p90_s=spread.p90 if spread else None,
        tokens_per_s=batch * len(steps) / decode_s if steps else None,
        wall_s=gen.wall_s,
        tpot_samples_ms=";".join(f"{s * 1e3:.6g}" for s in steps),
        tpot_cpu_s=timing.summarize(gen.step_cpu_s).median if one_thread and steps else None,
        timing=timing.method_name(device, l2_flush=False, cuda_graph=False),
    )
