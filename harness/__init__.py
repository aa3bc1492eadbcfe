"""harness: runs attention variants and measures them (sweep, accuracy, check, CLI).

Dependencies flow one way: harness -> attn_variants. Shape legend: see attn_variants.
"""
