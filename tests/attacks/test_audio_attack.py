"""The audio attack: its differentiable log-mel front end against the real Whisper feature extractor, the PGD loop's
guarantees (budget, PCM16 grid, SNR, EOT), its errors, the CLI, and success on the shipped audio testbed."""

import json
import math

import numpy as np
import pytest
import torch

from smoothguard import Media
from smoothguard.attacks import AudioPGDAttack, LogMel, audio_testbed_target
from smoothguard.errors import ConfigError
from smoothguard.testbed.audio_data import SAMPLE_RATE, make_audio_example, make_clip


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    """An untrained audio testbed (the real architecture and front end), loaded as the shipped one is."""
    from smoothguard.testbed import load_testbed_from
    from smoothguard.testbed.audio_model import (
        AUDIO_SPECIAL_TOKENS,
        build_audio_model,
        build_audio_processor,
        build_audio_tokenizer,
        save_audio_testbed,
    )

    tok = build_audio_tokenizer()
    model = build_audio_model("audio", tok)
    model.generation_config.suppress_tokens = [tok.convert_tokens_to_ids(t) for t in AUDIO_SPECIAL_TOKENS]
    out = save_audio_testbed(model, build_audio_processor(tok), tmp_path_factory.mktemp("audio") / "audio", "audio")
    return load_testbed_from(out, max_new_tokens=6)


@pytest.fixture(scope="module")
def shipped():
    import smoothguard.testbed as testbed

    if not testbed.weights_available("audio"):
        pytest.skip("the audio testbed is not trained in this installation")
    return testbed.load_testbed("audio", max_new_tokens=12)


def _clip(seed=0, **kw):
    return Media.audio(make_clip(np.random.default_rng(seed), **kw).wave, sample_rate=SAMPLE_RATE)


@pytest.mark.parametrize("bins,chunk", [(40, 2), (80, 30)])
def test_log_mel_matches_the_real_feature_extractor(bins, chunk):
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor(feature_size=bins, chunk_length=chunk)
    front = LogMel(fe)
    rng = np.random.default_rng(bins)
    waves = [make_clip(rng).wave, rng.uniform(-1, 1, 16000).astype(np.float32), np.zeros(8000, np.float32),
             rng.normal(0, 0.3, chunk * 16000 + 500).astype(np.float32)]  # ordinary, loud, silent, too long
    for wave in waves:
        real = fe(wave, sampling_rate=16000, return_tensors="pt")["input_features"]
        ours = front(torch.from_numpy(wave).unsqueeze(0))
        assert ours.shape == real.shape
        assert float((ours - real).abs().max()) < 1e-4


def test_log_mel_gradient_is_finite_even_on_silence():
    from transformers import WhisperFeatureExtractor

    front = LogMel(WhisperFeatureExtractor(feature_size=40, chunk_length=2))
    for wave in (torch.zeros(1, 24000), torch.from_numpy(make_clip(np.random.default_rng(3)).wave)[None]):
        x = wave.clone().requires_grad_(True)
        front(x).sum().backward()
        assert torch.isfinite(x.grad).all()


def test_front_end_is_checked_before_every_attack(untrained):
    attack = AudioPGDAttack(untrained, epsilon=0.005, steps=1)
    attack.front_end.mel.mul_(1.5)  # a front end that no longer matches the model's feature extractor
    with pytest.raises(ConfigError, match="differs from the feature extractor"):
        attack.run(_clip(), "Is there a high tone?", "Yes.")


def test_budget_grid_and_snr(untrained):
    clip = _clip(1)
    res = AudioPGDAttack(untrained, epsilon=0.003, step_size=0.001, steps=4, seed=0).run(
        clip, "Is the tone high or low?", "The tone is low.")
    assert res.steps == 4 and len(res.loss_curve) == 4 and res.linf <= 0.003 + 1e-9
    assert np.allclose(res.clip.data * 32768, np.rint(res.clip.data * 32768))  # survives a PCM16 WAV
    assert np.allclose(res.original.data * 32768, np.rint(res.original.data * 32768))
    delta = res.delta.astype(np.float64)
    expected = 10 * math.log10(np.sum(res.original.data.astype(np.float64) ** 2) / np.sum(delta**2))
    assert res.snr_db == pytest.approx(expected) and 10 < res.snr_db < 80
    assert res.loss_curve[-1] < res.loss_curve[0]  # the loss goes down
    assert json.loads(json.dumps(res.to_dict()))["snr_db"] == pytest.approx(res.snr_db)
    again = Media.audio(res.clip.to_wav_bytes("pcm16"))
    assert np.array_equal(again.data, res.clip.data)


def test_eot_is_seeded(untrained):
    runs = [AudioPGDAttack(untrained, epsilon=0.005, steps=2, eot_samples=2, eot_sigma=0.01, seed=s).run(
        _clip(2), "How many beeps are there?", "There are 4 beeps.") for s in (0, 0, 1)]
    assert np.array_equal(runs[0].clip.data, runs[1].clip.data)
    assert not np.array_equal(runs[0].clip.data, runs[2].clip.data)


def test_errors(untrained):
    from attack_cases import backend

    with pytest.raises(ConfigError, match="PGDAttack"):
        AudioPGDAttack(backend("llava"))
    for bad in ({"epsilon": 2.0}, {"epsilon": 0.0}, {"steps": -1}, {"eot_samples": 2, "eot_sigma": 0.0},
                {"step_size": 0.0}):
        with pytest.raises(ConfigError):
            AudioPGDAttack(untrained, **bad)
    assert audio_testbed_target("Yes.") == "No." and audio_testbed_target("There are 4 beeps.") == "There are 3 beeps."
    assert audio_testbed_target("The tone is low.") == "The tone is high."
    assert audio_testbed_target("There is 1 beep.") == "There are 2 beeps."
    with pytest.raises(ConfigError):
        audio_testbed_target("Maybe.")


def test_minimal_attack_succeeds_on_the_shipped_testbed(shipped):
    rng = np.random.default_rng(11)
    results = []
    for kind in ("pitch", "yesno"):
        ex = make_audio_example(rng, kind)
        clip = Media.audio(ex.clip.wave, sample_rate=SAMPLE_RATE)
        assert shipped.generate(ex.question, [[clip]]) == [ex.answer]
        res = AudioPGDAttack(shipped, epsilon=0.01, steps=100, early_stop=True).run(
            clip, ex.question, audio_testbed_target(ex.answer))
        results.append(res)
        if res.success:
            assert res.answer == audio_testbed_target(ex.answer) and res.first_success == res.steps
            assert shipped.generate(ex.question, [[res.clip]]) == [res.answer]  # as any client would hear it
    assert any(r.success for r in results)


def test_cli_attacks_a_wav(shipped, tmp_path, capsys):
    from smoothguard.cli import main

    ex = make_audio_example(np.random.default_rng(4), "pitch")
    src = tmp_path / "clip.wav"
    src.write_bytes(Media.audio(ex.clip.wave, sample_rate=SAMPLE_RATE).to_wav_bytes("pcm16"))
    out = tmp_path / "adv.wav"
    code = main(["attack", "--model", "testbed:audio", "--audio", str(src), "--prompt", ex.question, "--target",
                 audio_testbed_target(ex.answer), "--audio-epsilon", "0.01", "--steps", "60", "--early-stop",
                 "--out", str(out), "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["linf"] <= 0.01 + 1e-9 and report["out"] == str(out) and out.is_file()
    assert Media.audio(out.read_bytes()).sample_rate == SAMPLE_RATE
