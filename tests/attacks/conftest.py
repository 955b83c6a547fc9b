"""Fixtures of the attack tests (shared inputs live in attack_cases.py)."""

import pytest


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One intra-op thread: tiny models gain nothing from more, and a busy 2-core machine loses a lot."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
