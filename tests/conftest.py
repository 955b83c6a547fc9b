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


@pytest.fixture(scope="session")
def testbed_main():
    """The shipped testbed VLM (``load_testbed()``, CPU), or a skip where its weights are not installed."""
    import smoothguard.testbed as testbed

    if not testbed.weights_available():
        pytest.skip("no trained testbed in this installation (see core/smoothguard/testbed/README.md)")
    return testbed.load_testbed(max_new_tokens=16)


@pytest.fixture(scope="session")
def testbed_questions(testbed_main):
    """Four generated (image, question, answer) examples, one per question kind, that the testbed model answers
    right on the clean image (it is 96-100% accurate, so a wrong one is skipped rather than asserted on)."""
    import numpy as np

    from smoothguard import Media
    from smoothguard.testbed import make_example

    rng, chosen = np.random.default_rng(2026), []
    for kind in ("yesno", "colour", "count", "describe"):
        for _ in range(10):
            example = make_example(rng, kind=kind)
            if testbed_main.generate(example.question, [[Media.image(example.image)]])[0] == example.answer:
                chosen.append(example)
                break
    assert len(chosen) == 4, "the testbed model got 10 questions of one kind wrong in a row"
    return chosen
