"""``audio_resample``: what bringing a clip to 16 kHz mono costs, and how much noise a 16 kHz mono model hears.

For clips of ``--seconds`` (default 60) at 8, 16, 44.1 and 48 kHz, mono and stereo (two tones, pcm16):

* ``to_mono_at ms``: :func:`smoothguard.media.audio.to_mono_at` to 16 kHz (the mix and ``resample_poly``), median
  of ``--repeats`` runs after a warm-up (scipy's one-off import not counted);
* ``perturb ms``: ``SmoothGuard(n_samples=11, audio_resample=16000).perturb([clip])``, the whole noise step (the
  resample once, then 10 noisy copies), against the same with ``"none"`` (10 copies at the source rate);
* ``heard 16000`` / ``heard none``: the std of (copy - original) after a 16 kHz mono model's own mix and
  ``resample_poly``, as a share of ``audio_sigma``, with the two settings; ``ideal none`` is
  ``1 / sqrt(channels * max(rate, 16000) / 16000)``.

Expectation written before measuring: the polyphase filter costs in proportion to the output length, so a minute
takes tens of ms whatever the source rate; the 16 kHz draws are cheaper than the source-rate ones for 44.1 and
48 kHz (a third of the samples, mono); ``heard 16000`` is 1.00 everywhere and ``heard none`` within a few percent
under ``ideal none`` (the resampler's low-pass starts a little under the new Nyquist).

    python benchmarks/bench_audio_resample.py [--seconds 60] [--repeats 5]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np
from scipy.signal import resample_poly

from smoothguard import Media, SmoothGuard
from smoothguard.audio_resample import kept_fraction
from smoothguard.media.audio import to_mono_at

SIGMA = 0.01


def clip(rate: int, channels: int, seconds: float) -> Media:
    t = np.arange(int(rate * seconds)) / rate
    tones = [0.3 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 660 * t + 1.0)]
    data = tones[0] if channels == 1 else np.stack(tones[:channels], axis=1)
    return Media.audio(data.astype(np.float32), sample_rate=rate)


def heard(media: Media) -> np.ndarray:
    wave = media.data.astype(np.float64)
    wave = wave if wave.ndim == 1 else wave.mean(axis=1)
    g = math.gcd(int(media.sample_rate), 16000)
    return resample_poly(wave, 16000 // g, int(media.sample_rate) // g)


def share_heard(variants: list[list[Media]]) -> float:
    original = heard(variants[0][0])
    return float(np.std(np.concatenate([(heard(v[0]) - original)[200:-200] for v in variants[1:4]]))) / SIGMA


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    at16 = SmoothGuard(audio_sigma=SIGMA, n_samples=11, seed=0, audio_resample=16000)
    none = SmoothGuard(audio_sigma=SIGMA, n_samples=11, seed=0, audio_resample="none")
    print(f"{args.seconds:g} s clips; medians of {args.repeats}")
    print("| rate Hz | ch | to_mono_at ms | perturb ms (16000) | perturb ms (none) | heard 16000 | heard none "
          "| ideal none |")
    print("|---|---|---|---|---|---|---|---|")
    for rate in (8000, 16000, 44100, 48000):
        for channels in (1, 2):
            source = clip(rate, channels, args.seconds)
            mono = median_ms(lambda s=source: to_mono_at(s, 16000), args.repeats)
            p16 = median_ms(lambda s=source: at16.perturb([s]), args.repeats)
            pnone = median_ms(lambda s=source: none.perturb([s]), args.repeats)
            short = clip(rate, channels, min(args.seconds, 5.0))
            print(f"| {rate} | {channels} | {mono:.1f} | {p16:.1f} | {pnone:.1f} | "
                  f"{share_heard(at16.perturb([short], 4)):.3f} | {share_heard(none.perturb([short], 4)):.3f} | "
                  f"{kept_fraction(rate, channels):.3f} |")


if __name__ == "__main__":
    main()
