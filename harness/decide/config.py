"""The `[decide]` settings of `attnbench decide` (bench.toml's table; every field is also a CLI flag)."""

from __future__ import annotations

from dataclasses import dataclass

OBJECTIVES = ("cache", "decode", "prefill", "accuracy")


@dataclass(frozen=True)
class DecideConfig:
    """The `[decide]` table of bench.toml."""

    variants: tuple[str, ...] = ("all",)  # which designs of the runs to keep ('all': every one)
    tp: tuple[int, ...] = (1, 2, 8)  # tensor-parallel degrees: one kv_bytes_per_token_tp{N} column each
    memory_gb: float = 80.0  # cache memory per device, GB (1e9 bytes)
    context: int = 8192  # tokens per request, for requests_fit_tp{N}
    layers: int = 1  # attention layers holding a cache (the runs measure one)
    objectives: tuple[str, ...] = OBJECTIVES  # what the Pareto front is taken over
    profile: str = "decide"  # the profile of the sweep and accuracy run when no run folder is given
    out: str = ""  # the decision's folder; '' : <first run>/decide
    # Outside variants imported first (attn_variants/plugins.py), and passed on to the sweep and
    # accuracy run of `profile`; bench.toml's top-level `plugins` and each --plugin add up here.
    plugins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.tp or any(not isinstance(t, int) or isinstance(t, bool) or t <= 0 for t in self.tp):
            raise ValueError(f"tp={list(self.tp)} must be positive integers, e.g. 1,2,8")
        if self.memory_gb <= 0 or self.context <= 0 or self.layers <= 0:
            raise ValueError(
                f"memory_gb={self.memory_gb}, context={self.context}, layers={self.layers} must be > 0"
            )
        bad = sorted(set(self.objectives) - set(OBJECTIVES))
        if bad or not self.objectives:
            raise ValueError(f"objectives {bad or '[]'} are not among {list(OBJECTIVES)}")
