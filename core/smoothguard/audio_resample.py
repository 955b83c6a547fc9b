"""``audio_resample``: the rate a remote model listens at, so the audio noise is drawn there.

A speech model mixes a clip to mono and resamples it before it listens (Whisper and Qwen2-Audio at 16 kHz), and
both steps average away noise drawn before them: noise drawn on a clip of ``C`` channels at ``R`` Hz (``R`` at least
16 kHz) keeps about ``1 / sqrt(C * R / 16000)`` of its std at such a model (a 48 kHz stereo clip: 1/2.45, 41%). So
the guard mixes the clip to mono and resamples it to the model's rate first
(:func:`smoothguard.media.audio.to_mono_at`), draws the noise there, and sends every copy, the original included,
at that rate (WAV in the source's sample format); the N copies then differ only by the noise.

Values:

* an int: the rate in Hz (within the rates :mod:`smoothguard.media.audio` accepts) the clip is brought to, mono;
* ``"none"``: the source rate and channels (a model that resamples hears weaker noise; the result's notes say so
  for a stereo clip or one above 16 kHz);
* ``"auto"``: chosen by :func:`auto_rate` from the wrapped model (fan-out adapters, the proxy): 16000 for a model
  whose name says qwen2-audio, qwen2.5-omni or whisper, else ``"none"``. In-process backends add the noise after
  their own feature extractor's mix and resampling instead, whatever this setting says.
"""

from __future__ import annotations

import math
import numbers
import re
from typing import Any

from smoothguard.errors import ConfigError
from smoothguard.image_resize import model_name_of
from smoothguard.media.audio import MAX_RATE, MIN_RATE

__all__ = ["LISTENING_RATE", "NAMED_RULES", "AudioResample", "auto_rate", "check_resample", "kept_fraction",
           "parse_resample", "rate_for_model", "source_rate_note", "target_rate"]

AudioResample = str | int
NAMED_RULES = ("auto", "none")
#: the rate Whisper's and Qwen2-Audio's feature extractors resample to, in Hz
LISTENING_RATE = 16000
_LISTENS_AT_16K = re.compile(r"qwen2[-_ ]?audio|qwen2\.?5[-_ ]?omni|whisper", re.IGNORECASE)


def check_resample(value: Any) -> AudioResample:
    """``value`` as a valid ``audio_resample``; :class:`ConfigError` saying what is allowed."""
    if isinstance(value, str) and value in NAMED_RULES:
        return value
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and MIN_RATE <= value <= MAX_RATE:
        return int(value)
    raise ConfigError(f"audio_resample must be 'auto', 'none' or a sample rate in Hz (an int in [{MIN_RATE}, "
                      f"{MAX_RATE}], e.g. 16000 for Qwen2-Audio and Whisper); got {value!r}")


def parse_resample(text: str) -> AudioResample:
    """A value from command-line text: ``"auto"``, ``"none"`` or a rate such as ``"16000"``."""
    text = text.strip().lower()
    return check_resample(int(text) if text.isdigit() else text)


def auto_rate(model_name: str | None) -> int | None:
    """The rate ``"auto"`` means for a model of this name: 16000 (Hz) for Qwen2-Audio, Qwen2.5-Omni and
    Whisper-based models, else None (the clip keeps its rate)."""
    return LISTENING_RATE if model_name and _LISTENS_AT_16K.search(model_name) else None


def rate_for_model(model: Any) -> int | None:
    """:func:`auto_rate` for a framework's client object, named by its ``model_name``, ``model`` or ``model_id``."""
    return auto_rate(model_name_of(model))


def target_rate(rule: AudioResample, auto: int | None) -> int | None:
    """The rate in Hz a clip is brought to (mono) under ``rule``, ``"auto"`` read as ``auto``; None: as it is."""
    if rule == "auto":
        return auto
    return None if rule == "none" else int(rule)


def kept_fraction(rate: int, channels: int, listening_rate: int = LISTENING_RATE) -> float:
    """The share of a noise std drawn on ``channels`` independent channels at ``rate`` Hz that is left after a
    mix to mono (``1 / sqrt(channels)``) and a resampling to ``listening_rate`` Hz (``sqrt(listening / rate)`` when
    it lowers the rate; raising it keeps the noise)."""
    return 1.0 / math.sqrt(channels * max(rate, listening_rate) / listening_rate)


def source_rate_note(k: int, rate: int, channels: int, setting: AudioResample) -> str | None:
    """The result's note for clip ``k`` whose noise was drawn at its source ``rate`` (Hz) and ``channels``, when a
    model that listens at 16 kHz mono would keep less of it; None when it would keep it all."""
    fraction = kept_fraction(rate, channels)
    if fraction >= 1.0:
        return None
    layout = {1: "mono", 2: "stereo"}.get(channels, f"{channels} channels")
    return (f"audio {k}: noise drawn at its source rate, {rate} Hz {layout} (audio_resample={setting!r}); a model "
            f"that mixes to mono and resamples (e.g. Qwen2-Audio or Whisper, to 16 kHz) keeps about "
            f"1/sqrt(channels x rate / 16000) = 1/{1 / fraction:.2f} = {fraction:.0%} of it; set audio_resample to "
            f"the rate the model listens at (e.g. 16000)")
