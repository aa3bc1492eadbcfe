"""Declared causal-safe, but its prefill attends to every key: token t reads tokens after t.
Fails `causal` (and `decode`, since a decode step cannot read the future)."""

import attn_variants as av


@av.register("leaky", description="GQA without the causal mask", paper="https://example.org/leaky")
class Leaky(av.GroupedQueryAttention):
    def attend(self, q, k, v, *, n_visual, cache):
        return self.backend(q, k, v, causal=False, dropout_p=self.dropout_p)
