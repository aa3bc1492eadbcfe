"""The test suite's autouse fixtures apply here too (seeding, one thread, a private calibration cache):
benchmarks/ sits outside tests/, so pytest would not find them otherwise."""

from tests.conftest import _calibration_cache, _seed_and_threads  # noqa: F401  (fixtures, registered by import)
