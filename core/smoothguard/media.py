"""One image or one audio clip as an immutable value: decode almost anything, encode it back.

:class:`Media` turns PIL images, numpy arrays, torch tensors, encoded bytes, file paths and
``data:`` URLs into one canonical float32 array, and writes it back as PNG/JPEG/... or WAV.

* images: ``data`` has shape ``(H, W, 3)``, RGB, values in ``[0, 1]``; alpha is composited over
  a **white** background.
* audio: ``data`` has shape ``(frames,)`` (mono) or ``(frames, channels)``, values in ``[-1, 1]``,
  with ``sample_rate`` in Hz. Only WAV is decoded; decode other codecs yourself first.

Media never touches the network on its own: download with :func:`fetch`. torch is never imported
here; tensors are recognised by duck typing.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import struct
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageOps

from smoothguard.errors import MediaError

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_MAX_PIXELS", "DEFAULT_MAX_SECONDS", "Media", "fetch"]

DEFAULT_MAX_PIXELS = 25_000_000
"""Largest image accepted, in pixels (width * height); also ``GuardConfig.max_image_pixels``'s default."""
DEFAULT_MAX_BYTES = 50 * 1024 * 1024
"""Largest encoded input accepted, in bytes; also ``GuardConfig.max_media_bytes``'s default."""
DEFAULT_MAX_SECONDS = 600.0
"""Longest audio clip accepted, in seconds."""

Kind = Literal["image", "audio"]

# PIL format name -> our format name. MPO is what PIL calls a multi-picture (camera) JPEG.
_PIL_FORMATS = {"PNG": "png", "JPEG": "jpeg", "MPO": "jpeg", "WEBP": "webp", "GIF": "gif", "BMP": "bmp",
                "TIFF": "tiff"}
_PIL_OPENERS = ["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"]  # the JPEG opener also yields MPO
_IMAGE_MIME = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp", "gif": "image/gif",
               "bmp": "image/bmp", "tiff": "image/tiff"}
# Formats we can write; everything else (gif, pil, array, tensor) is written as PNG.
_IMAGE_WRITERS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP", "bmp": "BMP", "tiff": "TIFF"}
_IMAGE_ALIASES = {"jpg": "jpeg", "tif": "tiff"}
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
_LOSSY_QUALITY = 95  # JPEG/WebP quality: high, so the added noise survives re-encoding

# WAV sample formats: subtype -> (format code, bits per sample). PCM is scaled by 2**(bits-1) both
# ways (clipped at the top), so WAV -> Media -> WAV is bit-exact for pcm8/16/24 and float.
_WAV_SUBTYPES = {"pcm8": (1, 8), "pcm16": (1, 16), "pcm24": (1, 24), "pcm32": (1, 32),
                 "float32": (3, 32), "float64": (3, 64)}
_WAV_CODE_NAMES = {0x0002: "MS ADPCM", 0x0006: "A-law", 0x0007: "mu-law", 0x0011: "IMA ADPCM",
                   0x0031: "GSM 6.10", 0x0050: "MPEG", 0x0055: "MP3", 0x00FF: "AAC"}
_WAV_MIMES = ("audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave")
_MAX_CHANNELS = 8
_MIN_RATE, _MAX_RATE = 1000, 384_000

_IMAGE_INPUTS = "a PIL image, numpy array, torch tensor, bytes, file path, data: URL or Media"
_AUDIO_INPUTS = ("a numpy array or torch tensor (with sample_rate), WAV bytes, a file path, "
                 "a data: URL or a Media")


