"""Checks its queries on the host in its forward (`bool(...)`), which the meta device cannot
answer, yet keeps `flops_on_meta=True`. Fails `flops` (the sweep could not count its FLOPs)."""

import attn_variants as av


@av.register("hostread", description="a host-side finiteness check", paper="https://example.org/hostread")
class HostRead(av.GroupedQueryAttention):
    def attend(self, q, k, v, *, n_visual, cache):
        if not bool(q.isfinite().all()):  # a host sync: the value is needed in Python
            raise ValueError("non-finite queries")
        return super().attend(q, k, v, n_visual=n_visual, cache=cache)
