"""The shipped audio testbed: held-out accuracy per question kind, clean and under the guard's default audio noise,
and the audio demo end to end (skipped where the weights are not installed)."""

import json

import numpy as np
import pytest

from smoothguard import GuardConfig, Media
from smoothguard.testbed.audio_data import AUDIO_KINDS, SAMPLE_RATE, make_audio_example


@pytest.fixture(scope="module")
def audio_testbed():
    import smoothguard.testbed as testbed

    if not testbed.weights_available("audio"):
        pytest.skip("the audio testbed is not trained in this installation (training/audio_train.py)")
    return testbed.load_testbed("audio", max_new_tokens=12, max_batch_size=64)


def _accuracy(backend, kind: str, n: int, sigma: float) -> float:
    """Greedy exact match on ``n`` fresh clips (a stream neither the trainer nor the efficacy report uses)."""
    rng = np.random.default_rng([2027, AUDIO_KINDS.index(kind)])
    examples = [make_audio_example(rng, kind) for _ in range(n)]
    by_question: dict[str, list] = {}
    for ex in examples:
        wave = ex.clip.wave
        if sigma:
            wave = np.clip(wave + rng.normal(0.0, sigma, wave.shape), -1, 1).astype(np.float32)
        by_question.setdefault(ex.question, []).append((Media.audio(wave, sample_rate=SAMPLE_RATE), ex.answer))
    right = 0
    for question, items in by_question.items():
        answers = backend.generate(question, [[clip] for clip, _ in items])
        right += sum(a == want for a, (_, want) in zip(answers, items, strict=True))
    return right / n


@pytest.mark.parametrize("kind", AUDIO_KINDS)
def test_heldout_accuracy_at_least_95_percent(audio_testbed, kind):
    assert _accuracy(audio_testbed, kind, 200, 0.0) >= 0.95
    assert _accuracy(audio_testbed, kind, 200, GuardConfig().audio_sigma) >= 0.95


def test_model_flag_and_demo(audio_testbed, capsys):
    from smoothguard.cli import main

    assert main(["demo", "--audio", "--n", "3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["modality"] == "audio" and report["family"] == "Qwen2-Audio" and report["model"] == "testbed 'audio'"
    assert [row["kind"] for row in report["examples"]] == list(AUDIO_KINDS)
    assert report["summary"]["clean_correct"] >= 2
    for row in report["examples"]:
        p = row["perturbed"]
        assert p["linf"] <= 0.005 + 1e-9 and (p["snr_db"] > 10 or p["steps"] == 0)
        assert row["guarded"]["n_used"] == 11
