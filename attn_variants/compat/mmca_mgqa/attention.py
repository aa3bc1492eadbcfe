"""`from mmca_mgqa.attention import SimpleMMCA`, the seed README's import, kept working."""

from attn_variants.mmca import SimpleMMCA

__all__ = ["SimpleMMCA"]
