"""Image codecs: decode encoded bytes, PIL images, arrays and tensors to canonical float32 RGB; write PNG fast."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
from PIL import Image, ImageOps

from smoothguard.errors import MediaError
from smoothguard.media.sources import tensor_to_numpy

# PIL format name -> our format name. MPO is what PIL calls a multi-picture (camera) JPEG.
_PIL_FORMATS = {"PNG": "png", "JPEG": "jpeg", "MPO": "jpeg", "WEBP": "webp", "GIF": "gif", "BMP": "bmp",
                "TIFF": "tiff"}
_PIL_OPENERS = ["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"]  # the JPEG opener also yields MPO
IMAGE_MIME = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp", "gif": "image/gif",
               "bmp": "image/bmp", "tiff": "image/tiff"}
# Formats we can write; everything else (gif, pil, array, tensor) is written as PNG.
IMAGE_WRITERS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP", "bmp": "BMP", "tiff": "TIFF"}
IMAGE_ALIASES = {"jpg": "jpeg", "tif": "tiff"}
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
LOSSY_QUALITY = 95  # JPEG/WebP quality: high, so the added noise survives re-encoding

Fit = Callable[[int, int], tuple[int, int]]
"""``fit(width, height)`` -> the ``(width, height)`` an image is wanted at (see :meth:`Media.image`)."""


def png_bytes(pixels: np.ndarray) -> bytes:
    """RGB uint8 pixels (H, W, 3) as a PNG file: the "up" filter on every row, deflate with Huffman coding only.

    Noisy copies have few repeated strings for deflate to find. Huffman-only deflate of the row differences makes
    them as small as PIL's best setting (level 6, adaptive filters) at 3-5x the speed of PIL's fastest (level 1):
    8.7 ms against 28.9 ms for a noisy 512x512 copy on the project's CPU (benchmarks/bench_perturb.py), and zlib
    releases the GIL, so copies encode in parallel threads. Clean smooth images come out near PIL's level 1 size.
    Pillow's own closest options (``compress_type=zlib.Z_HUFFMAN_ONLY``, any ``compress_level``) give the same size
    but keep its adaptive per-row filter choice: 133 ms against 34 ms here for a noisy 1024x768 copy (Pillow 13).
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



# ---------------------------------------------------------------------------- images


class Decoded(NamedTuple):
    """An image decoded from bytes: canonical data, our format name, and its ``(width, height)`` as encoded (after
    EXIF orientation), which ``data`` is smaller than when it was decoded to a ``fit``."""

    data: np.ndarray
    format: str
    source_size: tuple[int, int]


def decode_image_bytes(raw: bytes, max_pixels: int, max_bytes: int, fit: Fit | None = None) -> Decoded:
    """Decode PNG/JPEG/WebP/GIF/BMP/TIFF bytes; a JPEG wanted smaller (``fit``) is decoded straight to that size."""
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
    data, source = _decoded(img, max_pixels, what, fit)
    return Decoded(data, _PIL_FORMATS.get(img.format or "", "png"), source)


def image_from_pil(img: Image.Image, max_pixels: int, what: str) -> np.ndarray:
    """Canonical data of a PIL image; every failure becomes a MediaError about ``what``."""
    return _decoded(img, max_pixels, what, None)[0]


def _decoded(img: Image.Image, max_pixels: int, what: str, fit: Fit | None) -> tuple[np.ndarray, tuple[int, int]]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return _pil_pixels(img, max_pixels, fit)
    except MediaError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise MediaError(f"image is too large to decode safely: {exc}") from exc
    except Exception as exc:
        raise MediaError(f"could not decode {what}: {exc}") from exc


def _pil_pixels(img: Image.Image, max_pixels: int, fit: Fit | None) -> tuple[np.ndarray, tuple[int, int]]:
    """Pixels of a PIL image (current frame, EXIF orientation applied, alpha over white) and its ``(width,
    height)`` as encoded (after the orientation). With ``fit``, an 8-bit RGB or gray image larger than
    ``fit(width, height)`` comes back at that size (Lanczos), a JPEG decoded at the smallest DCT scale not below it."""
    w, h = img.size
    _check_pixels(h, w, max_pixels)  # before load(): the header may lie about a huge size
    source = target = None
    if fit is not None and img.format in ("JPEG", "MPO") and img.mode in ("RGB", "L"):
        source = _jpeg_oriented_size(img)
        target = fit(*source)
        if target[0] * target[1] < w * h:  # DCT scaling to the smallest scale not below the target
            img.draft(img.mode, target if source == (w, h) else (target[1], target[0]))
    img.load()  # full decode here, so truncated files fail now
    img = ImageOps.exif_transpose(img) or img
    if source is None:
        source = img.size
        target = fit(*source) if fit is not None else None
    mode = img.mode
    if target is not None and target[0] * target[1] < source[0] * source[1] and mode in ("RGB", "L") \
            and not _has_alpha(img):
        rgb = img.convert("RGB").resize(target, Image.Resampling.LANCZOS, reducing_gap=1.5)
        return image_from_array(np.asarray(rgb), max_pixels), source
    if mode.startswith("I;16"):
        return image_from_array(np.asarray(img).astype(np.uint16), max_pixels), source
    if mode == "I":
        arr = np.asarray(img)
        if arr.min() < 0 or arr.max() > 65535:
            raise MediaError("mode 'I' images must hold 16-bit values in [0, 65535]")
        return image_from_array(arr.astype(np.uint16), max_pixels), source
    if mode in ("F", "1"):
        return image_from_array(np.asarray(img), max_pixels), source
    target_mode = "RGBA" if _has_alpha(img) else "RGB"
    return image_from_array(np.asarray(img if mode == target_mode else img.convert(target_mode)), max_pixels), source


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in _ALPHA_MODES or "transparency" in img.info


def _jpeg_oriented_size(img: Image.Image) -> tuple[int, int]:
    """A JPEG's ``(width, height)`` after its EXIF orientation (5-8 swap the sides), read from its header: for a
    JPEG ``getexif()`` decodes nothing (for a PNG it would decode the whole image)."""
    w, h = img.size
    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception:  # an unreadable EXIF block: exif_transpose will not rotate either
        return w, h
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def _check_pixels(h: int, w: int, max_pixels: int) -> None:
    if h <= 0 or w <= 0:
        raise MediaError(f"image has zero size ({w}x{h})")
    if h * w > max_pixels:
        raise MediaError(f"image is {w}x{h} = {w * h} pixels, over max_pixels={max_pixels}; "
                         "downscale it or raise max_pixels")


def tensor_image_hwc(x: Any) -> np.ndarray:
    """A tensor's pixels as (H, W[, C]): CHW is transposed, a batch of one squeezed."""
    arr = tensor_to_numpy(x)
    if arr.ndim == 4:
        if arr.shape[0] != 1:
            raise MediaError(f"got a batch of {arr.shape[0]} images (shape {arr.shape}); pass one at a time")
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = arr.transpose(1, 2, 0)
    return arr


def image_from_array(arr: np.ndarray, max_pixels: int) -> np.ndarray:
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


def image_mime(format: str) -> str:
    return IMAGE_MIME[format] if format in IMAGE_WRITERS else "image/png"


def image_mime_of(raw: bytes) -> str:
    """The MIME type of encoded image bytes, from their header (``"image/png"`` when unrecognised)."""
    try:
        with Image.open(io.BytesIO(raw), formats=_PIL_OPENERS) as img:
            return IMAGE_MIME.get(_PIL_FORMATS.get(img.format or "", ""), "image/png")
    except Exception:  # not an image PIL opens: decoding it has already failed or will fail with a clear error
        return "image/png"
