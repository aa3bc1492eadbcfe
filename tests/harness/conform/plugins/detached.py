"""Detaches its keys: k_proj never learns. Fails `grad`."""

import attn_variants as av


@av.register("detached", description="keys cut from the graph", paper="https://example.org/detached")
class Detached(av.GroupedQueryAttention):
    def attend(self, q, k, v, *, n_visual, cache):
        return super().attend(q, k.detach(), v, n_visual=n_visual, cache=cache)
