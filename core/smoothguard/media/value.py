"""The :class:`Media` value object: one image or one audio clip as a canonical float32 array.

* images: ``data`` has shape ``(H, W, 3)``, RGB, values in ``[0, 1]``; alpha is composited over
  a **white** background.
* audio: ``data`` has shape ``(frames,)`` (mono) or ``(frames, channels)``, values in ``[-1, 1]``,
  with ``sample_rate`` in Hz. Only WAV is decoded; decode other codecs yourself first.

Decoding and encoding live in :mod:`.images` and :mod:`.audio`; reading paths and ``data:`` URLs in
:mod:`.sources`. torch is never imported here; tensors are recognised by duck typing.
"""

from __future__ import annotations

import base64
import io
import os
from typing import Any

import numpy as np
from PIL import Image

from smoothguard.errors import MediaError
from smoothguard.media.audio import (
    MAX_CHANNELS,
    audio_from_array,
    check_duration,
    check_rate,
    check_subtype,
    decode_wav,
    encode_wav,
    pcm,
    require_rate,
)
from smoothguard.media.images import (
    IMAGE_ALIASES,
    IMAGE_MIME,
    IMAGE_WRITERS,
    LOSSY_QUALITY,
    Fit,
    decode_image_bytes,
    image_from_array,
    image_from_pil,
    image_mime,
    png_bytes,
    tensor_image_hwc,
)
from smoothguard.media.sources import Kind, is_tensor, read_source, tensor_to_numpy

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_MAX_PIXELS", "DEFAULT_MAX_SECONDS", "Fit", "Media"]

