import os

# Tests never touch a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import sys
from pathlib import Path

# Shared test doubles: `from fakes.openai_server import OpenAIStub`.
sys.path.insert(0, str(Path(__file__).parent))

import pytest


@pytest.fixture
def one_torch_thread():
    """One intra-op torch thread for the test: tiny models gain nothing from more, and a busy 2-core machine loses
    a lot to contention. Directories of model tests request it from an autouse fixture in their conftest."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
