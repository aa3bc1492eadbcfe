"""Per-request context lengths of a decode cell: `--lengths` and `[sweep] lengths`.

A served batch holds requests of different lengths. A decode cell of b requests draws its b
cache lengths from one distribution, with the sweep's seed, so every variant of a sweep
decodes the very same batch:

- `fixed`: every request at the cell's seq_len (the unragged decode of every other row);
- `uniform:LO-HI`: integers uniform in [LO, HI];
- `zipf:A:MAX`: P(l) proportional to l^-A on 1..MAX (a Zipf law truncated at MAX);
- `lognormal:MU:SIGMA:MAX`: round(exp(N(MU, SIGMA^2))), clipped to [1, MAX];
- `file:PATH`: one length per line; the cell takes the first b, repeating the file from its
  top when it holds fewer.

Every bad value is a ValueError naming it and the valid forms, raised when the config is
built, before any cell runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import runfiles as files

FORMS = ("fixed", "uniform:LO-HI", "zipf:A:MAX", "lognormal:MU:SIGMA:MAX", "file:PATH")


@dataclass(frozen=True)
class Lengths:
    """A parsed `--lengths` value; `text` is what the rows' `lengths` column says."""

    kind: str  # fixed, uniform, zipf, lognormal, file
    text: str
    params: tuple[float, ...] = ()
    from_file: tuple[int, ...] = ()

    @property
    def fixed(self) -> bool:
        return self.kind == "fixed"

    @property
    def max(self) -> int | None:
        """The longest length it can draw (None: fixed, the cell's seq_len)."""
        if self.kind == "fixed":
            return None
        if self.kind == "file":
            return max(self.from_file)
        return int(self.params[-1])

    def draw(self, batch: int, seq_len: int, seed: int) -> list[int]:
        """b lengths, each >= 1, the same for the same (batch, seed)."""
        if self.kind == "fixed":
            return [seq_len] * batch
        if self.kind == "file":
            return [self.from_file[i % len(self.from_file)] for i in range(batch)]
        rng = np.random.default_rng(seed)
        if self.kind == "uniform":
            lo, hi = map(int, self.params)
            return rng.integers(lo, hi, endpoint=True, size=batch).tolist()
        if self.kind == "zipf":  # scipy's truncated Zipf: P(l) ~ l^-a on 1..MAX, any MAX
            from scipy import stats  # here: scipy.stats takes a third of a second to import

            a, top = self.params
            return stats.zipfian(a, int(top)).rvs(size=batch, random_state=rng).astype(int).tolist()
        mu, sigma, top = self.params
        return np.clip(np.rint(rng.lognormal(mu, sigma, size=batch)), 1, top).astype(int).tolist()


def parse(text: str) -> Lengths:
    """`--lengths` text -> Lengths; ValueError naming the value and the valid forms."""
    kind, _, rest = text.partition(":")
    parsers = {"fixed": _fixed, "uniform": _uniform, "zipf": _zipf, "lognormal": _lognormal, "file": _file}
    if kind not in parsers:
        raise ValueError(f"lengths={text!r}: unknown distribution {kind!r}; valid forms: {list(FORMS)}")
    return parsers[kind](text, rest)


def _fixed(text: str, rest: str) -> Lengths:
    if rest:
        raise ValueError(f"lengths={text!r}: 'fixed' takes no parameters (it uses --seq-len)")
    return Lengths("fixed", "fixed")


def _numbers(text: str, rest: str, names: tuple[str, ...], sep: str = ":") -> list[float]:
    parts = rest.split(sep)
    form = next(f for f in FORMS if f.startswith(text.partition(":")[0]))
    if len(parts) != len(names):
        raise ValueError(f"lengths={text!r}: expected {form}")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"lengths={text!r}: {', '.join(names)} must be numbers ({form})") from None
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"lengths={text!r}: {', '.join(names)} must be finite")
    return values


def _positive_int(text: str, name: str, value: float) -> int:
    if value != int(value) or value <= 0:
        raise ValueError(f"lengths={text!r}: {name}={value:g} must be a positive integer (a length >= 1)")
    return int(value)


def _uniform(text: str, rest: str) -> Lengths:
    lo, hi = _numbers(text, rest, ("LO", "HI"), sep="-")
    lo_i, hi_i = _positive_int(text, "LO", lo), _positive_int(text, "HI", hi)
    if lo_i > hi_i:
        raise ValueError(f"lengths={text!r}: LO={lo_i} is above HI={hi_i}")
    return Lengths("uniform", text, (lo_i, hi_i))


def _zipf(text: str, rest: str) -> Lengths:
    a, top = _numbers(text, rest, ("A", "MAX"))
    if a <= 0:
        raise ValueError(f"lengths={text!r}: A={a:g} must be > 0")
    return Lengths("zipf", text, (a, _positive_int(text, "MAX", top)))


def _lognormal(text: str, rest: str) -> Lengths:
    mu, sigma, top = _numbers(text, rest, ("MU", "SIGMA", "MAX"))
    if sigma <= 0:
        raise ValueError(f"lengths={text!r}: SIGMA={sigma:g} must be > 0")
    return Lengths("lognormal", text, (mu, sigma, _positive_int(text, "MAX", top)))


def _file(text: str, rest: str) -> Lengths:
    try:
        values = files.read_lengths(Path(rest))
    except ValueError as err:
        raise ValueError(f"lengths={text!r}: {err}") from None
    return Lengths("file", text, from_file=values)


def summary(lengths: list[int]) -> dict[str, float]:
    """The row's len_min, len_mean, len_max."""
    return {"len_min": min(lengths), "len_mean": sum(lengths) / len(lengths), "len_max": max(lengths)}
