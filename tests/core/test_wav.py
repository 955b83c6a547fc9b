"""The WAV codec on scipy.io.wavfile: what the header walk adds around it, warnings kept in, writers in kind.

Files here are written by hand with struct or by the standard library's ``wave`` (independent of the codec);
the formats and errors that were already covered before the switch stay in test_media.py.
"""

from __future__ import annotations

import io
import struct
import sys
import threading
import time
import traceback
import warnings
import wave

import numpy as np
import pytest
from scipy.io import wavfile

from smoothguard import Media
from smoothguard.errors import MediaError
from smoothguard.media.audio import decode_wav, encode_wav

RNG = np.random.default_rng(16)
LIMITS = (50 << 20, 600.0)  # max_bytes, max_seconds


def chunk(cid: bytes, body: bytes) -> bytes:
    return cid + struct.pack("<I", len(body)) + body + b"\0" * (len(body) & 1)


def riff(*chunks: bytes, size: int | None = None, tail: bytes = b"") -> bytes:
    """A RIFF WAV of ``chunks`` then ``tail`` (stray bytes, counted in the RIFF size unless ``size`` is given)."""
    body = b"WAVE" + b"".join(chunks) + tail
    return b"RIFF" + struct.pack("<I", len(body) if size is None else size) + body


def fmt(code: int = 1, channels: int = 1, rate: int = 16000, bits: int = 16, *, block: int | None = None,
        byte_rate: int | None = None) -> bytes:
    block = channels * bits // 8 if block is None else block
    return chunk(b"fmt ", struct.pack("<HHIIHH", code, channels, rate, rate * block if byte_rate is None else byte_rate,
                                      block, bits))


