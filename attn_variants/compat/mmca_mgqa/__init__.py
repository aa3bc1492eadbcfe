"""`mmca_mgqa`: the seed project's import path, kept so its README example runs unchanged.

Installed as a top-level package by pyproject.toml (`where` includes attn_variants/compat);
everything lives in `attn_variants.mmca`.
"""
