"""Calls its kernel on the cache's whole padded frame: in a ragged batch a shorter request
attends to the padding after its own tokens. Fails `ragged`."""

import attn_variants as av


@av.register("unragged", description="ignores per-request lengths", paper="https://example.org/unragged")
class Unragged(av.GroupedQueryAttention):
    def attend(self, q, k, v, *, n_visual, cache):
        return self.backend(q, k, v, causal=True, dropout_p=self.dropout_p)
