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


@pytest.fixture(scope="session")
def untrained_weights(tmp_path_factory, tokenizer):
    """A weights root holding an UNTRAINED "main" testbed (``root/main/``), saved by ``save_testbed`` as the trainer
    exports one, so it loads through exactly the shipped path (``load_testbed(path=...)``,
    ``SMOOTHGUARD_TESTBED_WEIGHTS=root``). Its answers are gibberish; the special tokens are suppressed in its
    generation config so that they are never empty (an empty answer is a failed candidate to the guard)."""
    from smoothguard.testbed.model import SPECIAL_TOKENS, build_model, build_processor, save_testbed

    root = tmp_path_factory.mktemp("testbed-weights")
    model = build_model("main", tokenizer)
    model.generation_config.suppress_tokens = [tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]
    save_testbed(model, build_processor(tokenizer), root / "main", "main", {"untrained": True})
    return root
