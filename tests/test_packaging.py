"""The packaging test (.ci/wheel) from pytest: a wheel, installed not editable into a fresh venv
that reuses this environment's torch, runs from an empty folder. About half a minute to a
minute and a half on a busy 2-core box, and .ci/run runs the script itself: so it is marked
`wheel`, out of the default run; `pytest -m wheel` runs it."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "wheel"


@pytest.mark.wheel
@pytest.mark.skipif(shutil.which("git") is None or sys.platform == "win32", reason="needs git and bash")
def test_wheel_works_from_an_empty_folder():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHON": sys.executable}
    out = subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "wheel test passed" in out.stdout and "from the wheel: ['attn_variants'" in out.stdout
