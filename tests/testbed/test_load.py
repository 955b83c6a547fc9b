"""load_testbed: the shipped-weights path, its missing-weights error, and the Hugging Face backend on the testbed.

Run on an UNTRAINED "main" model saved as the trainer exports one (fixture ``untrained_weights``), loaded through
the same code as the shipped weights; nothing here needs trained weights.
"""

import subprocess
import sys

import numpy as np
import pytest
import torch

from smoothguard import Media, SmoothGuard
from smoothguard.errors import ConfigError
from smoothguard.noise import add_image_noise, pixel_sigma
from smoothguard.testbed import load_testbed, load_testbed_from, make_example, weights_available, weights_dir
from smoothguard.testbed.encode import Encoder, normalize, to_pixels
from smoothguard.testbed.evaluate import generate_answers
from smoothguard.testbed.model import CLIP_STD, CONFIGS, prompt_text
from smoothguard.testbed.shipped import WEIGHTS_DIR, WEIGHTS_ENV, missing_weights_message


@pytest.fixture(scope="module")
def backend(untrained_weights):
    return load_testbed(path=untrained_weights / "main", max_new_tokens=6)


@pytest.fixture(scope="module")
def examples():
    rng = np.random.default_rng(5)
    return [make_example(rng, kind="yesno") for _ in range(6)]


def test_missing_weights_say_how_to_train(tmp_path, monkeypatch):
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path))
    assert not weights_available() and not weights_available("surrogate")
    assert weights_dir("surrogate") == tmp_path / "surrogate"
    with pytest.raises(ConfigError) as info:
        load_testbed()
    message = str(info.value)
    assert message == missing_weights_message("main")
    assert "has not been trained in this installation" in message and str(tmp_path / "main") in message
    assert "bash training/train_gpu.sh" in message and "tar -xf testbed-out/main.tar" in message
    assert "--device cpu" in message and "--init-from runs/main/model" in message
    with pytest.raises(ConfigError, match="'surrogate' has not been trained"):
        load_testbed("surrogate")
    with pytest.raises(ConfigError, match="unknown testbed model 'big'"):
        load_testbed("big")
    with pytest.raises(ConfigError, match="unknown testbed model"):
        weights_available("big")
    with pytest.raises(ConfigError, match="not a testbed model directory"):
        load_testbed_from(tmp_path)


def test_default_location_is_inside_the_package(monkeypatch):
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    assert weights_dir() == WEIGHTS_DIR / "main"
    assert WEIGHTS_DIR.parent.name == "testbed" and WEIGHTS_DIR.parent.parent.name == "smoothguard"


def test_environment_variable_points_at_other_weights(untrained_weights, monkeypatch):
    monkeypatch.setenv(WEIGHTS_ENV, str(untrained_weights))
    assert weights_available("main") and not weights_available("surrogate")
    backend = load_testbed(max_new_tokens=3)
    assert backend.max_new_tokens == 3 and str(backend.device) == "cpu"


def test_backend_on_the_testbed(backend, examples):
    from smoothguard.backends import HFVisionLanguageModel

    assert isinstance(backend, HFVisionLanguageModel) and backend.family.name == "LLaVA-1.5"
    assert backend.pixel_std == pytest.approx(CLIP_STD)
    assert next(backend.model.parameters()).dtype == torch.float32 and not backend.model.training
    # the chat template renders the trained prompt format
    question = examples[0].question
    assert backend._prompt(question, 1) == prompt_text(question)
    inputs = backend.build_inputs(question, [[Media.image(e.image)] for e in examples])
    encoder = Encoder.from_tokenizer(backend.processor.tokenizer, CONFIGS["main"].n_image_tokens)
    assert torch.equal(inputs["input_ids"], encoder.prompt_batch([question] * len(examples))["input_ids"])


def test_guard_noise_reaches_the_model_unquantised(backend, examples):
    """Float noisy pixels (the guard's, sigma 0.1) become exactly the trainer's normalised pixel_values."""
    pixels = to_pixels([e.image for e in examples])
    std = pixel_sigma(0.1, "normalized", backend.pixel_std)
    noisy = np.stack([add_image_noise(p, std, np.random.default_rng(i)) for i, p in enumerate(pixels)])
    inputs = backend.build_inputs("Describe the image.", [[Media.image(x)] for x in noisy])
    assert torch.allclose(inputs["pixel_values"], normalize(noisy), atol=1e-5)


def test_backend_answers_as_the_trainers_evaluation(backend, examples):
    """The shipped path (processor, chat template, batched generate) gives the answers the accuracy is measured on."""
    question = examples[0].question
    got = backend.generate(question, [[Media.image(e.image)] for e in examples])
    encoder = Encoder.from_tokenizer(backend.processor.tokenizer, CONFIGS["main"].n_image_tokens)
    want = generate_answers(backend.model, backend.processor.tokenizer, encoder, to_pixels([e.image for e in examples]),
                            [question] * len(examples), max_new_tokens=6)
    assert got == want and all(isinstance(a, str) and a for a in got)


def test_guard_and_attack_run_on_the_testbed(backend, examples):
    from smoothguard.attacks import PGDAttack

    result = SmoothGuard(sigma=0.2, n_samples=5, seed=0).ask(backend, examples[0].question, images=[examples[0].image])
    assert result.n_used == 5 and sum(c.size for c in result.clusters) == 5
    attack = PGDAttack(backend, epsilon=16 / 255, step_size=1 / 255, steps=2, early_stop=True, seed=0)
    res = attack.run(examples[0].image, examples[0].question, "Yes.")
    assert res.steps <= 2 and res.image.width == 64 and res.linf <= 16 / 255 + 1e-6


def test_importing_and_checking_weights_stays_light():
    code = ("import sys, smoothguard.testbed as t\n"
            "t.weights_available(); t.weights_available('surrogate')\n"
            "try:\n    t.load_testbed(path='/nonexistent')\n"
            "except Exception as e:\n    assert 'not a testbed' in str(e)\n"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
