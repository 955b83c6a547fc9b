"""``audio_resample``: the audio noise is drawn at the rate and channels the model listens at.

The yardstick is the noise a 16 kHz mono model hears: each copy mixed to mono and resampled to 16 kHz the way
Whisper's and Qwen2-Audio's feature extractors do (``scipy.signal.resample_poly``), minus the original sent with
it, heard the same way. With ``audio_resample=16000`` that noise has the std ``audio_sigma`` whatever the source
rate and channels; with ``"none"`` it keeps ``1 / sqrt(channels * rate / 16000)`` of it.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from scipy.signal import resample_poly

from smoothguard import GuardConfig, Media, SmoothGuard
from smoothguard.audio_resample import (
    auto_rate,
    check_resample,
    kept_fraction,
    parse_resample,
    rate_for_model,
    source_rate_note,
)
from smoothguard.errors import ConfigError
from smoothguard.media.audio import to_mono_at

SIGMA = 0.01
RATES = (8000, 16000, 44100, 48000)


def clip(rate: int, channels: int, seconds: float = 2.0) -> Media:
    """A two-tone clip at ``rate`` Hz (the channels differ), well inside [-1, 1] so no noisy sample is clipped."""
    t = np.arange(int(rate * seconds)) / rate
    tones = [0.3 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 660 * t + 1.0)]
    data = tones[0] if channels == 1 else np.stack(tones[:channels], axis=1)
    return Media.audio(data.astype(np.float32), sample_rate=rate)


def heard(media: Media, rate: int = 16000) -> np.ndarray:
    """What a model that listens at ``rate`` Hz mono reads: the channels averaged, then ``resample_poly``."""
    wave = media.data.astype(np.float64)
    wave = wave if wave.ndim == 1 else wave.mean(axis=1)
    g = math.gcd(int(media.sample_rate), rate)
    return resample_poly(wave, rate // g, int(media.sample_rate) // g)


def noise_heard(variants: list[list[Media]]) -> float:
    """The std of (noisy copy - original) as the 16 kHz mono model hears them, over the noisy copies."""
    original = heard(variants[0][0])
    edge = 200  # the resampler's filter edges
    return float(np.std(np.concatenate([(heard(v[0]) - original)[edge:-edge] for v in variants[1:]])))


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("rate", RATES)
def test_noise_at_the_model_is_audio_sigma_when_drawn_at_its_rate(rate, channels):
    source = clip(rate, channels)
    guard = SmoothGuard(audio_sigma=SIGMA, n_samples=3, seed=0, audio_resample=16000)
    variants = guard.perturb([source])
    assert all(v[0].sample_rate == 16000 and v[0].n_channels == 1 for v in variants)
    assert noise_heard(variants) == pytest.approx(SIGMA, rel=0.03)


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("rate", RATES)
def test_noise_drawn_at_the_source_rate_is_reduced_by_the_models_resampling(rate, channels):
    source = clip(rate, channels)
    variants = SmoothGuard(audio_sigma=SIGMA, n_samples=3, seed=0, audio_resample="none").perturb([source])
    assert all(v[0].sample_rate == rate and v[0].n_channels == channels for v in variants)
    assert variants[0][0] is source
    # the resampler's low-pass starts a little under the new Nyquist: up to 3% below the ideal fraction
    assert noise_heard(variants) == pytest.approx(SIGMA * kept_fraction(rate, channels), rel=0.05)
    if rate == 48000 and channels == 2:
        assert noise_heard(variants) < 0.42 * SIGMA  # 1/2.45 of it


def test_auto_reads_the_rate_the_caller_passes_and_keeps_the_source_without_one():
    source = clip(48000, 2, seconds=0.5)
    guard = SmoothGuard(audio_sigma=SIGMA, n_samples=3, seed=0)
    assert guard.config.audio_resample == "auto"
    assert {(v[0].sample_rate, v[0].n_channels) for v in guard.perturb([source], auto_resample=16000)} == {(16000, 1)}
    assert {(v[0].sample_rate, v[0].n_channels) for v in guard.perturb([source])} == {(48000, 2)}
    # an explicit rate wins over what "auto" would read
    explicit = SmoothGuard(audio_sigma=SIGMA, n_samples=2, seed=0, audio_resample=22050)
    assert explicit.perturb([source], auto_resample=16000)[1][0].sample_rate == 22050


def test_the_original_is_sent_at_the_noise_rate_and_the_copies_differ_only_by_the_noise():
    source = clip(44100, 2, seconds=0.5)
    variants = SmoothGuard(audio_sigma=SIGMA, n_samples=4, seed=0, audio_resample=16000).perturb([source])
    original = variants[0][0]
    np.testing.assert_array_equal(original.data, to_mono_at(source, 16000))
    assert original.wav_subtype == source.wav_subtype == "pcm16"
    for (copy,) in variants[1:]:
        assert copy.data.shape == original.data.shape and copy.sample_rate == 16000
        assert 0.8 * SIGMA < float(np.std(copy.data - original.data)) < 1.2 * SIGMA
    mono16 = clip(16000, 1, seconds=0.5)  # already what the model hears: the caller's clip itself is sent
    assert SmoothGuard(n_samples=2, seed=0, audio_resample=16000).perturb([mono16])[0][0] is mono16


def test_the_result_says_where_the_audio_noise_was_drawn():
    source = clip(48000, 2, seconds=0.5)
    generate = lambda variants: ["a tone"] * len(variants)  # noqa: E731
    at16 = SmoothGuard(audio_sigma=SIGMA, n_samples=3, seed=0, audio_resample=16000).run([source], generate)
    (site,) = at16.noise
    assert (site.kind, site.source, site.drawn_at, site.resampled) == ("audio", (48000, 2), (16000, 1), True)
    assert site.to_dict() == {"kind": "audio", "source": {"sample_rate": 48000, "channels": 2},
                              "drawn_at": {"sample_rate": 16000, "channels": 1}}
    assert not [n for n in at16.notes if "audio_resample" in n]
    kept = SmoothGuard(audio_sigma=SIGMA, n_samples=3, seed=0, audio_resample="none").run([source], generate)
    assert (kept.noise[0].source, kept.noise[0].drawn_at) == ((48000, 2), (48000, 2))


def test_notes_say_the_noise_was_drawn_at_the_source_rate_and_what_a_resampling_model_keeps():
    generate = lambda variants: ["a tone"] * len(variants)  # noqa: E731

    def notes(source: Media, **settings) -> list[str]:
        result = SmoothGuard(n_samples=2, seed=0, **settings).run([source], generate)
        return [n for n in result.notes if n.startswith("audio ")]

    (note,) = notes(clip(48000, 2, seconds=0.2))  # "auto" without a model that says its rate
    assert "48000 Hz stereo" in note and "audio_resample='auto'" in note
    assert "1/sqrt(channels x rate / 16000) = 1/2.45 = 41%" in note and "set audio_resample" in note
    (note,) = notes(clip(44100, 1, seconds=0.2), audio_resample="none")
    assert "44100 Hz mono" in note and "1/1.66 = 60%" in note
    (note,) = notes(clip(8000, 2, seconds=0.2), audio_resample="none")
    assert "8000 Hz stereo" in note and "1/1.41 = 71%" in note
    assert notes(clip(16000, 1, seconds=0.2), audio_resample="none") == []  # nothing to lose
    assert notes(clip(8000, 1, seconds=0.2)) == []
    assert notes(clip(48000, 2, seconds=0.2), audio_resample=16000) == []
    assert source_rate_note(0, 16000, 1, "none") is None


def test_a_minute_of_48k_stereo_is_resampled_fast():
    source = clip(48000, 2, seconds=60.0)
    start = time.perf_counter()
    variants = SmoothGuard(audio_sigma=SIGMA, n_samples=2, seed=0, audio_resample=16000).perturb([source])
    elapsed = time.perf_counter() - start
    assert variants[0][0].n_frames == 16000 * 60 and variants[0][0].n_channels == 1
    # about 0.05 s for the mix and resample and 0.06 s for the whole perturb on the project machine; the bound
    # leaves room for a busy shared CPU
    assert elapsed < 2.0, f"mixing and resampling 60 s of 48 kHz stereo took {elapsed:.2f} s"


@pytest.mark.parametrize("value", ["16k", "", "AUTO", 999, 400_000, 0, -16000, True, 16000.0, None, [16000]])
def test_invalid_values_are_refused_with_what_is_allowed(value):
    with pytest.raises(ConfigError) as info:
        GuardConfig(audio_resample=value)
    message = str(info.value)
    assert "audio_resample must be 'auto', 'none' or a sample rate in Hz" in message and "[1000, 384000]" in message
    assert repr(value) in message


def test_valid_values_and_the_command_line_form():
    assert GuardConfig().audio_resample == "auto"
    assert GuardConfig(audio_resample=np.int64(22050)).audio_resample == 22050
    assert type(GuardConfig(audio_resample=np.int64(22050)).audio_resample) is int
    assert GuardConfig(audio_resample="none").to_dict()["audio_resample"] == "none"
    assert check_resample(1000) == 1000 and check_resample(384_000) == 384_000
    assert parse_resample(" 16000 ") == 16000 and parse_resample("None") == "none"
    with pytest.raises(ConfigError):
        parse_resample("16 kHz")


@pytest.mark.parametrize(("name", "rate"), [
    ("Qwen/Qwen2-Audio-7B-Instruct", 16000), ("qwen2-audio", 16000), ("Qwen2Audio", 16000),
    ("Qwen/Qwen2.5-Omni-7B", 16000), ("qwen25-omni-3b", 16000), ("openai/whisper-large-v3", 16000),
    ("whisper-1", 16000), ("gpt-4o-audio-preview", None), ("Qwen/Qwen2.5-VL-7B-Instruct", None), ("", None),
    (None, None),
])
def test_auto_rate_from_the_model_name(name, rate):
    assert auto_rate(name) == rate


def test_rate_for_model_reads_a_clients_model_name():
    class Client:
        def __init__(self, **attrs):
            self.__dict__.update(attrs)

    assert rate_for_model(Client(model_name="Qwen/Qwen2-Audio-7B-Instruct")) == 16000
    assert rate_for_model(Client(model="whisper-large-v3")) == 16000
    assert rate_for_model(Client(model_id="gpt-4o-audio-preview")) is None
    assert rate_for_model(object()) is None


def test_to_mono_at_mixes_resamples_and_stays_in_range():
    loud = Media.audio(np.stack([np.sign(np.sin(np.arange(4410) / 3.0))] * 2, axis=1).astype(np.float32),
                       sample_rate=44100)  # a full-scale square wave: the low-pass overshoots it
    wave = to_mono_at(loud, 16000)
    assert wave.dtype == np.float32 and wave.ndim == 1 and len(wave) == 1600
    assert float(np.abs(wave).max()) <= 1.0
    mono16 = clip(16000, 1, seconds=0.1)
    assert to_mono_at(mono16, 16000) is mono16.data