DEFAULT_MAX_PIXELS = 25_000_000
"""Largest image accepted, in pixels (width * height); also ``GuardConfig.max_image_pixels``'s default."""
DEFAULT_MAX_BYTES = 50 * 1024 * 1024
"""Largest encoded input accepted, in bytes; also ``GuardConfig.max_media_bytes``'s default."""
DEFAULT_MAX_SECONDS = 600.0
"""Longest audio clip accepted, in seconds."""



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
        source_size: images only: ``(width, height)`` of the image as it was given, before any resize (a decode
            with ``fit`` or :meth:`resized`); ``None`` for audio.
    """

    __slots__ = ("_hash", "data", "format", "kind", "mime_type", "sample_rate", "source_size", "wav_subtype")

    kind: Kind
    data: np.ndarray
    sample_rate: int | None
    format: str
    mime_type: str
    wav_subtype: str | None
    source_size: tuple[int, int] | None

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
            _set(self, kind, _checked_image_data(data), format, mime_type or image_mime(format), None, None)
        elif kind == "audio":
            _set(self, kind, _checked_audio_data(data), format, mime_type or "audio/wav",
                 check_rate(sample_rate), check_subtype(wav_subtype or "pcm16"))
        else:
            raise MediaError(f"Media kind must be 'image' or 'audio', not {kind!r}")

    @classmethod
    def _make(cls, kind: Kind, data: np.ndarray, format: str, *, mime_type: str | None = None,
              sample_rate: int | None = None, wav_subtype: str | None = None,
              source_size: tuple[int, int] | None = None) -> Media:
        """Build from a float32 array this module owns or a read-only one it shares (no copy, no validation)."""
        self = object.__new__(cls)
        mime = mime_type or (image_mime(format) if kind == "image" else "audio/wav")
        _set(self, kind, data, format, mime, sample_rate, wav_subtype, source_size)
        return self

    # ------------------------------------------------------------------ decoders

    @classmethod
    def image(
        cls, x: Any, *, max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int = DEFAULT_MAX_BYTES,
        fit: Fit | None = None,
    ) -> Media:
        """Decode an image from a PIL image, array, tensor, bytes, path, ``data:`` URL or Media.

        Alpha is composited over white; an animated GIF gives its first frame (a PIL image is read
        at its current frame, never seeked); EXIF orientation is applied. Arrays: uint8, uint16
        (/65535), bool, float in ``[0, 1]``, or other integers in ``[0, 255]``, shaped ``(H, W)``
        or ``(H, W, C)`` with C in 1..4 (2 = gray + alpha).
        Tensors: also ``(C, H, W)`` and a batch of one. ``max_pixels`` bounds width * height,
        ``max_bytes`` the encoded size (PIL's own ``Image.MAX_IMAGE_PIXELS`` guard applies too).
        ``fit``: ``fit(width, height)`` -> the size the image is wanted at; when smaller, the image comes back at
        that size (as :meth:`resized` makes it, with :attr:`source_size` the size given), and a JPEG is decoded
        straight to it (libjpeg's DCT scaling to the smallest scale not below it, then Lanczos): a 12 MP photo
        wanted at 1024x768 decodes in about half the time and a tenth of the memory.
        Raises :class:`MediaError` for anything unusable.
        """
        if isinstance(x, Media):
            if x.kind != "image":
                raise MediaError("Media.image got an audio Media; pass an image")
            return x._fitted(fit)
        if isinstance(x, Image.Image):
            media = cls._make("image", image_from_pil(x, max_pixels, f"the {x.mode} PIL image"), "pil")
        elif isinstance(x, np.ndarray):
            media = cls._make("image", image_from_array(x, max_pixels), "array")
        elif is_tensor(x):
            media = cls._make("image", image_from_array(tensor_image_hwc(x), max_pixels), "tensor")
        elif isinstance(x, bytes | bytearray | memoryview | str | os.PathLike):
            raw = bytes(x) if isinstance(x, bytes | bytearray | memoryview) else read_source(x, "image", max_bytes)
            decoded = decode_image_bytes(raw, max_pixels, max_bytes, fit)
            height, width = decoded.data.shape[:2]
            fmt = decoded.format if (width, height) == decoded.source_size else "png"  # resized: written lossless
            media = cls._make("image", decoded.data, fmt, source_size=decoded.source_size)
        else:
            raise MediaError(f"Media.image cannot read a {type(x).__name__}; pass {_IMAGE_INPUTS}")
        return media._fitted(fit)

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
        if isinstance(x, np.ndarray) or is_tensor(x):
            rate = require_rate(sample_rate)
            arr = tensor_to_numpy(x) if is_tensor(x) else x
            if is_tensor(x) and arr.ndim == 3 and arr.shape[0] == 1:
                arr = arr[0]  # a batch of one
            data = audio_from_array(arr)
            check_duration(len(data), rate, max_seconds)
            return cls._make("audio", data, "array", sample_rate=rate, wav_subtype="pcm16")
        if isinstance(x, bytes | bytearray | memoryview):
            raw = bytes(x)
        elif isinstance(x, str | os.PathLike):
            raw = read_source(x, "audio", max_bytes)
        else:
            raise MediaError(f"Media.audio cannot read a {type(x).__name__}; pass {_AUDIO_INPUTS}")
        data, rate, subtype = decode_wav(raw, max_bytes, max_seconds)
        if sample_rate is not None and sample_rate != rate:
            raise MediaError(f"sample_rate={sample_rate} does not match the WAV file's {rate} Hz; "
                             "leave sample_rate out or resample the file first")
        return cls._make("audio", data, "wav", sample_rate=rate, wav_subtype=subtype)

    def with_data(self, data: np.ndarray) -> Media:
        """A copy with new ``data`` (same kind, format, sample rate, subtype); e.g. a noisy copy.

        ``data`` must be a float array in the canonical shape and range; it is copied to float32.
        """
        checked = _checked_image_data(data) if self.kind == "image" else _checked_audio_data(data)
        source = self.source_size if checked.shape == self.data.shape else None
        return Media._make(self.kind, checked, self.format, mime_type=self.mime_type,
                           sample_rate=self.sample_rate, wav_subtype=self.wav_subtype, source_size=source)

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
        return Media._make("image", data, "png", source_size=self.source_size)

    def _fitted(self, fit: Fit | None) -> Media:
        """The image at ``fit(*source_size)`` when that is smaller than it is now, else itself."""
        if fit is None:
            return self
        width, height = fit(*(self.source_size or (self.width, self.height)))
        if width * height >= self.width * self.height:
            return self
        return self.resized(width, height)

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
        written for speed (see :func:`png_bytes`).
        """
        if self.kind == "audio":
            if format not in (None, "wav"):
                raise MediaError(f"audio is written only as 'wav', not {format!r}")
            return self.to_wav_bytes()
        fmt = self._out_format(format)
        if fmt == "png":
            return png_bytes(self._image_uint8())
        buf = io.BytesIO()
        options = {"quality": LOSSY_QUALITY} if fmt in ("jpeg", "webp") else {}
        self.to_pil().save(buf, IMAGE_WRITERS[fmt], **options)
        return buf.getvalue()

    def to_data_url(self, format: str | None = None) -> str:
        """``"data:<mime>;base64,..."`` of :meth:`to_bytes` (``format`` as there)."""
        mime = "audio/wav" if self.kind == "audio" else IMAGE_MIME[self._out_format(format)]
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
            return pcm(self.data, 16).astype(np.int16)
        allowed = "'float32' or 'uint8'" if self.kind == "image" else "'float32' or 'int16'"
        raise MediaError(f"to_array supports {allowed} for {self.kind}, not {name!r}")

    def to_wav_bytes(self, subtype: str | None = None) -> bytes:
        """The audio as a RIFF WAV file in ``subtype`` (default :attr:`wav_subtype`).

        ``"pcm16"`` and ``"float32"`` are the usual choices; ``"pcm8"``, ``"pcm24"``, ``"pcm32"``
        and ``"float64"`` are written too. PCM is ``rint(x * 2**(bits-1))``, clipped.
        """
        self._need("audio", "to_wav_bytes")
        return encode_wav(self.data, self.sample_rate or 0, check_subtype(subtype or self.wav_subtype))

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
                            self.wav_subtype, self.source_size))

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
            return self.format if self.format in IMAGE_WRITERS else "png"
        fmt = IMAGE_ALIASES.get(format.lower(), format.lower())
        if fmt not in IMAGE_WRITERS:
            raise MediaError(f"cannot write images as {format!r}; choose one of {sorted(IMAGE_WRITERS)}")
        return fmt


