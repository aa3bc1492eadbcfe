"""attn_variants: interchangeable attention modules behind one contract.

Shape legend, used in every comment of this package and of harness/:
    b  batch
    n  sequence length (queries); s is the key length when a KV cache holds earlier tokens
    m  visual tokens, the leading part of a [visual; text] sequence
    d  model width
    h  query heads
    g  KV heads (groups)
    e  head dim, d // h

Every variant is built by `create(name, spec, **options)` and called as
`module(x: (b, n, d), *, n_visual=0, modality=None, cache=None) -> (b, n, d)`; `modality`
(b, n) gives each token's id, 0 text and k >= 1 image k (attn_variants/modality.py), and
`n_visual=m` is its prefix layout. Unimodal variants validate both and read one causal stream.
"""

from . import grouped as _grouped  # noqa: F401  (registers mha, mqa, gqa)
from .backends import BACKENDS, get_backend
from .cache import KVCache
from .gla import GroupedLatentAttention  # registers gla
from .grouped import GROUPINGS, GroupedQueryAttention, from_mha
from .gta import GroupedTiedAttention  # registers gta
from .keydriven import DynamicKeyDrivenGQA, KeyDrivenGQA  # registers kdgqa, dgqa
from .mla import MultiHeadLatentAttention  # registers mla
from .mmca import MultiModalCausalAttention, SimpleMMCA  # registers mmca, concat
from .moh import MixtureOfHeadsAttention  # registers moh
from .perturbed import PerturbedGQA  # registers pgqa
from .registry import MODES, VariantInfo, create, info, names, register
from .spec import AttnSpec

__all__ = [
    "BACKENDS",
    "GROUPINGS",
    "MODES",
    "AttnSpec",
    "DynamicKeyDrivenGQA",
    "GroupedLatentAttention",
    "GroupedQueryAttention",
    "GroupedTiedAttention",
    "KVCache",
    "KeyDrivenGQA",
    "MixtureOfHeadsAttention",
    "MultiHeadLatentAttention",
    "MultiModalCausalAttention",
    "PerturbedGQA",
    "SimpleMMCA",
    "VariantInfo",
    "create",
    "from_mha",
    "get_backend",
    "info",
    "names",
    "register",
]
