import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic_one_thread_torch():
    """Seeded, and one intra-op thread: small tensor ops thrash when two threads compete with other processes
    on a 2-core machine (10x slower), which would make the suite slow, not wrong."""
    before = torch.get_num_threads()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
