"""The shipped testbed models meet the issue's accuracy bar on a held-out generated set.

Skipped (with the reason) until the weights are installed in ``smoothguard/testbed/weights/<name>/``. Held-out set:
generator stream 1 (training draws stream 0) with a seed of its own, ``N`` examples per measurement, answered
greedily in batches on the fast path the trainer evaluates with, which ``test_shipped_path_gives_the_same_answers``
ties to the shipped ``HFVisionLanguageModel`` path. Bars (issue 4): yes/no >= 95%, colour and count >= 90%,
describe exact match >= 80%, yes/no under the guard's noise at sigma 0.1 and 0.2 >= 90% (pixel std
sigma x CLIP std per channel, clipped to [0, 1]: ``smoothguard.noise``, as the guard adds it).
"""

import json

import numpy as np
import pytest
import torch

from smoothguard import Media
from smoothguard.noise import add_image_noise, pixel_sigma
from smoothguard.testbed import weights_available, weights_dir
from smoothguard.testbed.encode import Encoder, to_pixels
from smoothguard.testbed.evaluate import generate_answers, held_out_examples

N = 300  # held-out examples per measurement
SEED = 4321  # not the seed of the trainer's own metrics.json (1234): a fresh held-out sample
BARS = {"yesno": 0.95, "colour": 0.90, "count": 0.90, "describe": 0.80, "yesno_sigma_0.1": 0.90,
        "yesno_sigma_0.2": 0.90}
_WHY = ("the testbed model {!r} has not been trained in this installation: run bash core/smoothguard/testbed/"
        "train_gpu.sh on a GPU and unpack its {}.tar into core/smoothguard/testbed/weights/ (see testbed/README.md)")

needs_main = pytest.mark.skipif(not weights_available("main"), reason=_WHY.format("main", "main"))
needs_surrogate = pytest.mark.skipif(not weights_available("surrogate"), reason=_WHY.format("surrogate", "surrogate"))


def _measure(backend, n: int, sigmas=(0.1, 0.2), kinds=("yesno", "colour", "count", "describe")) -> dict:
    """Exact-match accuracy per kind and for yes/no under the guard's noise, with a few wrong answers."""
    tokenizer = backend.processor.tokenizer
    encoder = Encoder.for_processor(backend.processor)
    accuracy, wrong = {}, {}

    def score(name, examples, pixels):
        got = generate_answers(backend.model, tokenizer, encoder, pixels, [e.question for e in examples],
                               batch_size=150, max_new_tokens=24)
        right = [g == e.answer for g, e in zip(got, examples, strict=True)]
        accuracy[name] = float(np.mean(right))
        wrong[name] = [(e.question, e.answer, g) for g, e, r in zip(got, examples, right, strict=True) if not r][:3]

    for kind in kinds:
        examples = held_out_examples(kind, n, seed=SEED)
        pixels = to_pixels([e.image for e in examples])
        score(kind, examples, pixels)
        if kind == "yesno":
            for sigma in sigmas:
                std = pixel_sigma(sigma, "normalized", backend.pixel_std)
                rng = np.random.default_rng([SEED, round(sigma * 1000)])
                score(f"yesno_sigma_{sigma}", examples, np.stack([add_image_noise(p, std, rng) for p in pixels]))
    return {"accuracy": accuracy, "wrong": wrong}


@pytest.fixture(scope="module")
def main_model():
    from smoothguard.testbed import load_testbed

    if not weights_available("main"):
        pytest.skip(_WHY.format("main", "main"))
    return load_testbed()


@pytest.fixture(scope="module")
def measured(main_model):
    result = _measure(main_model, N)
    print("\nmain testbed, held-out accuracy:", json.dumps(result["accuracy"]))
    return result


@pytest.mark.parametrize("name", list(BARS))
def test_accuracy_bar(measured, name):
    got = measured["accuracy"][name]
    assert got >= BARS[name], f"{name}: {got:.1%} < {BARS[name]:.0%}; wrong answers: {measured['wrong'][name]}"


def test_shipped_path_gives_the_same_answers(main_model):
    """The shipped HFVisionLanguageModel path (processor, chat template, float noisy pixels) answers as measured."""
    examples = held_out_examples("yesno", 24, seed=SEED + 1) + held_out_examples("describe", 8, seed=SEED + 1)
    std = pixel_sigma(0.2, "normalized", main_model.pixel_std)
    pixels = to_pixels([e.image for e in examples])
    noisy = np.stack([add_image_noise(p, std, np.random.default_rng(i)) for i, p in enumerate(pixels)])
    encoder = Encoder.for_processor(main_model.processor)
    fast = generate_answers(main_model.model, main_model.processor.tokenizer, encoder, noisy,
                            [e.question for e in examples], max_new_tokens=main_model.max_new_tokens)
    shipped = [main_model.generate(e.question, [[Media.image(x)]])[0] for e, x in zip(examples, noisy, strict=True)]
    differ = [(e.question, a, b) for e, a, b in zip(examples, shipped, fast, strict=True) if a != b]
    assert len(differ) <= 1, differ  # batched vs one at a time: at most a rare near-tie flips under greedy decoding
    assert np.mean([a == e.answer for a, e in zip(shipped, examples, strict=True)]) >= 0.8


@pytest.mark.parametrize("name", ["main", "surrogate"])
def test_weights_are_small_fp16_and_documented(name):
    if not weights_available(name):
        pytest.skip(_WHY.format(name, name))
    directory = weights_dir(name)
    assert (directory / "model.safetensors").stat().st_size <= 10 * 10**6
    info = json.loads((directory / "testbed.json").read_text())
    assert info["config"]["name"] == name and info["examples_seen"] > 0
    config = json.loads((directory / "config.json").read_text())
    assert config["model_type"] == "llava" and config.get("dtype", config.get("torch_dtype")) == "float16"
    metrics = json.loads((directory / "metrics.json").read_text())  # the trainer's record, shipped alongside
    assert metrics["config"] == name and "yesno" in metrics["eval"]


@needs_main
def test_run_command_on_the_testbed(tmp_path, capsys):
    from smoothguard.cli import main
    from smoothguard.testbed import make_example

    example = make_example(np.random.default_rng(3), kind="yesno")
    path = tmp_path / "shapes.png"
    example.image.save(path)
    assert main(["run", "--model", "testbed", "--prompt", example.question, "--image", str(path), "--seed", "0",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["answer"] in ("Yes.", "No.") and result["n_used"] == 11


@needs_surrogate
def test_surrogate_loads_and_looks_at_the_image():
    """The transfer-attack surrogate: its own, smaller, trained weights; it answers in the task's templates and sees
    the image (no accuracy bar in the issue; 80% yes/no here, where chance is 50%)."""
    from smoothguard.testbed import build_model, build_tokenizer, load_testbed

    surrogate = load_testbed("surrogate")
    assert surrogate.family.name == "LLaVA-1.5"
    assert sum(p.numel() for p in surrogate.model.parameters()) < 2.5e6  # main has 3.6 M
    untrained = build_model("surrogate", build_tokenizer())  # its own seed's initial weights: training moved them
    assert not torch.allclose(surrogate.model.get_input_embeddings().weight, untrained.get_input_embeddings().weight)
    result = _measure(surrogate, 100, sigmas=(), kinds=("yesno",))
    print("\nsurrogate testbed, held-out accuracy:", json.dumps(result["accuracy"]))
    assert result["accuracy"]["yesno"] >= 0.8, result["wrong"]