class Media:
    """One image or audio clip; immutable. Build it with :meth:`image` or :meth:`audio`.

    Attributes:
        kind: ``"image"`` or ``"audio"``.
        data: read-only float32 array. Images: ``(H, W, 3)`` RGB in ``[0, 1]``.
            Audio: ``(frames,)`` mono or ``(frames, channels)`` in ``[-1, 1]``.
        sample_rate: audio sample rate in Hz; ``None`` for images.
        format: where it came from, used to write it back in the same form. Images: ``"png"``,
            ``"jpeg"``, ``"webp"``, ``"gif"``, ``"bmp"``, ``"tiff"``, ``"pil"``, ``"array"`` or
            ``"tensor"``. Audio: ``"wav"`` or ``"array"`` (arrays and tensors).
        mime_type: MIME type of what :meth:`to_bytes` writes by default (``"image/png"`` for GIF,
            PIL, array and tensor input; ``"audio/wav"`` for all audio).
        wav_subtype: audio only: the WAV sample format :meth:`to_wav_bytes` writes by default:
            the one read from a WAV file (``"pcm8"``, ``"pcm16"``, ``"pcm24"``, ``"pcm32"``,
            ``"float32"``, ``"float64"``), ``"pcm16"`` for arrays and tensors.
    """

    __slots__ = ("_hash", "data", "format", "kind", "mime_type", "sample_rate", "wav_subtype")

    kind: Kind
    data: np.ndarray
    sample_rate: int | None
    format: str
    mime_type: str
    wav_subtype: str | None

    def __init__(
        self,
        kind: Kind,
        data: np.ndarray,
        *,
        format: str,
        mime_type: str | None = None,
        sample_rate: int | None = None,
        wav_subtype: str | None = None,
    ) -> None:
        """Wrap already-canonical ``data`` (validated and copied). Prefer :meth:`image` / :meth:`audio`."""
        if kind == "image":
            _set(self, kind, _checked_image_data(data), format, mime_type or _image_mime(format), None, None)
        elif kind == "audio":
            _set(self, kind, _checked_audio_data(data), format, mime_type or "audio/wav",
                 _check_rate(sample_rate), _check_subtype(wav_subtype or "pcm16"))
        else:
            raise MediaError(f"Media kind must be 'image' or 'audio', not {kind!r}")

    @classmethod
    def _make(cls, kind: Kind, data: np.ndarray, format: str, *, mime_type: str | None = None,
              sample_rate: int | None = None, wav_subtype: str | None = None) -> Media:
        """Build from a fresh float32 array this module owns (no copy, no validation)."""
        self = object.__new__(cls)
        mime = mime_type or (_image_mime(format) if kind == "image" else "audio/wav")
        _set(self, kind, data, format, mime, sample_rate, wav_subtype)
        return self

    # ------------------------------------------------------------------ decoders

    @classmethod
    def image(
        cls, x: Any, *, max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> Media:
        """Decode an image from a PIL image, array, tensor, bytes, path, ``data:`` URL or Media.

        Alpha is composited over white; an animated GIF gives its first frame (a PIL image is read
        at its current frame, never seeked); EXIF orientation is applied. Arrays: uint8, uint16
        (/65535), bool, float in ``[0, 1]``, or other integers in ``[0, 255]``, shaped ``(H, W)``
        or ``(H, W, C)`` with C in 1..4 (2 = gray + alpha).
        Tensors: also ``(C, H, W)`` and a batch of one. ``max_pixels`` bounds width * height,
        ``max_bytes`` the encoded size (PIL's own ``Image.MAX_IMAGE_PIXELS`` guard applies too).
        Raises :class:`MediaError` for anything unusable.
        """
        if isinstance(x, Media):
            if x.kind != "image":
                raise MediaError("Media.image got an audio Media; pass an image")
            return x
        if isinstance(x, Image.Image):
            return cls._make("image", _image_from_pil(x, max_pixels, f"the {x.mode} PIL image"), "pil")
        if isinstance(x, np.ndarray):
            return cls._make("image", _image_from_array(x, max_pixels), "array")
        if _is_tensor(x):
            return cls._make("image", _image_from_array(_tensor_image_hwc(x), max_pixels), "tensor")
        if isinstance(x, bytes | bytearray | memoryview):
            data, fmt = _decode_image_bytes(bytes(x), max_pixels, max_bytes)
            return cls._make("image", data, fmt)
        if isinstance(x, str | os.PathLike):
            raw = _read_source(x, "image", max_bytes)
            data, fmt = _decode_image_bytes(raw, max_pixels, max_bytes)
            return cls._make("image", data, fmt)
        raise MediaError(f"Media.image cannot read a {type(x).__name__}; pass {_IMAGE_INPUTS}")

    @classmethod
    def audio(
        cls,
        x: Any,
        sample_rate: int | None = None,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_seconds: float = DEFAULT_MAX_SECONDS,
    ) -> Media:
        """Decode audio from an array or tensor (with ``sample_rate`` in Hz), WAV bytes, path or URL.

        Arrays: float in ``[-1, 1]``, int16 (/32768), int32 (/2**31), uint8 ((x-128)/128) or int8
        (/128), shaped ``(frames,)`` or 2-D with the smaller axis taken as channels (at most 8).
        One channel is stored as 1-D. WAV: PCM 8/16/24/32-bit, float 32/64-bit, also extensible.
        With encoded input, ``sample_rate`` (if given) must match the file's rate.
        """
        if isinstance(x, Media):
            if x.kind != "audio":
                raise MediaError("Media.audio got an image Media; pass audio")
            if sample_rate is not None and sample_rate != x.sample_rate:
                raise MediaError(f"sample_rate={sample_rate} does not match the clip's {x.sample_rate} Hz")
            return x
        if isinstance(x, np.ndarray) or _is_tensor(x):
            rate = _require_rate(sample_rate)
            arr = _tensor_to_numpy(x) if _is_tensor(x) else x
            if _is_tensor(x) and arr.ndim == 3 and arr.shape[0] == 1:
                arr = arr[0]  # a batch of one
            data = _audio_from_array(arr)
            _check_duration(len(data), rate, max_seconds)
            return cls._make("audio", data, "array", sample_rate=rate, wav_subtype="pcm16")
        if isinstance(x, bytes | bytearray | memoryview):
            raw = bytes(x)
        elif isinstance(x, str | os.PathLike):
            raw = _read_source(x, "audio", max_bytes)
        else:
            raise MediaError(f"Media.audio cannot read a {type(x).__name__}; pass {_AUDIO_INPUTS}")
        data, rate, subtype = _decode_wav(raw, max_bytes, max_seconds)
        if sample_rate is not None and sample_rate != rate:
            raise MediaError(f"sample_rate={sample_rate} does not match the WAV file's {rate} Hz; "
                             "leave sample_rate out or resample the file first")
        return cls._make("audio", data, "wav", sample_rate=rate, wav_subtype=subtype)

    def with_data(self, data: np.ndarray) -> Media:
        """A copy with new ``data`` (same kind, format, sample rate, subtype); e.g. a noisy copy.

        ``data`` must be a float array in the canonical shape and range; it is copied to float32.
        """
        checked = _checked_image_data(data) if self.kind == "image" else _checked_audio_data(data)
        return Media._make(self.kind, checked, self.format, mime_type=self.mime_type,
                           sample_rate=self.sample_rate, wav_subtype=self.wav_subtype)

    def resized(self, width: int, height: int) -> Media:
        """The image at ``width x height`` (PIL Lanczos on its 8-bit pixels), as PNG; itself when already that size."""
        self._need("image", "resized")
        if (width, height) == (self.width, self.height):
            return self
        # reducing_gap 1.5: a box reduction by an integer factor first, then Lanczos over a factor of at least 1.5
        # (a 12 MP photo to 1024x768 in 35 ms instead of 107 ms; PIL's docs: quality close to a full Lanczos)
        image = self.to_pil().resize((width, height), Image.Resampling.LANCZOS, reducing_gap=1.5)
        data = np.asarray(image, dtype=np.float32)
        data *= np.float32(1.0 / 255.0)
        return Media._make("image", data, "png")

    # ------------------------------------------------------------------ encoders

    def to_pil(self) -> Image.Image:
        """The image as an RGB uint8 PIL image (``np.rint(data * 255)``)."""
        return Image.fromarray(self._image_uint8())

    def to_png_bytes(self) -> bytes:
        """The image as PNG bytes (lossless for 8-bit data)."""
        return self.to_bytes("png")

    def to_bytes(self, format: str | None = None) -> bytes:
        """Encode: images as ``format`` (png, jpeg, webp, bmp, tiff) or by default the source
        format (GIF, PIL, array and tensor input give PNG); audio as WAV. JPEG/WebP use quality 95; PNG is
        written for speed (see :func:`_png_bytes`).
        """
        if self.kind == "audio":
            if format not in (None, "wav"):
                raise MediaError(f"audio is written only as 'wav', not {format!r}")
            return self.to_wav_bytes()
        fmt = self._out_format(format)
        if fmt == "png":
            return _png_bytes(self._image_uint8())
        buf = io.BytesIO()
        options = {"quality": _LOSSY_QUALITY} if fmt in ("jpeg", "webp") else {}
        self.to_pil().save(buf, _IMAGE_WRITERS[fmt], **options)
        return buf.getvalue()

    def to_data_url(self, format: str | None = None) -> str:
        """``"data:<mime>;base64,..."`` of :meth:`to_bytes` (``format`` as there)."""
        mime = "audio/wav" if self.kind == "audio" else _IMAGE_MIME[self._out_format(format)]
        return f"data:{mime};base64,{base64.b64encode(self.to_bytes(format)).decode('ascii')}"

    def to_array(self, dtype: str | np.dtype = "float32") -> np.ndarray:
        """A writable copy of ``data``. Images: ``"float32"`` in [0, 1] or ``"uint8"``.
        Audio: ``"float32"`` in [-1, 1] or ``"int16"`` (x * 32768, clipped).
        """
        try:
            name = np.dtype(dtype).name
        except TypeError as exc:
            raise MediaError(f"unknown dtype {dtype!r}") from exc
        if name == "float32":
            return self.data.copy()
        if self.kind == "image" and name == "uint8":
            return self._image_uint8()
        if self.kind == "audio" and name == "int16":
            return _pcm(self.data, 16).astype(np.int16)
        allowed = "'float32' or 'uint8'" if self.kind == "image" else "'float32' or 'int16'"
        raise MediaError(f"to_array supports {allowed} for {self.kind}, not {name!r}")

    def to_wav_bytes(self, subtype: str | None = None) -> bytes:
        """The audio as a RIFF WAV file in ``subtype`` (default :attr:`wav_subtype`).

        ``"pcm16"`` and ``"float32"`` are the usual choices; ``"pcm8"``, ``"pcm24"``, ``"pcm32"``
        and ``"float64"`` are written too. PCM is ``rint(x * 2**(bits-1))``, clipped.
        """
        self._need("audio", "to_wav_bytes")
        return _encode_wav(self.data, self.sample_rate or 0, _check_subtype(subtype or self.wav_subtype))

    # ------------------------------------------------------------------ properties

    @property
    def width(self) -> int:
        """Image width in pixels."""
        self._need("image", "width")
        return int(self.data.shape[1])

    @property
    def height(self) -> int:
        """Image height in pixels."""
        self._need("image", "height")
        return int(self.data.shape[0])

    @property
    def n_frames(self) -> int:
        """Audio length in frames (samples per channel)."""
        self._need("audio", "n_frames")
        return int(self.data.shape[0])

    @property
    def n_channels(self) -> int:
        """Audio channel count (1 for mono)."""
        self._need("audio", "n_channels")
        return 1 if self.data.ndim == 1 else int(self.data.shape[1])

    @property
    def duration(self) -> float:
        """Audio duration in seconds."""
        self._need("audio", "duration")
        return self.n_frames / float(self.sample_rate or 1)

    # ------------------------------------------------------------------ value-object plumbing

    def __repr__(self) -> str:
        if self.kind == "image":
            return f"Media(image {self.width}x{self.height} from {self.format})"
        channels = {1: "mono", 2: "stereo"}.get(self.n_channels, f"{self.n_channels} ch")
        return f"Media(audio {self.duration:.2f} s {self.sample_rate} Hz {channels} from {self.format})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Media):
            return NotImplemented
        return (self._key() == other._key() and self.data.shape == other.data.shape
                and bool(np.array_equal(self.data, other.data)))

    def __hash__(self) -> int:
        if self._hash is None:
            import hashlib

            digest = hashlib.blake2b((self.data + np.float32(0.0)).tobytes(), digest_size=16).digest()
            object.__setattr__(self, "_hash", hash((*self._key(), self.data.shape, digest)))
        return self._hash

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Media is immutable; use with_data() to make a changed copy (tried {name!r})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Media is immutable")

    def __copy__(self) -> Media:
        return self

    def __deepcopy__(self, memo: dict) -> Media:
        return self

    def __reduce__(self) -> tuple:
        return (_unpickle, (self.kind, self.data, self.format, self.mime_type, self.sample_rate,
                            self.wav_subtype))

    def _key(self) -> tuple:
        return (self.kind, self.format, self.mime_type, self.sample_rate, self.wav_subtype)

    def _need(self, kind: Kind, what: str) -> None:
        if self.kind != kind:
            raise MediaError(f"{what} is defined only for {kind}; this Media is {self.kind}")

    def _image_uint8(self) -> np.ndarray:
        self._need("image", "this encoder")
        # data lies in [0, 1] (checked at construction; noisy copies are clipped), so rint(x * 255) lies in
        # [0, 255] and the cast cannot wrap: no clip pass, rounded in place
        scaled = self.data * np.float32(255)
        np.rint(scaled, out=scaled)
        return scaled.astype(np.uint8)

    def _out_format(self, format: str | None) -> str:
        self._need("image", "this encoder")
        if format is None:
            return self.format if self.format in _IMAGE_WRITERS else "png"
        fmt = _IMAGE_ALIASES.get(format.lower(), format.lower())
        if fmt not in _IMAGE_WRITERS:
            raise MediaError(f"cannot write images as {format!r}; choose one of {sorted(_IMAGE_WRITERS)}")
        return fmt


# ---------------------------------------------------------------------------- construction helpers


def _set(m: Media, kind: Kind, data: np.ndarray, format: str, mime: str, rate: int | None,
         subtype: str | None) -> None:
    data.flags.writeable = False
    for name, value in (("kind", kind), ("data", data), ("format", format), ("mime_type", mime),
                        ("sample_rate", rate), ("wav_subtype", subtype), ("_hash", None)):
        object.__setattr__(m, name, value)


def _unpickle(kind: Kind, data: np.ndarray, format: str, mime: str, rate: int | None,
              subtype: str | None) -> Media:
    return Media(kind, data, format=format, mime_type=mime, sample_rate=rate, wav_subtype=subtype)


def _image_mime(format: str) -> str:
    return _IMAGE_MIME[format] if format in _IMAGE_WRITERS else "image/png"


def _png_bytes(pixels: np.ndarray) -> bytes:
    """RGB uint8 pixels (H, W, 3) as a PNG file: the "up" filter on every row, deflate with Huffman coding only.

    Noisy copies have few repeated strings for deflate to find. Huffman-only deflate of the row differences makes
    them as small as PIL's best setting (level 6, adaptive filters) at 3-5x the speed of PIL's fastest (level 1):
    8.7 ms against 28.9 ms for a noisy 512x512 copy on the project's CPU (benchmarks/bench_perturb.py), and zlib
    releases the GIL, so copies encode in parallel threads. Clean smooth images come out near PIL's level 1 size.
    """
    height, width, _ = pixels.shape
    flat = pixels.reshape(height, width * 3)
    rows = np.empty((height, width * 3 + 1), dtype=np.uint8)
    rows[:, 0] = 2  # filter type 2, "up": each byte minus the byte above it (mod 256)
    rows[0, 1:] = flat[0]
    np.subtract(flat[1:], flat[:-1], out=rows[1:, 1:])
    deflate = zlib.compressobj(1, zlib.DEFLATED, 15, 8, zlib.Z_HUFFMAN_ONLY)
    idat = deflate.compress(rows) + deflate.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _checked_image_data(data: Any) -> np.ndarray:
    """Validate canonical image data (float, (H, W, 3), finite, in [0, 1]); a fresh float32 copy."""
    arr = np.asarray(data)
    if arr.dtype.kind != "f" or arr.ndim != 3 or arr.shape[2] != 3 or arr.size == 0:
        raise MediaError(f"image data must be a non-empty float array of shape (H, W, 3), "
                         f"got {arr.dtype} {arr.shape}")
    _check_float_range(arr, 0.0, 1.0, "image", "clip it with np.clip(x, 0, 1)")
    return np.array(arr, dtype=np.float32, order="C")


def _checked_audio_data(data: Any) -> np.ndarray:
    """Validate canonical audio data (float, (frames,) or (frames, ch), in [-1, 1]); a fresh copy."""
    arr = np.asarray(data)
    if (arr.dtype.kind != "f" or arr.ndim not in (1, 2) or arr.size == 0
            or (arr.ndim == 2 and not 1 <= arr.shape[1] <= _MAX_CHANNELS)):
        raise MediaError(f"audio data must be a non-empty float array of shape (frames,) or "
                         f"(frames, channels) with 1..{_MAX_CHANNELS} channels, got {arr.dtype} {arr.shape}")
    _check_float_range(arr, -1.0, 1.0, "audio", "clip it with np.clip(x, -1, 1)")
    out = np.array(arr, dtype=np.float32, order="C")
    return out[:, 0].copy() if out.ndim == 2 and out.shape[1] == 1 else out


def _check_float_range(arr: np.ndarray, lo: float, hi: float, what: str, hint: str) -> None:
    if not np.isfinite(arr).all():
        raise MediaError(f"float {what} values must be finite (found NaN or inf)")
    vmin, vmax = float(arr.min()), float(arr.max())
    if vmin < lo:
        raise MediaError(f"float {what} values must lie in [{lo:g}, {hi:g}] (got min {vmin}): {hint}")
    if vmax > hi:
        raise MediaError(f"float {what} values must lie in [{lo:g}, {hi:g}] (got max {vmax}): {hint}")


def _short(s: object, limit: int = 80) -> str:
    text = str(s)
    return repr(text if len(text) <= limit else text[:limit] + "...")


# ---------------------------------------------------------------------------- sources


def _is_tensor(x: object) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def _tensor_to_numpy(x: Any) -> np.ndarray:
    """A numpy view or copy of a torch tensor, without importing torch. Never written to."""
    try:
        t = x.detach().cpu()
        try:
            return t.numpy()
        except TypeError:  # bfloat16 and friends have no numpy dtype
            return t.float().numpy()
    except Exception as exc:
        raise MediaError(f"could not convert the {type(x).__name__} to numpy: {exc}") from exc


def _read_source(x: str | os.PathLike, kind: Kind, max_bytes: int) -> bytes:
    """Bytes of a ``data:`` URL or a file; http(s) URLs are refused (use :func:`fetch`)."""
    if isinstance(x, str):
        head = x[:8].lower()
        if head.startswith("data:"):
            return _decode_data_url(x, kind, max_bytes)
        if head.startswith(("http://", "https://")):
            raise MediaError(f"Media never downloads on its own: fetch {_short(x)} with "
                             f"smoothguard.media.fetch(url, {kind!r}) or enable the remote_media setting")
    path = Path(x)
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise MediaError(f"{kind} path {_short(path)} is not a file")
        if size > max_bytes:
            raise MediaError(f"{kind} file {_short(path)} has {size} bytes, over max_bytes={max_bytes}")
        return path.read_bytes()
    except FileNotFoundError as exc:
        hint = " (to pass base64 data, use a data URL: 'data:<mime>;base64,...')" if len(str(x)) > 200 else ""
        raise MediaError(f"{kind} file not found: {_short(path)}{hint}") from exc
    except OSError as exc:
        raise MediaError(f"could not read {kind} file {_short(path)}: {exc.strerror or exc}") from exc
    except ValueError as exc:  # a NUL byte or a lone surrogate: no file system can name it
        raise MediaError(f"{kind} path {_short(path)} is not a valid file name ({exc})") from None


def _decode_data_url(url: str, kind: Kind, max_bytes: int) -> bytes:
    header, sep, payload = url.partition(",")
    if not sep:
        raise MediaError(f"malformed data URL {_short(url)}: expected 'data:<mime>;base64,<payload>'")
    params = header[5:].split(";")
    mime = params[0].strip().lower()
    if not mime.startswith(kind + "/"):
        raise MediaError(f"data URL has MIME type {mime or '(none)'!r}; Media.{kind} needs {kind}/...")
    if "base64" not in (p.strip().lower() for p in params[1:]):
        raise MediaError("only base64 data URLs are supported: 'data:<mime>;base64,<payload>'")
    compact = "".join(payload.split())
    approx = len(compact) // 4 * 3
    if approx > max_bytes + 3:
        raise MediaError(f"data URL payload is about {approx} bytes, over max_bytes={max_bytes}")
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MediaError(f"data URL payload is not valid base64: {exc}") from exc


# ---------------------------------------------------------------------------- images


def _decode_image_bytes(raw: bytes, max_pixels: int, max_bytes: int) -> tuple[np.ndarray, str]:
    """Decode PNG/JPEG/WebP/GIF/BMP/TIFF bytes to canonical data and our format name."""
    n = len(raw)
    if n == 0:
        raise MediaError("could not decode image bytes (0 bytes): the input is empty")
    if n > max_bytes:
        raise MediaError(f"image is {n} bytes, over max_bytes={max_bytes}")
    what = f"image bytes ({n} bytes)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(raw), formats=_PIL_OPENERS)  # lazy: reads the header only
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise MediaError(f"image is too large to decode safely: {exc}") from exc
    except Image.UnidentifiedImageError as exc:
        raise MediaError(f"could not decode {what}: not a PNG, JPEG, WebP, GIF, BMP or TIFF image") from exc
    except Exception as exc:
        raise MediaError(f"could not decode {what}: {exc}") from exc
    return _image_from_pil(img, max_pixels, what), _PIL_FORMATS.get(img.format or "", "png")


def _image_from_pil(img: Image.Image, max_pixels: int, what: str) -> np.ndarray:
    """Canonical data of a PIL image; every failure becomes a MediaError about ``what``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return _pil_pixels(img, max_pixels)
    except MediaError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise MediaError(f"image is too large to decode safely: {exc}") from exc
    except Exception as exc:
        raise MediaError(f"could not decode {what}: {exc}") from exc


def _pil_pixels(img: Image.Image, max_pixels: int) -> np.ndarray:
    """Pixels of a PIL image (current frame, EXIF orientation applied, alpha over white)."""
    w, h = img.size
    _check_pixels(h, w, max_pixels)  # before load(): the header may lie about a huge size
    img.load()  # full decode here, so truncated files fail now
    img = ImageOps.exif_transpose(img) or img
    mode = img.mode
    if mode.startswith("I;16"):
        return _image_from_array(np.asarray(img).astype(np.uint16), max_pixels)
    if mode == "I":
        arr = np.asarray(img)
        if arr.min() < 0 or arr.max() > 65535:
            raise MediaError("mode 'I' images must hold 16-bit values in [0, 65535]")
        return _image_from_array(arr.astype(np.uint16), max_pixels)
    if mode in ("F", "1"):
        return _image_from_array(np.asarray(img), max_pixels)
    has_alpha = mode in _ALPHA_MODES or "transparency" in img.info
    target = "RGBA" if has_alpha else "RGB"
    return _image_from_array(np.asarray(img if mode == target else img.convert(target)), max_pixels)


def _check_pixels(h: int, w: int, max_pixels: int) -> None:
    if h <= 0 or w <= 0:
        raise MediaError(f"image has zero size ({w}x{h})")
    if h * w > max_pixels:
        raise MediaError(f"image is {w}x{h} = {w * h} pixels, over max_pixels={max_pixels}; "
                         "downscale it or raise max_pixels")


def _tensor_image_hwc(x: Any) -> np.ndarray:
    """A tensor's pixels as (H, W[, C]): CHW is transposed, a batch of one squeezed."""
    arr = _tensor_to_numpy(x)
    if arr.ndim == 4:
        if arr.shape[0] != 1:
            raise MediaError(f"got a batch of {arr.shape[0]} images (shape {arr.shape}); pass one at a time")
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = arr.transpose(1, 2, 0)
    return arr


def _image_from_array(arr: np.ndarray, max_pixels: int) -> np.ndarray:
    """Canonical (H, W, 3) float32 data of an (H, W) or (H, W, C) array; never writes to ``arr``."""
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise MediaError(f"image arrays must be (H, W) or (H, W, C), got shape {arr.shape}")
    h, w, c = arr.shape
    if arr.size == 0:
        raise MediaError(f"image array has zero size (shape {arr.shape})")
    if c > 4:
        raise MediaError(f"image arrays may have 1 to 4 channels, got shape {arr.shape}; "
                         "for channel-first (C, H, W) data use arr.transpose(1, 2, 0)")
    _check_pixels(h, w, max_pixels)
    x = _image_values(arr)
    rgb = np.repeat(x[:, :, :1], 3, axis=2) if c <= 2 else x[:, :, :3]
    if c in (2, 4):  # composite over white: rgb * a + (1 - a)
        alpha = x[:, :, -1:]
        rgb = rgb * alpha + (np.float32(1) - alpha)
    return np.ascontiguousarray(rgb, dtype=np.float32)


def _image_values(arr: np.ndarray) -> np.ndarray:
    """Pixel values scaled to float32 in [0, 1] (a new array)."""
    kind, dt = arr.dtype.kind, arr.dtype
    if kind == "b":
        return arr.astype(np.float32)
    if dt == np.uint8 or dt == np.uint16:
        x = arr.astype(np.float32)
        x /= np.float32(255 if dt == np.uint8 else 65535)
        return x
    if kind in "iu":
        vmin, vmax = int(arr.min()), int(arr.max())
        if vmin < 0 or vmax > 255:
            raise MediaError(f"{dt} image values must lie in [0, 255] (got {vmin}..{vmax}): "
                             "pass uint8, uint16, or floats in [0, 1]")
        x = arr.astype(np.float32)
        x /= np.float32(255)
        return x
    if kind == "f":
        if not np.isfinite(arr).all():
            raise MediaError("float image values must be finite (found NaN or inf)")
        vmin, vmax = float(arr.min()), float(arr.max())
        if vmax > 1:
            raise MediaError(f"float image values must lie in [0, 1] (got max {vmax}): "
                             "divide by 255 or pass uint8")
        if vmin < 0:
            raise MediaError(f"float image values must lie in [0, 1] (got min {vmin}): "
                             "rescale them, e.g. (x + 1) / 2 for data in [-1, 1]")
        return arr.astype(np.float32)
    raise MediaError(f"unsupported image array dtype {dt}; pass uint8, uint16, bool or float in [0, 1]")


# ---------------------------------------------------------------------------- audio


def _require_rate(rate: Any) -> int:
    if rate is None:
        raise MediaError("sample_rate is required for audio arrays and tensors, e.g. "
                         "Media.audio(x, sample_rate=16000)")
    return _check_rate(rate)


def _check_rate(rate: Any) -> int:
    if isinstance(rate, bool) or not isinstance(rate, int | np.integer) or rate <= 0:
        raise MediaError(f"sample_rate must be a positive int in Hz, got {rate!r}")
    if not _MIN_RATE <= rate <= _MAX_RATE:
        raise MediaError(f"sample_rate {rate} Hz is outside [{_MIN_RATE}, {_MAX_RATE}]; is it really in Hz?")
    return int(rate)


def _check_subtype(subtype: str | None) -> str:
    if subtype not in _WAV_SUBTYPES:
        raise MediaError(f"unknown WAV subtype {subtype!r}; choose one of {list(_WAV_SUBTYPES)}")
    return subtype


def _check_duration(frames: int, rate: int, max_seconds: float) -> None:
    if frames / rate > max_seconds:
        raise MediaError(f"audio is {frames / rate:.1f} s long, over max_seconds={max_seconds}")


def _audio_from_array(arr: np.ndarray) -> np.ndarray:
    """Canonical float32 (frames,) or (frames, channels) data; the smaller 2-D axis is channels."""
    if arr.ndim not in (1, 2):
        raise MediaError(f"audio arrays must be (frames,) or 2-D (frames, channels), got shape {arr.shape}")
    if arr.size == 0:
        raise MediaError(f"audio array has no samples (shape {arr.shape})")
    if arr.ndim == 2:
        if arr.shape[1] > arr.shape[0]:
            arr = arr.T  # (channels, frames) -> (frames, channels)
        if arr.shape[1] > _MAX_CHANNELS:
            raise MediaError(f"audio has {arr.shape[1]} channels (shape {arr.shape}); at most "
                             f"{_MAX_CHANNELS} are supported (the smaller axis is taken as channels)")
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


def _pcm(data: np.ndarray, bits: int) -> np.ndarray:
    """Signed PCM integers (as int64) of float data: rint(x * 2**(bits-1)), clipped to the range."""
    full = 2 ** (bits - 1)
    return np.clip(np.rint(data.astype(np.float64) * full), -full, full - 1).astype(np.int64)


def _encode_wav(data: np.ndarray, rate: int, subtype: str) -> bytes:
    """A RIFF WAV file of canonical audio data."""
    code, bits = _WAV_SUBTYPES[subtype]
    frames = data.reshape(data.shape[0], -1)
    channels = frames.shape[1]
    if subtype == "float32":
        payload = frames.astype("<f4").tobytes()
    elif subtype == "float64":
        payload = frames.astype("<f8").tobytes()
    elif bits == 8:
        payload = (_pcm(frames, 8) + 128).astype(np.uint8).tobytes()
    elif bits == 24:
        payload = _pcm(frames, 24).astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    else:
        payload = _pcm(frames, bits).astype(f"<i{bits // 8}").tobytes()
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


def _decode_wav(raw: bytes, max_bytes: int, max_seconds: float) -> tuple[np.ndarray, int, str]:
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
    if not 1 <= channels <= _MAX_CHANNELS:
        raise MediaError(f"WAV file has {channels} channels; 1 to {_MAX_CHANNELS} are supported")
    if not _MIN_RATE <= rate <= _MAX_RATE:
        raise MediaError(f"WAV sample rate {rate} Hz is outside [{_MIN_RATE}, {_MAX_RATE}]")
    return code, channels, rate, bits


def _wav_samples(body: bytes, code: int, channels: int, rate: int, bits: int,
                 max_seconds: float) -> tuple[np.ndarray, int, str]:
    width = bits // 8
    frames = len(body) // (width * channels)  # a trailing partial frame is dropped
    if frames == 0:
        raise MediaError("WAV file has 0 samples")
    _check_duration(frames, rate, max_seconds)
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


# ---------------------------------------------------------------------------- network


def fetch(url: str, kind: str, *, timeout: float = 10.0, max_bytes: int = DEFAULT_MAX_BYTES,
          max_pixels: int = DEFAULT_MAX_PIXELS, allow_private: bool = False) -> Media:
    """Download an http(s) ``url`` (at most ``max_bytes``, ``timeout`` seconds in all) and decode it
    as ``kind`` (``"image"`` of at most ``max_pixels``, or ``"audio"``). Any failure raises :class:`MediaError`
    naming the URL.

    Unless ``allow_private``, every host on the way (each redirect hop) must resolve to public addresses only, and
    the connection goes to the address that was checked (a name that answers differently the second time, DNS
    rebinding, cannot move it); refusals name the host, never the address. Environment proxies are not used.
    The body is asked for uncompressed (``Accept-Encoding: identity``); a server that compresses it anyway with
    gzip or deflate is decoded in bounded steps, so ``max_bytes`` caps the decoded bytes too (a decompression
    bomb stops at the limit); other content encodings are refused.
    """
    import time
    import urllib.error
    import urllib.request

    if kind not in ("image", "audio"):
        raise MediaError(f"fetch kind must be 'image' or 'audio', not {kind!r}")
    _check_fetch_url(url, url)
    deadline = time.monotonic() + timeout

    class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
            _check_fetch_url(newurl, url)
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _HttpOnlyRedirects,
                                         *_pinned_handlers(allow_private, url, deadline))
    request = urllib.request.Request(url, headers={"User-Agent": "smoothguard", "Accept-Encoding": "identity"})
    try:
        with opener.open(request, timeout=timeout) as resp:
            content_type = resp.headers.get("Content-Type", "")
            decoder = _BoundedDecoder(resp.headers.get("Content-Encoding"), max_bytes, _short(url))
            raw = _read_capped(resp, decoder, deadline, url, timeout)
    except MediaError:
        raise
    except urllib.error.HTTPError as exc:
        raise MediaError(f"could not fetch {_short(url)}: HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise MediaError(f"could not fetch {_short(url)}: {exc.reason}") from exc
    except Exception as exc:  # timeouts, resets, bad status lines, ...
        raise MediaError(f"could not fetch {_short(url)}: {exc}") from exc
    try:
        if kind == "image":
            return Media.image(raw, max_bytes=max_bytes, max_pixels=max_pixels)
        return Media.audio(raw, max_bytes=max_bytes)
    except MediaError as exc:
        served = f" (served as {content_type})" if content_type else ""
        raise MediaError(f"{_short(url)}{served}: {exc}") from exc


def _check_fetch_url(url: str, first: str) -> None:
    """MediaError unless ``url`` is a well-formed http(s) URL (``first``: the URL asked for, named in errors)."""
    import urllib.parse

    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError as exc:
        raise MediaError(f"malformed URL {_short(url)}: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        if url == first:
            raise MediaError(f"fetch reads only http(s) URLs, not {_short(url)}")
        raise MediaError(f"{_short(first)} redirects to a non-http(s) URL {_short(url)}")
    if not parts.hostname:
        raise MediaError(f"malformed URL {_short(url)}: it names no host")


def _pinned_handlers(allow_private: bool, first: str, deadline: float) -> list[Any]:
    """urllib handlers whose connections go to an address resolved and checked once per hop (public only, unless
    ``allow_private``), each connect within what is left of ``deadline``."""
    import http.client
    import socket
    import time
    import urllib.request

    def connect(host: str, port: int, timeout: Any, source: Any) -> socket.socket:
        left = deadline - time.monotonic()
        if left <= 0:
            raise MediaError(f"could not fetch {_short(first)}: out of time")
        address = _resolve_checked(host, port, allow_private, first)
        wait = left if not isinstance(timeout, (int, float)) else min(timeout, left)
        return socket.create_connection((address, port), wait, source)

    class _PinnedHTTP(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = connect(self.host, self.port, self.timeout, self.source_address)

    class _PinnedHTTPS(http.client.HTTPSConnection):
        def connect(self) -> None:
            sock = connect(self.host, self.port, self.timeout, self.source_address)
            self.sock = self._context.wrap_socket(sock, server_hostname=self.host)

    class _HTTP(urllib.request.HTTPHandler):
        def http_open(self, req: Any) -> Any:
            return self.do_open(_PinnedHTTP, req)

    class _HTTPS(urllib.request.HTTPSHandler):
        def https_open(self, req: Any) -> Any:
            return self.do_open(_PinnedHTTPS, req, context=self._context)

    return [_HTTP(), _HTTPS()]


def _resolve_checked(host: str, port: int, allow_private: bool, first: str) -> str:
    """One address of ``host``; unless ``allow_private``, MediaError when any of its addresses is not public (the
    message names the host, not the address)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError):
        raise MediaError(f"could not fetch {_short(first)}: the host name {host!r} does not resolve") from None
    addresses = [str(info[4][0]) for info in infos]
    if not allow_private:
        require_public(host, addresses, _short(first))
    return addresses[0]


def require_public(host: str, addresses: Sequence[str], shown: str) -> None:
    """MediaError when any of ``host``'s resolved ``addresses`` is not public (loopback, private, link-local, ...).
    The message names the host, never an address: a refusal must not tell what an internal name resolves to."""
    import ipaddress

    for address in addresses:
        if not ipaddress.ip_address(address.split("%", 1)[0]).is_global:
            raise MediaError(f"{shown}: the host {host!r} resolves to a non-public address; only public hosts are "
                             "fetched (allow_private_fetch allows private ones)")


class _BoundedDecoder:
    """Decodes a response body's ``Content-Encoding`` (identity, gzip, deflate) chunk by chunk, raising
    :class:`MediaError` as soon as the *decoded* bytes pass ``max_bytes``: no step inflates more than
    ``max_bytes + 1`` bytes, so a decompression bomb costs at most about ``max_bytes`` of memory. Other
    encodings (br, zstd, ...) are refused: the request asked for ``identity``."""

    def __init__(self, encoding: str | None, max_bytes: int, shown: str) -> None:
        import zlib

        self.max_bytes = max_bytes
        self.shown = shown
        self.total = 0
        name = (encoding or "identity").strip().lower()
        if name in ("", "identity"):
            self._inflater: Any = None
        elif name in ("gzip", "x-gzip"):
            self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif name == "deflate":
            self._inflater = zlib.decompressobj()
        else:
            raise MediaError(f"{shown} was served with Content-Encoding {encoding!r} although only 'identity' was "
                             "asked for; compressed media bodies other than gzip/deflate are not decoded")
        self._raw_deflate_retry = name == "deflate"  # some servers send deflate without the zlib header

    def feed(self, chunk: bytes) -> list[bytes]:
        """The decoded bytes of ``chunk``; MediaError once more than ``max_bytes`` came out in all."""
        import zlib

        if self._inflater is None:
            return [self._count(chunk)]
        out: list[bytes] = []
        data = chunk
        while data:
            try:
                piece = self._inflater.decompress(data, self.max_bytes - self.total + 1)
            except zlib.error as exc:
                if self._raw_deflate_retry:  # the first chunk failed as zlib: retry it as raw deflate
                    self._inflater, self._raw_deflate_retry = zlib.decompressobj(-zlib.MAX_WBITS), False
                    continue
                raise MediaError(f"{self.shown}: its compressed body is corrupt ({exc})") from None
            self._raw_deflate_retry = False
            out.append(self._count(piece))
            data = self._inflater.unconsumed_tail
            if self._inflater.eof:
                break
        return out

    def _count(self, piece: bytes) -> bytes:
        self.total += len(piece)
        if self.total > self.max_bytes:
            raise MediaError(f"{self.shown} is larger than max_bytes={self.max_bytes} (decoded)")
        return piece


def _read_capped(resp: Any, decoder: _BoundedDecoder, deadline: float, url: str, timeout: float) -> bytes:
    """The decoded body of a response, read in 64 KiB pieces, at most ``decoder.max_bytes`` bytes of it, before
    ``deadline`` (``time.monotonic()``)."""
    import time

    parts: list[bytes] = []
    while True:
        if time.monotonic() > deadline:
            raise MediaError(f"could not fetch {_short(url)} within {timeout:g} s")
        part = resp.read(65536)
        if not part:
            break
        parts.extend(decoder.feed(part))
    return b"".join(parts)
