import pytest
import torch as th


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    # The suite runs tests in parallel processes on small machines: one thread each.
    th.set_num_threads(1)
