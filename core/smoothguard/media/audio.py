"""Audio codecs: arrays of any common sample type to canonical float32, and RIFF WAV both ways.

WAV stays hand-parsed: ``scipy.io.wavfile`` returns 24-bit PCM as left-justified int32 without saying the file
was 24-bit (so a clip could not be written back in kind), writes no 24-bit PCM, and cannot check a clip's duration
before it decodes all of it; the parser here is the header walk those three need plus one ``np.frombuffer``.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from smoothguard.errors import MediaError

# WAV sample formats: subtype -> (format code, bits per sample). PCM is scaled by 2**(bits-1) both
# ways (clipped at the top), so WAV -> Media -> WAV is bit-exact for pcm8/16/24 and float.
_WAV_SUBTYPES = {"pcm8": (1, 8), "pcm16": (1, 16), "pcm24": (1, 24), "pcm32": (1, 32),
                 "float32": (3, 32), "float64": (3, 64)}
_WAV_CODE_NAMES = {0x0002: "MS ADPCM", 0x0006: "A-law", 0x0007: "mu-law", 0x0011: "IMA ADPCM",
                   0x0031: "GSM 6.10", 0x0050: "MPEG", 0x0055: "MP3", 0x00FF: "AAC"}
WAV_MIMES = ("audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave")  # what WAV is served as
MAX_CHANNELS = 8
_MIN_RATE, _MAX_RATE = 1000, 384_000


# ---------------------------------------------------------------------------- audio


def require_rate(rate: Any) -> int:
    if rate is None:
        raise MediaError("sample_rate is required for audio arrays and tensors, e.g. "
                         "Media.audio(x, sample_rate=16000)")
    return check_rate(rate)


def check_rate(rate: Any) -> int:
    if isinstance(rate, bool) or not isinstance(rate, int | np.integer) or rate <= 0:
        raise MediaError(f"sample_rate must be a positive int in Hz, got {rate!r}")
    if not _MIN_RATE <= rate <= _MAX_RATE:
        raise MediaError(f"sample_rate {rate} Hz is outside [{_MIN_RATE}, {_MAX_RATE}]; is it really in Hz?")
    return int(rate)


def check_subtype(subtype: str | None) -> str:
    if subtype not in _WAV_SUBTYPES:
        raise MediaError(f"unknown WAV subtype {subtype!r}; choose one of {list(_WAV_SUBTYPES)}")
    return subtype


def check_duration(frames: int, rate: int, max_seconds: float) -> None:
    if frames / rate > max_seconds:
        raise MediaError(f"audio is {frames / rate:.1f} s long, over max_seconds={max_seconds}")


def audio_from_array(arr: np.ndarray) -> np.ndarray:
    """Canonical float32 (frames,) or (frames, channels) data; the smaller 2-D axis is channels."""
    if arr.ndim not in (1, 2):
        raise MediaError(f"audio arrays must be (frames,) or 2-D (frames, channels), got shape {arr.shape}")
    if arr.size == 0:
        raise MediaError(f"audio array has no samples (shape {arr.shape})")
    if arr.ndim == 2:
        if arr.shape[1] > arr.shape[0]:
            arr = arr.T  # (channels, frames) -> (frames, channels)
        if arr.shape[1] > MAX_CHANNELS:
            raise MediaError(f"audio has {arr.shape[1]} channels (shape {arr.shape}); at most "
                             f"{MAX_CHANNELS} are supported (the smaller axis is taken as channels)")
        if arr.shape[1] == 1:
            arr = arr[:, 0]
    return _audio_values(arr)


_AUDIO_INT_SCALES = {np.dtype(np.int16): (0, 2.0**-15), np.dtype(np.int32): (0, 2.0**-31),
                     np.dtype(np.uint8): (128, 2.0**-7), np.dtype(np.int8): (0, 2.0**-7)}


def _audio_values(arr: np.ndarray) -> np.ndarray:
    """Samples scaled to a new C-ordered float32 array in [-1, 1] (same shape)."""
    dt = arr.dtype
    if dt.kind == "f":
        if not np.isfinite(arr).all():
            raise MediaError("float audio values must be finite (found NaN or inf)")
        peak = float(np.abs(arr).max())
        if peak > 1:
            raise MediaError(f"float audio values must lie in [-1, 1] (got peak {peak}): normalise "
                             "first, e.g. divide int16-range floats by 32768")
        return np.array(arr, dtype=np.float32, order="C")
    native = dt.newbyteorder("=")
    if native not in _AUDIO_INT_SCALES:
        raise MediaError(f"unsupported audio dtype {dt}; pass float in [-1, 1], int16, int32, uint8 or int8")
    offset, scale = _AUDIO_INT_SCALES[native]
    x = np.array(arr, dtype=np.float32, order="C")
    if offset:
        x -= np.float32(offset)
    x *= np.float32(scale)  # a power of two: exact
    return x


def pcm(data: np.ndarray, bits: int) -> np.ndarray:
    """Signed PCM integers (as int64) of float data: rint(x * 2**(bits-1)), clipped to the range."""
    full = 2 ** (bits - 1)
    return np.clip(np.rint(data.astype(np.float64) * full), -full, full - 1).astype(np.int64)


def encode_wav(data: np.ndarray, rate: int, subtype: str) -> bytes:
    """A RIFF WAV file of canonical audio data."""
    code, bits = _WAV_SUBTYPES[subtype]
    frames = data.reshape(data.shape[0], -1)
    channels = frames.shape[1]
    if subtype == "float32":
        payload = frames.astype("<f4").tobytes()
    elif subtype == "float64":
        payload = frames.astype("<f8").tobytes()
    elif bits == 8:
        payload = (pcm(frames, 8) + 128).astype(np.uint8).tobytes()
    elif bits == 24:
        payload = pcm(frames, 24).astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    else:
        payload = pcm(frames, bits).astype(f"<i{bits // 8}").tobytes()
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", code, channels, rate, rate * block, block, bits)
    chunks = [b"fmt ", struct.pack("<I", len(fmt)), fmt]
    if code == 3:  # non-PCM: cbSize = 0 and a 'fact' chunk with the frame count
        fmt += struct.pack("<H", 0)
        chunks = [b"fmt ", struct.pack("<I", len(fmt)), fmt, b"fact", struct.pack("<II", 4, len(frames))]
    chunks += [b"data", struct.pack("<I", len(payload)), payload, b"\0" * (len(payload) & 1)]
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _sniff_audio(raw: bytes) -> str | None:
    if raw[:3] == b"ID3" or raw[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "MP3"
    names = {b"OggS": "Ogg", b"fLaC": "FLAC", b"RF64": "RF64 WAV", b"RIFX": "big-endian RIFX WAV"}
    if raw[:4] in names:
        return names[raw[:4]]
    return "MP4/M4A" if raw[4:8] == b"ftyp" else None


def decode_wav(raw: bytes, max_bytes: int, max_seconds: float) -> tuple[np.ndarray, int, str]:
    """Parse a RIFF WAV file: (canonical data, sample rate in Hz, subtype)."""
    n = len(raw)
    if n == 0:
        raise MediaError("could not decode audio bytes (0 bytes): the input is empty")
    if n > max_bytes:
        raise MediaError(f"audio is {n} bytes, over max_bytes={max_bytes}")
    if n < 12 or raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
        found = _sniff_audio(raw)
        what = f"got {found} data" if found else "the bytes are not a RIFF/WAVE file"
        raise MediaError(f"only WAV audio is supported ({what}); decode it first, e.g. to a float "
                         "array, and pass Media.audio(array, sample_rate)")
    try:
        return _parse_wav_chunks(raw, max_seconds)
    except MediaError:
        raise
    except Exception as exc:
        raise MediaError(f"could not decode WAV bytes ({n} bytes): {exc}") from exc


def _parse_wav_chunks(raw: bytes, max_seconds: float) -> tuple[np.ndarray, int, str]:
    fmt: tuple[int, int, int, int] | None = None  # (code, channels, rate, bits)
    pos = 12
    while pos + 8 <= len(raw):
        cid, size = raw[pos:pos + 4], struct.unpack_from("<I", raw, pos + 4)[0]
        start = pos + 8
        if cid == b"fmt ":
            fmt = _parse_fmt(raw[start:start + size])
        elif cid == b"data":
            if fmt is None:
                raise MediaError("WAV 'data' chunk comes before its 'fmt ' chunk")
            if start + size > len(raw):
                raise MediaError(f"WAV file is truncated: the data chunk claims {size} bytes but only "
                                 f"{len(raw) - start} follow")
            return _wav_samples(raw[start:start + size], *fmt, max_seconds)
        pos = start + size + (size & 1)  # chunks are padded to even length
    raise MediaError("WAV file has no 'data' chunk" if fmt else "WAV file has no 'fmt ' chunk")


def _parse_fmt(body: bytes) -> tuple[int, int, int, int]:
    if len(body) < 16:
        raise MediaError(f"WAV 'fmt ' chunk is {len(body)} bytes, need at least 16")
    code, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", body)
    if code == 0xFFFE:  # WAVE_FORMAT_EXTENSIBLE: the real code opens the sub-format GUID
        if len(body) < 40:
            raise MediaError("WAV extensible 'fmt ' chunk is too short for its sub-format")
        code = struct.unpack_from("<H", body, 24)[0]
    if (code, bits) not in {(1, 8), (1, 16), (1, 24), (1, 32), (3, 32), (3, 64)}:
        if code in (1, 3):
            raise MediaError(f"unsupported WAV sample size: {bits}-bit {'PCM' if code == 1 else 'float'}")
        name = _WAV_CODE_NAMES.get(code, "unknown")
        raise MediaError(f"unsupported WAV format code 0x{code:04X} ({name}); only PCM (1) and IEEE "
                         "float (3) are read: convert the file to PCM or float WAV first")
    if not 1 <= channels <= MAX_CHANNELS:
        raise MediaError(f"WAV file has {channels} channels; 1 to {MAX_CHANNELS} are supported")
    if not _MIN_RATE <= rate <= _MAX_RATE:
        raise MediaError(f"WAV sample rate {rate} Hz is outside [{_MIN_RATE}, {_MAX_RATE}]")
    return code, channels, rate, bits


def _wav_samples(body: bytes, code: int, channels: int, rate: int, bits: int,
                 max_seconds: float) -> tuple[np.ndarray, int, str]:
    width = bits // 8
    frames = len(body) // (width * channels)  # a trailing partial frame is dropped
    if frames == 0:
        raise MediaError("WAV file has 0 samples")
    check_duration(frames, rate, max_seconds)
    count = frames * channels
    if code == 3:
        x = np.frombuffer(body, dtype=f"<f{width}", count=count)
        subtype = f"float{bits}"
    elif bits == 24:
        b = np.frombuffer(body, dtype=np.uint8, count=count * 3).reshape(-1, 3).astype(np.int32)
        ints = (b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) << 8 >> 8  # sign-extend 24 -> 32 bits
        x = ints.astype(np.float32) * np.float32(2.0**-23)
        subtype = "pcm24"
    else:
        x = np.frombuffer(body, dtype="<u1" if bits == 8 else f"<i{width}", count=count)
        subtype = f"pcm{bits}"
    data = _audio_values(x.reshape(frames, channels))
    return (data[:, 0].copy() if channels == 1 else data), rate, subtype


