"""The decode path's layout choice, measured at the kernel (attn_variants/decode.py):

    python benchmarks/ratios_decode_layout.py [--s 16384] [--b 1] [--rounds 15] [--threads 1]
        [--device cpu|cuda] [--dtype float32|bfloat16|float16]

One decode step's attention, q (b, h, n, e) against a cache k/v (b, g, s, e) that is a view of
a buffer twice as long (as `KVCache` holds it), h=16, e=64, for g in {1, 4, 16} and n in {1, 4}:
"heads" (the backend's enable_gqa) against "rows" (each KV head's query heads as its rows),
through sdpa and through eager (matmul, softmax, matmul), interleaved in one process; `sum`
reads a buffer of the cache's bytes once, the memory roof. Ratios are per round, to `sum`.
On CUDA each sample is one synchronised call (compare.interleaved), which is what decides the
layout there (decode.choose_layout's CUDA choice is FlashAttention's own, not yet measured here).
"""

import argparse

import torch

from attn_variants import decode
from harness.measure import interleave as compare

H, E = 16, 64


def candidates(b: int, g: int, n: int, s: int, device: str, dtype: torch.dtype) -> dict[str, object]:
    gen = torch.Generator().manual_seed(0)
    kv = torch.randn(2, b, g, 2 * s, E, generator=gen).to(device, dtype)  # (2, b, g, 2s, e): capacity 2s
    k, v = kv[0, :, :, :s], kv[1, :, :, :s]  # (b, g, s, e), the live part
    q = torch.randn(b, n, H * E, generator=gen).to(device, dtype)  # (b, n, h*e), as the projection
    q = q.view(b, n, H, E).transpose(1, 2)  # (b, h, n, e)
    flat = torch.randn(2 * b * g * s * E, generator=gen).to(device, dtype)  # the cache's bytes
    fns = {"sum": flat.sum}
    for backend in ("sdpa", "eager"):
        for layout in ("heads", "rows"):
            fns[f"{backend}_{layout}"] = _step(q, k, v, backend, layout)
    return fns


def _step(q, k, v, backend: str, layout: str):
    def run() -> object:
        return decode.attend(q, k, v, backend=backend, causal=True, layout=layout)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--s", type=int, default=16384)
    parser.add_argument("--b", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    torch.set_num_threads(args.threads)
    for n in (1, 4):
        for g in (1, 4, 16):
            fns = candidates(args.b, g, n, args.s, args.device, dtype)
            samples = compare.interleaved(fns, args.device, rounds=args.rounds, warmup=2, min_sample_s=0.01)
            shape = f"b={args.b} h={H} g={g} n={n} s={args.s} e={E} {args.device} {args.dtype}"
            title = f"\n{shape}, {args.rounds} rounds, {args.threads} thread(s)"
            compare.print_table(samples, "sum", title)


if __name__ == "__main__":
    main()
