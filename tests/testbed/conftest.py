import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """The testbed tests share a 2-core machine with other suites: one thread is faster than two contending."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tokenizer():
    from smoothguard.testbed.model import build_tokenizer

    return build_tokenizer()
