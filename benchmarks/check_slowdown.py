"""Does the time check name a variant made 2x slower? A benchmark, not a test (minutes).

    python benchmarks/check_slowdown.py [CHECK FLAGS...]      # default: --profile ci

Clones this checkout into a temporary folder, makes gqa do all its work twice there (projections,
attention and output projection, forward and backward; the cache update once), leaves it
uncommitted, and runs `attnbench check --against HEAD` in the clone: the clone's own HEAD (the
unchanged code) measured side by side with the slowed working tree. gqa's module is also
registered as `concat`, so both are expected to be named; no other cell. Prints the check's
output and the wall time; exits with the check's code (1 expected).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BODY = """\
        q, k, v = self.project(x)
        if cache is not None:
            k, v = cache.update(k, v)  # (b, g, s, e), s = cached + n
        o = self.attend(q, k, v, n_visual=n_visual, cache=cache)  # (b, h, n, e)
        return self.merge(o)
"""
TWICE = """\
        q, k, v = self.project(x)
        twice = type(self) is GroupedQueryAttention and 1 < self.spec.n_kv_heads < self.spec.n_heads
        if twice:  # benchmarks/check_slowdown.py: gqa does all its work twice
            q2, k2, v2 = self.project(x)
        if cache is not None:
            k, v = cache.update(k, v)  # (b, g, s, e), s = cached + n
        o = self.attend(q, k, v, n_visual=n_visual, cache=cache)  # (b, h, n, e)
        if twice:
            k2, v2 = (k, v) if cache is not None else (k2, v2)
            o2 = self.attend(q2, k2, v2, n_visual=n_visual, cache=cache)
            return (self.merge(o) + self.merge(o2)) / 2  # equal outputs: the result is unchanged
        return self.merge(o)
"""


def slowed_clone(dest: Path) -> None:
    """A clone of this checkout's HEAD whose gqa forward does its work twice (uncommitted)."""
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True)
    grouped = dest / "attn_variants" / "grouped.py"
    text = grouped.read_text()
    if BODY not in text:
        sys.exit(f"{grouped}: GroupedQueryAttention.forward changed; update BODY in {__file__}")
    grouped.write_text(text.replace(BODY, TWICE))


def main(flags: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="attnbench-slowdown-") as tmp:
        clone = Path(tmp) / "clone"
        slowed_clone(clone)
        paths = [str(clone), str(clone / "attn_variants" / "compat")]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
        flags = flags or ["--profile", "ci"]
        cmd = [sys.executable, "-m", "harness.cli", "check", *flags, "--against", "HEAD"]
        cmd += ["--out", str(Path(tmp) / "results")]
        t0 = time.perf_counter()
        code = subprocess.run(cmd, cwd=clone, env=env).returncode
        print(f"exit {code} in {time.perf_counter() - t0:.0f} s: {' '.join(cmd[1:])}")
        return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
