"""How accuracy rows are shown: the seed spread ("n=1" where one seed gives none) and the mark
of a variant that is not causal-safe on a causal task. Pure pandas, so the harness's terminal
summary (harness/accuracy/view.py) shows what the report's tables and figures show.
"""

from __future__ import annotations

import pandas as pd

# A variant that is not causal-safe (kdgqa, dgqa, pgqa read keys at later positions) on a task
# whose model attends causally: its tests re-run only what a causal model may see, but a leak
# may still shape its training, so its rows are marked wherever they are shown.
MARK = " †"
MARK_NOTE = "†: not causal-safe, on a causal task"


def leaky(df: pd.DataFrame) -> pd.Series:
    """Rows with causal True and causal_safe False (False where a CSV lacks the columns)."""
    if not {"causal", "causal_safe"} <= set(df.columns):
        return pd.Series(False, index=df.index)
    causal, safe = (df[c].map(_truth).astype(bool) for c in ("causal", "causal_safe"))
    return causal & ~safe


def _truth(value: object) -> bool:
    """CSV booleans: True/False, 'True'/'False', 1/0; blank is False."""
    return str(value).strip().lower() in ("true", "1", "1.0")


def spread(mean: float, std: float, seeds: int) -> str:
    """'0.912 ± 0.013 (n=3)'; one seed has no spread: '0.912 (n=1)'."""
    if pd.isna(mean):
        return ""
    return f"{mean:.3f} (n=1)" if seeds == 1 else f"{mean:.3f} ± {std:.3f} (n={seeds})"
