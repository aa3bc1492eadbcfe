"""`attnbench conform`: does a variant honour the contract? No reference implementation needed.

    from harness.conform import ConformConfig, check
    verdicts = check("gqa", {}, ConformConfig())       # one Verdict per property

The properties (DESIGN.md, "the variant contract"): shape/dtype/finite output, batch
independence, no causal leak where declared causal-safe, every declared mode runs, prefill +
decode = one forward, declared cache bytes = real `nbytes`, `KVCache.fill` = a forward's cache,
gradients reach every parameter the forward reads, FLOPs countable on the meta device, and the
multimodal rules. float64 on the CPU by default, at tiny odd shapes: a few seconds a variant.
"""

from .checks import NAMES, check
from .probe import TOLERANCE, ConformConfig, Probe
from .properties import Verdict

__all__ = ["NAMES", "TOLERANCE", "ConformConfig", "Probe", "Verdict", "check"]