# ---------------------------------------------------------------------------- construction helpers


def _set(m: Media, kind: Kind, data: np.ndarray, format: str, mime: str, rate: int | None,
         subtype: str | None, source_size: tuple[int, int] | None = None) -> None:
    data.flags.writeable = False
    if kind == "image" and source_size is None:
        source_size = (int(data.shape[1]), int(data.shape[0]))
    for name, value in (("kind", kind), ("data", data), ("format", format), ("mime_type", mime),
                        ("sample_rate", rate), ("wav_subtype", subtype), ("source_size", source_size),
                        ("_hash", None)):
        object.__setattr__(m, name, value)


def _unpickle(kind: Kind, data: np.ndarray, format: str, mime: str, rate: int | None,
              subtype: str | None, source_size: tuple[int, int] | None = None) -> Media:
    media = Media(kind, data, format=format, mime_type=mime, sample_rate=rate, wav_subtype=subtype)
    if source_size is not None:
        object.__setattr__(media, "source_size", tuple(source_size))
    return media



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
            or (arr.ndim == 2 and not 1 <= arr.shape[1] <= MAX_CHANNELS)):
        raise MediaError(f"audio data must be a non-empty float array of shape (frames,) or "
                         f"(frames, channels) with 1..{MAX_CHANNELS} channels, got {arr.dtype} {arr.shape}")
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


