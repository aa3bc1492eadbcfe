"""Adds the batch mean of its input: one example's output moves with the others'. Fails `batch`."""

import attn_variants as av


@av.register("coupled", description="GQA plus the batch mean", paper="https://example.org/coupled")
class Coupled(av.GroupedQueryAttention):
    def forward(self, x, **kwargs):
        return super().forward(x, **kwargs) + x.mean(0, keepdim=True)  # (1, n, d) over the batch
