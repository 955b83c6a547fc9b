"""The attack on the testbed: mechanics on its (untrained) architecture always; efficacy on the trained model
only where its weights are installed (marked slow: minutes on a 2-core CPU).

Efficacy tests assert only what must hold (reference/testbed.md): the minimal (early-stopped) attack at
16/255 succeeds on >= 80% against the undefended model, and the guard lowers the success of the minimal attack
and of the transfer attack from the surrogate. The shipped surrogate's attacks do not transfer to main (0 of
20 questions, docs/efficacy.md), so the transfer test skips until a surrogate closer to main is shipped.
Full-budget and EOT-PGD figures are reported, never asserted.
"""

from __future__ import annotations

import numpy as np
import pytest

import smoothguard.testbed as testbed_pkg
from smoothguard.attacks import PGDAttack, evaluate

N_EXAMPLES = 20


@pytest.fixture(scope="module")
def untrained():
    from smoothguard.backends import HFVisionLanguageModel
    from smoothguard.testbed import build_model, build_processor, build_tokenizer

    tokenizer = build_tokenizer()
    return HFVisionLanguageModel(build_model("main", tokenizer), build_processor(tokenizer, "main"),
                                 max_new_tokens=6)


def test_attack_runs_on_the_testbed_architecture(untrained):
    """Its chat template, 64 image tokens, target "Yes." + <|end|>; the loss falls; 8-bit exact result."""
    from smoothguard.testbed import make_example

    example = make_example(np.random.default_rng(0), kind="yesno")
    res = PGDAttack(untrained, epsilon=16 / 255, steps=4).run(example.image, example.question, "Yes.")
    assert res.image.width == res.image.height == 64 and res.linf <= 16 / 255 + 1e-6
    assert res.final_loss < res.loss_curve[0]
    assert all(p.grad is None for p in untrained.model.parameters())  # gradients reach only the image
    assert evaluate(untrained, res.image, example.question, "Yes.").answers == res.answers


# -- efficacy on the trained testbed -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(testbed_main):
    return testbed_main


@pytest.fixture(scope="module")
def negatives(trained):
    """Yes/no questions whose true answer is "No." and which the undefended model answers "No." on the clean
    image (the attack's target is "Yes."; a clean mistake would count as a success of zero steps)."""
    from smoothguard.testbed.evaluate import held_out_examples

    candidates = [e for e in held_out_examples("yesno", 4 * N_EXAMPLES, seed=77) if e.answer == "No."]
    correct = [e for e in candidates if not evaluate(trained, e.image, e.question, "Yes.", loss=False).success]
    return correct[:N_EXAMPLES]


def _guarded_yes(backend, image, question, sigma=0.2):
    from smoothguard import SmoothGuard

    answer = SmoothGuard(sigma=sigma, n_samples=11, seed=0).ask(backend, question, images=[image]).answer
    return "yes" in answer.casefold()


@pytest.mark.slow
def test_minimal_attack_succeeds_and_the_guard_lowers_it(trained, negatives):
    # 300 steps: with 100, about a quarter of such questions resisted; with 300, 1 in 20 (median 16 steps)
    attack = PGDAttack(trained, epsilon=16 / 255, step_size=1 / 255, steps=300, early_stop=True)
    results = [attack.run(e.image, e.question, "Yes.") for e in negatives]
    undefended = sum(r.success for r in results)
    assert undefended >= 0.8 * len(negatives)
    defended = sum(_guarded_yes(trained, r.image, e.question) for r, e in zip(results, negatives, strict=True))
    print(f"minimal PGD 16/255: undefended {undefended}/{len(negatives)}, guarded (sigma 0.2) {defended}")
    assert defended < undefended


@pytest.mark.slow
def test_transfer_from_the_surrogate_is_lowered_by_the_guard(trained, negatives):
    if not testbed_pkg.weights_available("surrogate"):
        pytest.skip("no trained surrogate testbed in this installation (see the testbed README)")
    surrogate = testbed_pkg.load_testbed("surrogate")
    attack = PGDAttack(surrogate, epsilon=16 / 255, step_size=1 / 255, steps=100)
    images = [attack.run(e.image, e.question, "Yes.").image for e in negatives]
    undefended = sum(evaluate(trained, im, e.question, "Yes.", loss=False).success
                     for im, e in zip(images, negatives, strict=True))
    defended = sum(_guarded_yes(trained, im, e.question) for im, e in zip(images, negatives, strict=True))
    print(f"transfer surrogate -> main: undefended {undefended}/{len(negatives)}, guarded {defended}")
    if undefended < 3:
        pytest.skip(f"the transfer attack reached only {undefended} examples: too few to compare")
    assert defended < undefended
