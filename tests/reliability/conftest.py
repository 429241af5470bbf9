import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """The suite's models are tiny: one thread is several times faster than two on a busy 2-core machine, and every
    run, in this process or a child, sums in the same order."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
