"""Declares itself multimodal (image tokens isolated from text, the default) but is one causal
stream: in an interleaved layout an image token reads the text before it. Fails `multimodal`."""

import attn_variants as av

av.register(
    "seestext",
    description="causal GQA under a multimodal name",
    paper="https://example.org/seestext",
    multimodal=True,
)(av.GroupedQueryAttention)
