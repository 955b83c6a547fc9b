"""The audio testbed's task: generated beep clips and the questions asked about them (numpy only).

A clip is 1.5 s of mono audio at 16 kHz (:data:`SAMPLE_RATE`, :data:`CLIP_SECONDS`), float32 in [-1, 1]:

- one to four beeps of a pure tone, each 100-200 ms long (10 ms raised-cosine fades at both ends), at least
  100 ms apart (silence between the end of one and the start of the next) and at least 20 ms from the clip's
  edges; all beeps of a clip have one frequency, drawn uniformly from the "low" band 300-600 Hz or the "high"
  band 1500-3000 Hz, and one peak amplitude drawn uniformly from 0.2-0.6, each beep scaled by a further
  uniform 0.8-1.0;
- white Gaussian background noise at 30 dB SNR: its variance is the clip's mean beep power (the mean of the
  squared beep signal over all 1.5 s) divided by 10^3.

Three kinds of question are asked about it, always with exactly these templates:

=======  ===============================================  =======================================================
kind     question                                         answer
=======  ===============================================  =======================================================
count    ``How many beeps are there?``                    ``There are {n} beeps.`` / ``There is 1 beep.``
pitch    ``Is the tone high or low?``                     ``The tone is high.`` / ``The tone is low.``
yesno    ``Is there a high tone?`` / ``Is there a low     ``Yes.`` / ``No.`` (the asked band drawn at random, so
         tone?``                                          half of the answers are "No.")
=======  ===============================================  =======================================================

Everything is drawn from the ``numpy.random.Generator`` passed in, so the same generator state gives the same
clip; anyone can draw their own test clips that follow these rules (:func:`make_clip`, :func:`make_example`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "AUDIO_ANSWERS",
    "AUDIO_KINDS",
    "AUDIO_KIND_WEIGHTS",
    "AUDIO_QUESTIONS",
    "BANDS",
    "CLIP_SECONDS",
    "SAMPLE_RATE",
    "SNR_DB",
    "AudioExample",
    "Clip",
    "audio_texts",
    "count_answer",
    "make_audio_example",
    "make_clip",
]

#: Sample rate of every clip, Hz.
SAMPLE_RATE = 16_000
#: Length of every clip, seconds.
CLIP_SECONDS = 1.5
#: Background noise level: beep power over noise power, dB.
SNR_DB = 30.0
#: The two frequency bands, Hz (inclusive ranges for a uniform draw).
BANDS: dict[str, tuple[float, float]] = {"low": (300.0, 600.0), "high": (1500.0, 3000.0)}
MAX_BEEPS = 4
_BEEP_S = (0.100, 0.200)  # beep length range, seconds
_GAP_S = 0.100  # the least silence between beeps, seconds
_EDGE_S = 0.020  # the least silence before the first and after the last beep, seconds
_FADE_S = 0.010  # raised-cosine fade in and out, seconds
_AMPLITUDE = (0.2, 0.6)  # peak amplitude of a clip's beeps
_BEEP_SCALE = (0.8, 1.0)  # each beep's extra gain

#: The question kinds, in a fixed order.
AUDIO_KINDS: tuple[str, ...] = ("count", "pitch", "yesno")
#: The default mix of question kinds in training (probabilities summing to 1).
AUDIO_KIND_WEIGHTS: dict[str, float] = {"count": 0.4, "pitch": 0.25, "yesno": 0.35}
#: The question templates (keep verbatim: the shipped model was trained on these).
AUDIO_QUESTIONS: dict[str, str] = {
    "count": "How many beeps are there?",
    "pitch": "Is the tone high or low?",
    "yesno": "Is there a {band} tone?",
}
#: The answer templates.
AUDIO_ANSWERS: dict[str, str] = {
    "count": "There are {n} beeps.",
    "count_one": "There is 1 beep.",
    "pitch": "The tone is {band}.",
    "yes": "Yes.",
    "no": "No.",
}


@dataclass(frozen=True)
class Clip:
    """One generated clip: ``wave`` (float32, mono, ``SAMPLE_RATE`` Hz, in [-1, 1]) and what it contains.

    onsets and durations in seconds; frequency in Hz; band "low" or "high"; noise_std the background noise's
    standard deviation in [-1, 1] units.
    """

    wave: np.ndarray
    n_beeps: int
    band: str
    frequency: float
    onsets: tuple[float, ...]
    durations: tuple[float, ...]
    noise_std: float

    @property
    def sample_rate(self) -> int:
        """Always :data:`SAMPLE_RATE`."""
        return SAMPLE_RATE


@dataclass(frozen=True)
class AudioExample:
    """A clip, one question about it (of ``kind``) and the exact expected answer."""

    clip: Clip
    kind: str
    question: str
    answer: str


def count_answer(n: int) -> str:
    """The exact answer to the count question for ``n`` beeps."""
    return AUDIO_ANSWERS["count_one"] if n == 1 else AUDIO_ANSWERS["count"].format(n=n)


def make_clip(rng: np.random.Generator, n_beeps: int | None = None, band: str | None = None) -> Clip:
    """Draw one clip from ``rng`` following the module's rules; ``n_beeps`` (1-4) and ``band`` ("low" or "high")
    are drawn uniformly unless given."""
    n = int(rng.integers(1, MAX_BEEPS + 1)) if n_beeps is None else int(n_beeps)
    if not 1 <= n <= MAX_BEEPS:
        raise ValueError(f"n_beeps must be 1-{MAX_BEEPS}, got {n_beeps}")
    band = str(rng.choice(("low", "high"))) if band is None else band
    if band not in BANDS:
        raise ValueError(f"band must be 'low' or 'high', got {band!r}")
    frequency = float(rng.uniform(*BANDS[band]))
    durations = rng.uniform(*_BEEP_S, size=n)
    slack = CLIP_SECONDS - durations.sum() - (n - 1) * _GAP_S - 2 * _EDGE_S
    shares = rng.dirichlet(np.ones(n + 1)) * slack  # the free time, split at random over the n + 1 gaps
    onsets, t = [], _EDGE_S + shares[0]
    for i in range(n):
        onsets.append(t)
        t += durations[i] + _GAP_S + shares[i + 1]
    amplitude = float(rng.uniform(*_AMPLITUDE))
    scales = rng.uniform(*_BEEP_SCALE, size=n)
    phase = rng.uniform(0, 2 * np.pi, size=n)
    total = int(np.rint(CLIP_SECONDS * SAMPLE_RATE))
    signal = np.zeros(total, dtype=np.float64)
    fade = int(_FADE_S * SAMPLE_RATE)
    for onset, duration, scale, ph in zip(onsets, durations, scales, phase, strict=True):
        start, length = int(np.rint(onset * SAMPLE_RATE)), int(np.rint(duration * SAMPLE_RATE))
        k = np.arange(length)
        envelope = np.ones(length)
        ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(fade) / fade)
        envelope[:fade], envelope[-fade:] = ramp, ramp[::-1]
        signal[start:start + length] += amplitude * scale * envelope * np.sin(
            2 * np.pi * frequency * k / SAMPLE_RATE + ph)
    noise_std = float(np.sqrt(np.mean(signal**2) / 10 ** (SNR_DB / 10)))
    wave = np.clip(signal + rng.normal(0.0, noise_std, total), -1.0, 1.0).astype(np.float32)
    return Clip(wave, n, band, frequency, tuple(float(o) for o in onsets), tuple(float(d) for d in durations),
                noise_std)


def make_audio_example(rng: np.random.Generator, kind: str | None = None, clip: Clip | None = None) -> AudioExample:
    """A clip (drawn from ``rng`` unless given) and one question of ``kind`` (drawn with
    :data:`AUDIO_KIND_WEIGHTS` unless given) with its exact answer."""
    if kind is None:
        kinds, weights = zip(*AUDIO_KIND_WEIGHTS.items(), strict=True)
        kind = str(rng.choice(kinds, p=np.asarray(weights) / sum(weights)))
    if kind not in AUDIO_KINDS:
        raise ValueError(f"unknown question kind {kind!r}; choose one of {AUDIO_KINDS}")
    clip = make_clip(rng) if clip is None else clip
    if kind == "count":
        return AudioExample(clip, kind, AUDIO_QUESTIONS["count"], count_answer(clip.n_beeps))
    if kind == "pitch":
        return AudioExample(clip, kind, AUDIO_QUESTIONS["pitch"], AUDIO_ANSWERS["pitch"].format(band=clip.band))
    asked = str(rng.choice(("low", "high")))
    answer = AUDIO_ANSWERS["yes"] if asked == clip.band else AUDIO_ANSWERS["no"]
    return AudioExample(clip, kind, AUDIO_QUESTIONS["yesno"].format(band=asked), answer)


def audio_texts() -> list[str]:
    """Every question and answer of the task (the tokenizer's training text)."""
    texts = [AUDIO_QUESTIONS["count"], AUDIO_QUESTIONS["pitch"]]
    texts += [AUDIO_QUESTIONS["yesno"].format(band=b) for b in BANDS]
    texts += [count_answer(n) for n in range(1, MAX_BEEPS + 1)]
    texts += [AUDIO_ANSWERS["pitch"].format(band=b) for b in BANDS] + [AUDIO_ANSWERS["yes"], AUDIO_ANSWERS["no"]]
    return texts
