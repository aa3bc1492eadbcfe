"""Shared test helpers: devices (CUDA cases skip cleanly without a GPU) and seeding."""

import itertools
import subprocess
from pathlib import Path

import pytest
import torch

import attn_variants as av
from attn_variants import registry

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]


@pytest.fixture(autouse=True, scope="session")
def _calibration_cache(tmp_path_factory):
    """Sweeps calibrate the machine's roof (harness/measure/calibrate.py) into a cache of the session's
    own: the user's ~/.cache/attnbench is not the tests' to write, and a roof measured while the
    suite loads both cores would be cached too low for the user's next sweep."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ATTNBENCH_CACHE_DIR", str(tmp_path_factory.mktemp("attnbench-cache")))
        yield


def _untracked(repo: Path) -> set[str] | None:
    """The checkout's untracked, not ignored files (None: not a git checkout)."""
    cmd = ["git", "-C", str(repo), "ls-files", "--others", "--exclude-standard"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    return set(done.stdout.splitlines()) if done.returncode == 0 else None


@pytest.fixture(autouse=True, scope="session")
def _checkout_stays_clean():
    """Tests write only under their temporary folders: a file the session leaves in the
    checkout (a run folder in results/, a report) fails the session, named."""
    repo = Path(__file__).resolve().parents[1]
    before = _untracked(repo)
    yield
    after = _untracked(repo)
    if before is not None and after is not None and after - before:
        pytest.fail(f"the tests left files in the checkout: {sorted(after - before)[:10]}")


@pytest.fixture(autouse=True)
def _seed_and_threads():
    """Seed, and one intra-op thread: the tests' shapes are tiny, and on a shared 2-core machine
    two OpenMP threads stall each other whenever another process holds a core."""
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    return torch.device(request.param)


@pytest.fixture
def scratch_registry():
    """Variants registered (and plugins loaded) inside the test are gone after it: the registry
    is the same for the next test (attn_variants.registry.restored)."""
    with registry.restored():
        yield


_variant_ids = itertools.count()


@pytest.fixture
def temp_variant(scratch_registry):
    """Register test-only variants for one test: `temp_variant(cls, **registry_fields)` registers
    `cls` (description and paper default to "test" and "-") under a unique name, or `name=`, and
    returns the name; the registry is restored when the test ends (scratch_registry)."""

    def add(cls: type, name: str | None = None, **fields) -> str:
        name = name or f"_test_{cls.__name__.lower()}_{next(_variant_ids)}"
        av.register(name, **{"description": "test", "paper": "-", **fields})(cls)
        return name

    yield add
