"""The audio testbed's clip generator follows the documented rules (smoothguard.testbed.audio_data)."""

import numpy as np
import pytest

from smoothguard.testbed.audio_data import (
    AUDIO_KINDS,
    BANDS,
    CLIP_SECONDS,
    SAMPLE_RATE,
    audio_texts,
    count_answer,
    make_audio_example,
    make_clip,
)


def _envelope_onsets(wave: np.ndarray, threshold: float = 0.05) -> list[tuple[float, float]]:
    """(start, end) in seconds of the stretches where the 5 ms RMS exceeds ``threshold``."""
    win = SAMPLE_RATE // 200
    rms = np.sqrt(np.convolve(wave.astype(np.float64) ** 2, np.ones(win) / win, mode="same"))
    loud = rms > threshold
    edges = np.flatnonzero(np.diff(loud.astype(int)))
    starts, ends = edges[::2] + 1, edges[1::2] + 1
    return [(s / SAMPLE_RATE, e / SAMPLE_RATE) for s, e in zip(starts, ends, strict=False)]


@pytest.mark.parametrize("seed", range(40))
def test_clip_follows_the_rules(seed):
    clip = make_clip(np.random.default_rng(seed))
    assert clip.wave.dtype == np.float32 and clip.wave.shape == (int(CLIP_SECONDS * SAMPLE_RATE),)
    assert clip.sample_rate == SAMPLE_RATE and np.abs(clip.wave).max() <= 1.0
    assert 1 <= clip.n_beeps <= 4 and len(clip.onsets) == clip.n_beeps
    low, high = BANDS[clip.band]
    assert low <= clip.frequency <= high
    assert all(0.1 <= d <= 0.2 for d in clip.durations)
    ends = [o + d for o, d in zip(clip.onsets, clip.durations, strict=True)]
    assert clip.onsets[0] >= 0.02 - 1e-9 and ends[-1] <= CLIP_SECONDS - 0.02 + 1e-9
    assert all(b - a >= 0.1 - 1e-9 for a, b in zip(ends, clip.onsets[1:], strict=False))
    # the beeps are really there: one loud stretch per beep, at the frequency said
    assert len(_envelope_onsets(clip.wave)) == clip.n_beeps
    spectrum = np.abs(np.fft.rfft(clip.wave))
    assert abs(np.argmax(spectrum) * SAMPLE_RATE / len(clip.wave) - clip.frequency) < 5.0
    # background noise at 30 dB SNR: measured in the silence between beeps
    silent = np.ones(len(clip.wave), bool)
    for o, d in zip(clip.onsets, clip.durations, strict=True):
        silent[int(o * SAMPLE_RATE):int((o + d) * SAMPLE_RATE) + 1] = False
    signal_power = np.mean((clip.wave.astype(np.float64)) ** 2)
    noise_power = np.mean(clip.wave[silent].astype(np.float64) ** 2)
    assert 10 * np.log10(signal_power / noise_power) == pytest.approx(30.0, abs=1.0)


def test_same_generator_state_same_clip_and_choices():
    a, b = make_clip(np.random.default_rng(7)), make_clip(np.random.default_rng(7))
    assert np.array_equal(a.wave, b.wave) and a.onsets == b.onsets
    c = make_clip(np.random.default_rng(7), n_beeps=4, band="low")
    assert c.n_beeps == 4 and c.band == "low"
    with pytest.raises(ValueError):
        make_clip(np.random.default_rng(0), n_beeps=5)
    with pytest.raises(ValueError):
        make_clip(np.random.default_rng(0), band="middle")


def test_questions_and_exact_answers():
    rng = np.random.default_rng(1)
    seen = {k: set() for k in AUDIO_KINDS}
    for _ in range(300):
        ex = make_audio_example(rng)
        seen[ex.kind].add((ex.question, ex.answer))
        if ex.kind == "count":
            assert ex.question == "How many beeps are there?" and ex.answer == count_answer(ex.clip.n_beeps)
        elif ex.kind == "pitch":
            assert ex.question == "Is the tone high or low?" and ex.answer == f"The tone is {ex.clip.band}."
        else:
            asked = "high" if "high" in ex.question else "low"
            assert ex.question == f"Is there a {asked} tone?"
            assert ex.answer == ("Yes." if asked == ex.clip.band else "No.")
    assert count_answer(1) == "There is 1 beep." and count_answer(3) == "There are 3 beeps."
    assert {a for _, a in seen["yesno"]} == {"Yes.", "No."}
    assert {a for _, a in seen["count"]} == {count_answer(n) for n in range(1, 5)}
    texts = audio_texts()
    assert all(q in texts for q, _ in seen["yesno"] | seen["pitch"] | seen["count"])
    with pytest.raises(ValueError):
        make_audio_example(rng, kind="colour")