def stdlib_wav(ints: np.ndarray, width: int, rate: int = 48000) -> bytes:
    """A PCM WAV written by the standard library (``width`` bytes per sample, signed ints in range)."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(ints.shape[1])
        w.setsampwidth(width)
        w.setframerate(rate)
        little = ints.astype("<i4").view(np.uint8).reshape(*ints.shape, 4)[..., :width]
        w.writeframes((little + 128 if width == 1 else little).astype(np.uint8).tobytes())
    return buf.getvalue()


TONE = (0.5 * np.sin(np.arange(200) / 7)).astype(np.float32)
PCM16 = np.rint(TONE * 32768).astype("<i2").tobytes()


# ---------------------------------------------------------------------------- 24-bit


def test_pcm24_read_through_scipy_is_bit_exact_and_written_back_as_24_bit() -> None:
    ints = RNG.integers(-(2**23), 2**23, (4801, 2))
    ints[:3] = [[-(2**23), 2**23 - 1], [1, -1], [0, 256]]
    raw = stdlib_wav(ints, 3)
    m = Media.audio(raw)
    assert (m.wav_subtype, m.sample_rate, m.data.shape) == ("pcm24", 48000, (4801, 2))
    assert np.array_equal(m.data, (ints / 2**23).astype(np.float32))  # every 24-bit value is exact in float32
    out = m.to_wav_bytes()
    assert out == raw  # the stdlib's 24-bit file, byte for byte: written in kind
    with wave.open(io.BytesIO(out)) as w:
        assert (w.getsampwidth(), w.getnchannels(), w.getnframes()) == (3, 2, 4801)
    rate, left_justified = wavfile.read(io.BytesIO(out))
    assert rate == 48000 and np.array_equal(left_justified >> 8, ints)  # scipy reads our 24-bit output too
    as32 = Media.audio(m.to_wav_bytes("pcm32"))  # pcm32 holds every 24-bit value too
    assert as32.wav_subtype == "pcm32" and np.array_equal(as32.data, m.data)


@pytest.mark.parametrize("width", [1, 2, 4])
def test_stdlib_pcm_files_read_exactly(width: int) -> None:
    bits = 8 * width
    ints = RNG.integers(-(2 ** (bits - 1)), 2 ** (bits - 1), (301, 3))
    m = Media.audio(stdlib_wav(ints, width))
    assert m.wav_subtype == f"pcm{bits}"
    assert np.array_equal(m.data, (ints.astype(np.float64) / 2 ** (bits - 1)).astype(np.float32))


# ---------------------------------------------------------------------------- chunks scipy warns about


@pytest.mark.parametrize(
    "raw",
    [
        riff(fmt(), chunk(b"LIST", b"INFOISFT\x05\0\0\0abcd\0"), chunk(b"data", PCM16)),
        riff(chunk(b"bext", b"x" * 603), fmt(), chunk(b"data", PCM16)),  # broadcast WAV: 'bext' before 'fmt '
        riff(fmt(), chunk(b"data", PCM16), chunk(b"cue ", b"\0" * 28), chunk(b"smpl", b"\0" * 36)),
        riff(fmt(), chunk(b"data", PCM16), size=0xFFFFFFFF),  # a streaming writer's RIFF size: past the end
        riff(fmt(), chunk(b"data", PCM16), tail=b"id3"),  # a stray partial chunk id after the data
    ],
    ids=["LIST", "bext", "cue-smpl-after-data", "riff-size-ffffffff", "partial-chunk-id"],
)
def test_unknown_chunks_read_and_no_warning_leaks(raw: bytes) -> None:
    before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")  # what would reach a user, even a once-only warning shown before
        m = Media.audio(raw)
    assert seen == [] and warnings.filters == before
    assert m.wav_subtype == "pcm16" and np.array_equal(m.data, np.frombuffer(PCM16, "<i2") / np.float32(32768))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an application that turns warnings into errors (pytest's -W error)
        assert Media.audio(raw) == m


def test_concurrent_decodes_leave_the_warning_filters_as_they_were() -> None:
    """``catch_warnings`` swaps process-wide state: unserialised, one decode's exit could put back a list that
    holds another's "ignore" (leaked for good) or drop a filter set meanwhile."""
    raw = riff(chunk(b"bext", b"x" * 64), fmt(), chunk(b"data", PCM16 * 2000))
    before, errors = list(warnings.filters), []
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible, inside the decodes too

    def decode() -> None:
        try:
            for _ in range(30):
                decode_wav(raw, *LIMITS)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    try:
        threads = [threading.Thread(target=decode) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == [] and warnings.filters == before


# ---------------------------------------------------------------------------- errors: ours, never scipy's


@pytest.mark.parametrize(
    ("raw", "pattern"),
    [
        (riff(fmt(code=7, bits=8), chunk(b"data", b"\0" * 8)), r"0x0007 \(mu-law\).*only PCM \(1\) and IEEE float"),
        (riff(fmt(code=6, bits=8), chunk(b"data", b"\0" * 8)), r"0x0006 \(A-law\)"),
        (riff(fmt(code=0x11, bits=4, block=256), chunk(b"data", b"\0" * 256)), r"0x0011 \(IMA ADPCM\)"),
        (riff(fmt(code=3, bits=16), chunk(b"data", b"\0" * 8)), "16-bit float"),
        (riff(fmt(byte_rate=5), chunk(b"data", PCM16)), r"inconsistent.*32000 bytes/s.*says 2 and 5.*re-save"),
        (riff(fmt(block=4), chunk(b"data", PCM16)), r"block align of 2.*says 4"),
        (riff(fmt(channels=2), chunk(b"data", b"\0" * 6)), "6 bytes, not a whole number of 4-byte frames"),
        (riff(fmt(), chunk(b"data", PCM16), size=0), "RIFF size ends before its data chunk"),
        (riff(chunk(b"data", PCM16), fmt()), "comes before its 'fmt ' chunk"),
        (riff(fmt(), chunk(b"data", PCM16))[:-1], "truncated"),
        (riff(fmt(), b"data" + struct.pack("<I", 0xFFFFFFFF) + PCM16), "truncated"),
        (riff(fmt(), chunk(b"data", PCM16), chunk(b"data", PCM16 * 2)), "promises 200 frames, the decoder found 400"),
        # extensible with a sub-format GUID outside the standard family: scipy's refusal, as ours
        (riff(chunk(b"fmt ", struct.pack("<HHIIHHHHIH", 0xFFFE, 1, 16000, 32000, 2, 16, 22, 16, 0, 1) + b"\x07" * 14),
              chunk(b"data", PCM16)), r"could not decode WAV bytes .*EXTENSIBLE.*convert the file to PCM"),
    ],
    ids=["mu-law", "a-law", "ima-adpcm", "float16", "byte-rate", "block-align", "partial-frame", "riff-size-0",
         "data-first", "truncated-by-one", "streamed-data-size", "second-data-chunk", "extensible-foreign-guid"],
)
def test_refused_with_our_error(raw: bytes, pattern: str) -> None:
    with pytest.raises(MediaError, match=pattern) as info:
        Media.audio(raw)
    printed = "".join(traceback.format_exception(info.value))
    assert "scipy" not in printed and "MediaError" in printed  # what a user sees: ours, no scipy traceback


def test_damaged_headers_raise_only_media_errors() -> None:
    good = [stdlib_wav(RNG.integers(-100, 100, (40, c)), w) for c in (1, 2) for w in (1, 2, 3, 4)]
    good.append(riff(chunk(b"LIST", b"abc"), fmt(code=3, bits=32), chunk(b"fact", b"\x64\0\0\0"),
                     chunk(b"data", np.zeros(100, "<f4").tobytes())))
    rng = np.random.default_rng(0)
    outcomes = {"ok": 0, "refused": 0}
    for i in range(1500):
        raw = bytearray(good[i % len(good)])
        for at in rng.integers(0, 64, rng.integers(1, 4)):
            raw[at % len(raw)] = int(rng.integers(0, 256))
        try:
            decode_wav(bytes(raw[: rng.integers(12, len(raw) + 1)] if i % 3 == 0 else raw), 1 << 20, 10.0)
            outcomes["ok"] += 1
        except MediaError:
            outcomes["refused"] += 1
    assert min(outcomes.values()) > 100, outcomes  # both paths were exercised


# ---------------------------------------------------------------------------- writers


@pytest.mark.parametrize(("subtype", "dtype"), [("pcm8", np.uint8), ("pcm16", np.int16), ("pcm32", np.int32),
                                                ("float32", np.float32), ("float64", np.float64)])
def test_writes_scipy_files(subtype: str, dtype: type) -> None:
    x = np.clip(RNG.normal(0, 0.4, (500, 2)), -1, 1).astype(np.float32)
    out = encode_wav(x, 22050, subtype)
    rate, samples = wavfile.read(io.BytesIO(out))
    assert rate == 22050 and samples.dtype == dtype and samples.shape == (500, 2)
    buf = io.BytesIO()
    wavfile.write(buf, 22050, samples)
    assert out == buf.getvalue()  # byte for byte what scipy writes
    assert Media.audio(out).wav_subtype == subtype


def test_odd_pcm8_data_gets_its_pad_byte() -> None:
    m = Media.audio(np.linspace(-1, 1, 101, dtype=np.float32), 8000)
    out = m.to_wav_bytes("pcm8")
    assert len(out) % 2 == 0 and struct.unpack_from("<I", out, 4)[0] == len(out) - 8 and out[-1:] == b"\0"
    with wave.open(io.BytesIO(out)) as w:
        assert (w.getsampwidth(), w.getnframes()) == (1, 101)
    back = Media.audio(out)
    assert back.n_frames == 101 and np.abs(back.data - m.data).max() <= 1 / 128


# ---------------------------------------------------------------------------- speed


@pytest.mark.parametrize("subtype", ["pcm16", "pcm24"])
def test_a_minute_of_48k_stereo_decodes_fast(subtype: str) -> None:
    x = np.clip(RNG.normal(0, 0.3, (60 * 48000, 2)), -1, 1).astype(np.float32)
    raw = encode_wav(x, 48000, subtype)
    decode_wav(raw, *LIMITS)  # scipy's import and first-call costs
    start = time.perf_counter()
    data, rate, got = decode_wav(raw, *LIMITS)
    elapsed = time.perf_counter() - start
    assert (data.shape, rate, got) == ((60 * 48000, 2), 48000, subtype)
    assert elapsed < 0.5, f"{elapsed:.3f} s"  # about 2 ms (pcm16) and 20 ms (pcm24) on a 2-core machine
