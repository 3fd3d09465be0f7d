"""Shared fixtures: one Ray instance per test module (`ray_cluster`), the row factory (`make_row`) and the
study-file writers (`study_writer`); the plain functions behind them are in tests/study_files.py."""

import atexit
import os
import shutil
import tempfile

import pytest
import torch
from study_files import trial_row, write_study

# prepared images go to a throw-away cache for the session, never the user's (Ray workers inherit it)
_DATA_CACHE = tempfile.mkdtemp(prefix="sr-search-data-cache-")
os.environ["SR_SEARCH_DATA_CACHE"] = _DATA_CACHE
atexit.register(shutil.rmtree, _DATA_CACHE, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    """A test that uses a module's `ray_cluster` fixture starts Ray: marked `ray` (so `make test-fast` leaves it
    out). `@pytest.mark.cuda` tests need a CUDA GPU: skipped cleanly without one (`make gpu-check` runs them)."""
    for item in items:
        if "ray_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ray)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _deterministic_one_thread_torch():
    """Seeded, and one intra-op thread: small tensor ops thrash when two threads compete with other processes
    on a 2-core machine (10x slower), which would make the suite slow, not wrong."""
    before = torch.get_num_threads()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray instance (2 CPUs, no dashboard) for the tests of one module; a test that uses it is marked `ray`."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def make_row():
    """`make_row(trial_id, status="complete", spec=..., **values)`: a trial's row as the runner writes it."""
    return trial_row


@pytest.fixture
def study_writer():
    """`study_writer(folder, name, body)`: a study file the real runner finishes in seconds (tiny budget, CPU timing)."""
    return write_study
