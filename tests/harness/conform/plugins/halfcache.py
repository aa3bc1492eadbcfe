"""Plain GQA that declares half of the cache it really keeps (g*e per token, not K and V's
2*g*e). Fails `cache`."""

import attn_variants as av

av.register(
    "halfcache",
    description="GQA declaring g*e cached numbers per token",
    paper="https://example.org/halfcache",
    cache_per_token=lambda spec, options: spec.n_kv_heads * spec.head_dim,
)(av.GroupedQueryAttention)
