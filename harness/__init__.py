"""harness: runs attention variants and measures them (sweep, accuracy, check, CLI).

Dependencies flow one way: harness -> attn_variants. Shape legend: see attn_variants.
"""

from importlib import metadata

try:  # one source of truth: pyproject.toml's version, as installed
    __version__ = metadata.version("attnbench")
except metadata.PackageNotFoundError:  # run from a checkout that was never installed
    __version__ = "0+unknown"
