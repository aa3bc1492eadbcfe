"""Kernels and compilation side by side (interleaved, one process, one thread):

    python benchmarks/ratios_backends.py [gqa|mmca] [fwd|decode]

One variant (gqa, or mmca with m = n/4 visual tokens) at b=1, n=512, d=512, h=8, g=2 through
sdpa, eager and flex, each uncompiled and under torch.compile (mode "default", fullgraph),
timed round by round against uncompiled sdpa. Compile times (first compiled call) and flex's
block-mask build times are printed apart: they are never in the latency samples. Each
compiled build resets dynamo (workload.build), so a step compiled earlier recompiles once, in
the untimed warm-up (from Inductor's caches), before the timed rounds.
"""

import sys
import time

import torch

import attn_variants as av
from attn_variants.flex import MASKS
from harness.measure import interleave as compare
from harness.measure import workload

B, N, D, H, G = 1, 512, 512, 8, 2


def main(variant: str = "gqa", mode: str = "fwd", rounds: int = 20) -> None:
    torch.set_num_threads(1)  # a shared machine: one thread per process times steadily
    spec, m = av.AttnSpec(D, H, G), N // 4 if av.info(variant).multimodal else 0
    fns, setup = {}, {}
    for backend in ("sdpa", "eager", "flex"):
        for compile in ("off", "default"):
            MASKS.clear()  # each build times its own block masks
            start = time.perf_counter()
            w = workload.build(
                variant,
                spec,
                mode,
                batch=B,
                seq_len=N,
                n_visual=m,
                options={"backend": backend},
                compile=compile,
            )
            name = f"{backend}/{compile}"
            fns[name] = w.step
            setup[name] = (w.compile_s, w.setup_s, time.perf_counter() - start)
            print(f"built {name}: compile_s={w.compile_s} setup_s={w.setup_s:.4f}", flush=True)
    samples = compare.interleaved(fns, rounds=rounds, warmup=2)
    title = f"{variant} {mode}, b={B} n={N} m={m} d={D} h={H} g={G}, {rounds} rounds, 1 thread"
    compare.print_table(samples, "sdpa/off", title)
    for name, (compile_s, setup_s, build_s) in setup.items():
        comp = "-" if compile_s is None else f"{compile_s:.1f} s"
        print(f"{name:14s} compile_s {comp:>8s}  setup_s {setup_s:.4f} s  build {build_s:.1f} s")


if __name__ == "__main__":
    main(*sys.argv[1:3])
