"""Caches every token but attends only to the current call's keys: a decode step sees itself
alone. Fails `decode` (a forward is unaffected)."""

import attn_variants as av


@av.register("forgetful", description="decode ignores the cache", paper="https://example.org/forgetful")
class Forgetful(av.GroupedQueryAttention):
    def attend(self, q, k, v, *, n_visual, cache):
        n = q.shape[2]  # this call's tokens; k and v also hold the cached ones
        return super().attend(q, k[:, :, -n:], v[:, :, -n:], n_visual=n_visual, cache=cache)
