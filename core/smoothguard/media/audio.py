"""Audio codecs: arrays of any common sample type to canonical float32, and RIFF WAV both ways.

WAV samples are read and written by ``scipy.io.wavfile``. Around it stay a walk over the chunk headers (the bit
depth scipy does not report, the limits checked before decoding, our errors; see :func:`_wav_header`) and a
writer for 24-bit PCM, which scipy does not write (:func:`_pcm24_wav`).
"""

from __future__ import annotations

import io
import math
import struct
import threading
import warnings
from typing import Any

import numpy as np

from smoothguard.errors import MediaError

# WAV sample formats: subtype -> (format code, bits per sample). PCM is scaled by 2**(bits-1) both
# ways (clipped at the top), so WAV -> Media -> WAV is bit-exact for pcm8/16/24 and float.
_WAV_SUBTYPES = {"pcm8": (1, 8), "pcm16": (1, 16), "pcm24": (1, 24), "pcm32": (1, 32),
                 "float32": (3, 32), "float64": (3, 64)}
_WAV_CODE_NAMES = {0x0002: "MS ADPCM", 0x0006: "A-law", 0x0007: "mu-law", 0x0011: "IMA ADPCM",
                   0x0031: "GSM 6.10", 0x0050: "MPEG", 0x0055: "MP3", 0x00FF: "AAC"}
WAV_FORMATS = ("wav", "wave", "x-wav")  # what WAV is named as an ``input_audio`` format
WAV_MIMES = ("audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave")  # what WAV is served as
MAX_CHANNELS = 8
MIN_RATE, MAX_RATE = 1000, 384_000  # sample rates accepted, in Hz


# ---------------------------------------------------------------------------- audio


def require_rate(rate: Any) -> int:
    if rate is None:
        raise MediaError("sample_rate is required for audio arrays and tensors, e.g. "
                         "Media.audio(x, sample_rate=16000)")
    return check_rate(rate)


def check_rate(rate: Any) -> int:
    if isinstance(rate, bool) or not isinstance(rate, int | np.integer) or rate <= 0:
        raise MediaError(f"sample_rate must be a positive int in Hz, got {rate!r}")
    if not MIN_RATE <= rate <= MAX_RATE:
        raise MediaError(f"sample_rate {rate} Hz is outside [{MIN_RATE}, {MAX_RATE}]; is it really in Hz?")
    return int(rate)


def to_mono_at(media: Any, rate: int) -> np.ndarray:
    """The clip of ``media`` (an audio :class:`~smoothguard.Media`) as a 1-D float32 waveform at ``rate`` Hz.

    Channels are averaged (the mix to mono of Whisper's and Qwen2-Audio's feature extractors), then the mono
    wave is resampled by ``scipy.signal.resample_poly`` (polyphase, Kaiser-windowed low-pass) and clipped to
    [-1, 1]. A clip that is already mono at ``rate`` is returned as its own (read-only) data, not copied.
    """
    wave = media.data if media.data.ndim == 1 else media.data.mean(axis=1, dtype=np.float32)
    source = int(media.sample_rate or rate)
    if source != rate:
        from scipy.signal import resample_poly

        g = math.gcd(source, rate)
        wave = resample_poly(wave, rate // g, source // g).astype(np.float32, copy=False)
        np.clip(wave, -1.0, 1.0, out=wave)
    return np.asarray(wave, dtype=np.float32)


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
    """A RIFF WAV file of canonical audio ``data`` at ``rate`` Hz in ``subtype``: ``scipy.io.wavfile.write``,
    except pcm24, which scipy does not write (:func:`_pcm24_wav`). PCM is ``rint(x * 2**(bits-1))``, clipped."""
    frames = data.reshape(data.shape[0], -1)
    if subtype == "pcm24":
        return _pcm24_wav(frames, rate)
    from scipy.io import wavfile  # 0.1 s to import: not at `import smoothguard`

    code, bits = _WAV_SUBTYPES[subtype]
    if code == 3:
        samples = frames.astype(f"<f{bits // 8}")
    elif bits == 8:
        samples = (pcm(frames, 8) + 128).astype(np.uint8)  # 8-bit WAV is unsigned
    else:
        samples = pcm(frames, bits).astype(f"<i{bits // 8}")
    buf = io.BytesIO()
    wavfile.write(buf, rate, samples)
    if buf.getbuffer().nbytes % 2:  # odd pcm8 data: RIFF wants a pad byte after it, which scipy leaves out
        buf.seek(0, io.SEEK_END)
        buf.write(b"\0")
        buf.seek(4)
        buf.write(struct.pack("<I", buf.getbuffer().nbytes - 8))
    return buf.getvalue()


def _pcm24_wav(frames: np.ndarray, rate: int) -> bytes:
    """24-bit PCM WAV of (frames, channels) data: scipy's 44-byte PCM header and each sample's low three bytes.

    scipy writes no 24-bit PCM. Writing a 24-bit clip's copies as pcm32 instead would be lossless, but a third
    larger on every copy sent upstream, and neither in kind (remote copies keep the source format) nor what
    ``to_wav_bytes("pcm24")`` asks for; so this one subtype keeps its own few lines.
    """
    channels = frames.shape[1]
    payload = pcm(frames, 24).astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    pad = len(payload) & 1
    header = struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + len(payload) + pad, b"WAVE", b"fmt ", 16, 1, channels,
                         rate, rate * 3 * channels, 3 * channels, 24, b"data", len(payload))
    return header + payload + b"\0" * pad


