"""The results CSVs attnbench writes, as `Spec`s: sweep.csv, accuracy.csv, generate.csv.

The typed columns are those of the row dataclasses (harness/records.py's Row,
harness/accuracy/runner.py's AccuracyRow, harness/generate/cell.py's GenerateRow), written out
here so that reports/ reads the files without importing harness or torch;
tests/test_runfiles.py checks the lists against the dataclasses.
"""

from __future__ import annotations

from . import Spec

# harness/records.py's STATUSES (checked by the test beside the lists).
STATUSES = ("ok", "oom", "skipped_memory", "unsupported", "invalid", "error")

# The columns that name a sweep cell: one row per cell (`Cell.key()`, and where it ran, for a Ray
# run over mixed GPU models). Older files lack some: a missing column reads as ''.
SWEEP_KEY = (
    "variant", "options", "mode", "batch", "seq_len", "n_visual", "n_heads", "n_kv_heads", "head_dim",
    "dtype", "layout", "n_images", "compile", "lengths", "kv_layout", "page_size", "q_len", "device_name",
    "accelerator",
)  # fmt: skip
SWEEP = Spec(
    "sweep CSV",
    required=("variant", "mode", "seq_len", "status", "latency_ms_median"),
    integers=frozenset((
        "attempts", "batch", "bytes_moved", "decode_bytes", "dim", "flops", "flops_active", "flops_effective",
        "head_dim", "kv_bytes_allocated", "kv_bytes_needed", "kv_cache_bytes", "len_max", "len_min",
        "n_heads",
        "n_images", "n_kv_heads", "n_visual", "page_size", "peak_mem_bytes", "peak_mem_estimate_bytes",
        "q_len", "recompiles", "repeats", "resident_bytes", "seq_len", "threads", "warmup_calls",
    )),
    floats=frozenset((
        "active_head_frac", "bw_util", "cell_s", "compile_s", "flops_util", "kv_heads_equiv",
        "latency_ms_median", "latency_ms_p10", "latency_ms_p90", "len_mean", "padding_waste", "roof_s",
        "roof_util", "setup_s", "tflops", "timed_s", "tokens_per_s",
    )),
    samples=frozenset(("latency_ms_samples",)),
    choices={"status": STATUSES},
    key=SWEEP_KEY,
)  # fmt: skip
ACCURACY = Spec(
    "accuracy CSV",
    required=("task", "variant", "accuracy", "status"),
    integers=frozenset((
        "n_heads", "n_kv_heads", "dim", "layers", "seq_len", "n_visual", "seed", "steps", "kv_cache_bytes",
        "threads",
    )),
    floats=frozenset(("accuracy", "chance", "loss", "wall_s", "kv_heads_equiv")),
    choices={"status": STATUSES},
    key=("task", "variant", "options", "init", "n_heads", "n_kv_heads", "dim", "layers", "seed", "ablate"),
)  # fmt: skip
GENERATE = Spec(
    "generate CSV",
    required=("variant", "context", "status", "tpot_s"),
    integers=frozenset((
        "threads", "batch", "context", "new_tokens", "n_visual", "layers", "dim", "n_heads", "n_kv_heads",
        "head_dim", "vocab", "peak_mem_bytes", "cache_bytes", "kv_cache_bytes",
    )),
    floats=frozenset((
        "kv_heads_equiv", "ttft_s", "tpot_s", "tpot_mean_s", "tpot_p10_s", "tpot_p90_s", "tokens_per_s",
        "wall_s", "tpot_cpu_s", "attn_share", "attn_s", "share_step_s", "attn_step_ratio", "compile_s",
        "cell_s",
    )),
    samples=frozenset(("tpot_samples_ms",)),
    choices={"status": STATUSES},
    key=("variant", "options", "batch", "context", "new_tokens", "n_visual", "layers", "dim", "n_heads",
         "n_kv_heads", "head_dim", "dtype", "compile", "cache_layout"),
)  # fmt: skip
