"""WAV decode and encode: the scipy.io.wavfile codec against the hand-written one it replaced.

The hand-written codec (``core/smoothguard/media/audio.py`` at git revision ``--baseline``, default 0440e25, the
last one before the switch) is loaded from git into this process beside the current one, and both decode and
encode the same clips: 60 s of 48 kHz stereo noise as pcm16, pcm24 and float32 (11.5, 17.3 and 23.0 MB), and
1 s of 16 kHz mono pcm16 (32 kB) for the fixed cost per clip. Each figure is the median of ``--repeats`` runs,
the two codecs called in turns, after a warm-up (so scipy's one-off import, 0.01-0.2 s, is not counted).

Expectation written before measuring: the decode cost is the conversion to float32, which both share
(``_audio_values``). scipy adds one copy of the data chunk (``BytesIO.read``, a few ms for 11 MB) where the
old code used ``np.frombuffer`` on the input bytes, so pcm16 should be slower by that copy (about 1.2x); for
pcm24 scipy widens through a zero-filled 4-byte array with a strided byte copy, against the old code's three
shifts and ors in int32, so roughly equal. Encoding writes the same bytes either way (scipy for all but
pcm24), so equal time.

    python benchmarks/bench_wav.py [--repeats 15] [--seconds 60] [--baseline 0440e25]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
import types
from functools import partial
from pathlib import Path

import numpy as np

from smoothguard.media import audio as current

ROOT = Path(__file__).resolve().parents[1]
LIMITS = (1 << 30, 3600.0)  # max_bytes, max_seconds: out of the way


def baseline_module(rev: str) -> types.ModuleType:
    """``smoothguard.media.audio`` as it was at git revision ``rev``."""
    src = subprocess.run(["git", "show", f"{rev}:core/smoothguard/media/audio.py"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    module = types.ModuleType("audio_baseline")
    exec(compile(src, f"audio.py@{rev}", "exec"), module.__dict__)
    return module


def median_ms(old_fn, new_fn, repeats: int) -> tuple[float, float]:
    """Median ms of each function, called in turns (old, new, old, ...) so a busy machine slows both alike."""
    old_fn(), new_fn()  # warm-up
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, out in ((old_fn, times[0]), (new_fn, times[1])):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return 1000 * statistics.median(times[0]), 1000 * statistics.median(times[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--baseline", default="0440e25", help="git revision of the hand-written codec")
    args = parser.parse_args()
    old = baseline_module(args.baseline)
    rate = 48_000
    rng = np.random.default_rng(0)
    data = np.clip(rng.normal(0, 0.3, (int(args.seconds * rate), 2)), -1, 1).astype(np.float32)

    print(f"{args.seconds:g} s, {rate} Hz stereo; median of {args.repeats} runs, ms (baseline {args.baseline})")
    print(f"| {'step':<16} | {'MB':>5} | {'hand-written':>12} | {'scipy':>8} | {'scipy / hand':>12} |")
    print(f"|{'-' * 18}|{'-' * 7}|{'-' * 14}|{'-' * 10}|{'-' * 14}|")
    short = np.ascontiguousarray(data[:16_000, 0])  # the fixed cost per clip: 1 s of mono at 16 kHz
    for subtype, clip in (("pcm16", data), ("pcm24", data), ("float32", data), ("pcm16", short)):
        raw = old.encode_wav(clip, rate, subtype)
        a, b = old.decode_wav(raw, *LIMITS), current.decode_wav(raw, *LIMITS)
        assert a[1:] == b[1:] and np.array_equal(a[0], b[0]), f"{subtype}: the two decoders disagree"
        assert current.encode_wav(b[0], rate, subtype) == old.encode_wav(a[0], rate, subtype), "encoders disagree"
        for name, step, step_args in (("decode", "decode_wav", (raw, *LIMITS)),
                                      ("encode", "encode_wav", (b[0], rate, subtype))):
            t_old, t_new = median_ms(partial(getattr(old, step), *step_args),
                                     partial(getattr(current, step), *step_args), args.repeats)
            name = f"{name} {subtype}" + (" 1 s" if clip is short else "")
            print(f"| {name:<16} | {len(raw) / 1e6:5.2f} | {t_old:12.3f} | {t_new:8.3f} | {t_new / t_old:11.2f}x |")


if __name__ == "__main__":
    main()