def _sniff_audio(raw: bytes) -> str | None:
    if raw[:3] == b"ID3" or raw[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "MP3"
    names = {b"OggS": "Ogg", b"fLaC": "FLAC", b"RF64": "RF64 WAV", b"RIFX": "big-endian RIFX WAV"}
    if raw[:4] in names:
        return names[raw[:4]]
    return "MP4/M4A" if raw[4:8] == b"ftyp" else None


def decode_wav(raw: bytes, max_bytes: int, max_seconds: float) -> tuple[np.ndarray, int, str]:
    """Decode a RIFF WAV file: (canonical data, sample rate in Hz, subtype). The header is checked first
    (:func:`_wav_header`), so nothing is decoded past a limit; the samples are ``scipy.io.wavfile.read``'s."""
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
        subtype, rate, frames = _wav_header(raw)
        check_duration(frames, rate, max_seconds)
        samples = _wav_samples(raw)
    except MediaError:
        raise
    except Exception as exc:  # what scipy's own checks refuse: its message, never its traceback
        raise MediaError(f"could not decode WAV bytes ({n} bytes): {exc}; convert the file to PCM or float "
                         "WAV (e.g. ffmpeg -i in.wav -c:a pcm_s16le out.wav)") from None
    if samples.shape[0] != frames:
        raise MediaError(f"could not decode WAV bytes ({n} bytes): its header promises {frames} frames, the "
                         f"decoder found {samples.shape[0]}")
    return _audio_values(samples), rate, subtype


def _wav_header(raw: bytes) -> tuple[str, int, int]:
    """(subtype, sample rate in Hz, frames) from the chunk headers of a RIFF WAV, before any sample is decoded.

    Why this walk remains beside ``scipy.io.wavfile.read``: scipy returns 24-bit PCM as left-justified int32, the
    same as 32-bit, so the bit depth (to write the copies back in kind) must come from the 'fmt ' chunk; it reads
    a data chunk that claims more bytes than follow (a truncated download) without a word; it names a refused
    format only by an enum name; and a clip's channels, rate and duration are checked here before anything is
    decoded. It also refuses what scipy would fail on with an opaque error (0 channels, a partial last frame, a
    RIFF size that ends before the data).
    """
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
            code, channels, rate, bits = fmt
            block = channels * bits // 8
            if size % block:
                raise MediaError(f"WAV data chunk is {size} bytes, not a whole number of {block}-byte frames; "
                                 "the file is damaged: re-save it with a WAV writer")
            if struct.unpack_from("<I", raw, 4)[0] + 8 <= pos:
                raise MediaError("WAV header's RIFF size ends before its data chunk (the writer never finished "
                                 "the file): re-save it with a WAV writer")
            if size == 0:
                raise MediaError("WAV file has 0 samples")
            return f"float{bits}" if code == 3 else f"pcm{bits}", rate, size // block
        pos = start + size + (size & 1)  # chunks are padded to even length
    raise MediaError("WAV file has no 'data' chunk" if fmt else "WAV file has no 'fmt ' chunk")


def _parse_fmt(body: bytes) -> tuple[int, int, int, int]:
    """(format code, channels, rate in Hz, bits per sample) of a 'fmt ' chunk body, checked."""
    if len(body) < 16:
        raise MediaError(f"WAV 'fmt ' chunk is {len(body)} bytes, need at least 16")
    code, channels, rate, byte_rate, block, bits = struct.unpack_from("<HHIIHH", body)
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
    if not MIN_RATE <= rate <= MAX_RATE:
        raise MediaError(f"WAV sample rate {rate} Hz is outside [{MIN_RATE}, {MAX_RATE}]")
    want = channels * bits // 8
    if block != want or (code == 1 and byte_rate != rate * want):  # scipy refuses (PCM) or misreads these
        raise MediaError(f"WAV 'fmt ' chunk is inconsistent: {channels} channels of {bits} bits at {rate} Hz "
                         f"need a block align of {want} and {rate * want} bytes/s, the header says {block} and "
                         f"{byte_rate}; re-save the file with a WAV writer")
    return code, channels, rate, bits


_WARNINGS_LOCK = threading.Lock()


def _wav_samples(raw: bytes) -> np.ndarray:
    """The samples as ``scipy.io.wavfile.read`` returns them (24-bit as left-justified int32, which
    :func:`_audio_values` scales by 2**-31 to the same values as 24-bit by 2**-23).

    Its ``WavFileWarning`` (a chunk it does not know, such as 'bext', 'cue ' or 'smpl'; a RIFF size past the end)
    is silenced: the header walk has already refused what matters. ``catch_warnings`` swaps the process-wide filter
    list, so decodes take a lock and never undo each other's filters (another library's own ``catch_warnings`` in
    another thread at that moment can still interleave: a limit of Python's warnings, not ours to fix).
    """
    from scipy.io import wavfile

    with _WARNINGS_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", wavfile.WavFileWarning)
        return wavfile.read(io.BytesIO(raw))[1]
