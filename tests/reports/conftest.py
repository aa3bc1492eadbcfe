"""Fixtures for the report tests: fabricated run directories (see fabricate.py)."""

import pytest

from .fabricate import accuracy_frame, sweep_frame, write_run


@pytest.fixture
def run_dir(tmp_path):
    """A run holding both CSVs; two seq_lens keep the drawing fast."""
    return write_run(
        tmp_path / "run-a", sweep=sweep_frame(seq_lens=(128, 256), oom_at=256), accuracy=accuracy_frame()
    )


@pytest.fixture
def other_run_dir(tmp_path):
    return write_run(tmp_path / "run-b", sweep=sweep_frame(seed=1, seq_lens=(128, 256), slow=0.8, oom_at=256))
