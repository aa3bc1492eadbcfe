"""Which designs are dominated, claiming nothing a spread does not support.

An axis compares two designs only when their p10-p90 intervals do not overlap: A is better on
it when A's whole interval lies on the better side of B's. Overlapping intervals are a tie, and a
tie is no claim either way. A dominates B when it is better on at least one axis and worse on
none; a design missing a value on any axis is never claimed to dominate or be dominated (nothing
is imputed). Exact quantities (the registry's cache bytes) have a zero-width interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import pandas as pd

Sense = Literal["min", "max"]


@dataclass(frozen=True)
class Objective:
    """One axis: the column of its value, of its p10 and p90 (None: exact), and its sense."""

    name: str
    value: str
    sense: Sense
    lo: str | None = None
    hi: str | None = None


def interval(row: pd.Series, obj: Objective) -> tuple[float, float] | None:
    """(p10, p90) of `obj` in `row`; None where the value is missing."""
    value = row.get(obj.value)
    if value is None or pd.isna(value):
        return None
    if obj.lo is None or obj.hi is None:
        return float(value), float(value)
    lo, hi = row.get(obj.lo), row.get(obj.hi)
    return (-math.inf if pd.isna(lo) else float(lo), math.inf if pd.isna(hi) else float(hi))


def axis(a: pd.Series, b: pd.Series, obj: Objective) -> int | None:
    """+1: a is better than b on this axis, -1: worse, 0: the intervals overlap; None: missing."""
    ia, ib = interval(a, obj), interval(b, obj)
    if ia is None or ib is None:
        return None
    sign = 1 if obj.sense == "min" else -1
    if ia[1] < ib[0]:
        return sign
    if ia[0] > ib[1]:
        return -sign
    return 0


def dominates(a: pd.Series, b: pd.Series, objectives: list[Objective]) -> bool:
    """a is better on some axis, worse on none, and every axis is known for both."""
    verdicts = [axis(a, b, obj) for obj in objectives]
    return None not in verdicts and -1 not in verdicts and 1 in verdicts


def front(rows: pd.DataFrame, objectives: list[Objective], label: str = "design") -> pd.DataFrame:
    """`rows` with `pareto` (bool) and `dominated_by` ('; '-joined labels, '' on the front)."""
    records = [r for _, r in rows.iterrows()]
    dominated_by = [
        "; ".join(str(a[label]) for a in records if a is not b and dominates(a, b, objectives))
        for b in records
    ]
    return rows.assign(pareto=[not d for d in dominated_by], dominated_by=dominated_by)
