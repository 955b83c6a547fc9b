"""Tests of smoothguard.media: every accepted input form, the encoders, round trips and the errors."""

from __future__ import annotations

import ast
import base64
import copy
import http.server
import io
import pickle
import struct
import threading
import wave
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

import smoothguard.media as media_module
from smoothguard import GuardConfig
from smoothguard.errors import MediaError
from smoothguard.media import Media, fetch

RNG = np.random.default_rng(1234)


# ---------------------------------------------------------------------------- helpers


def rgb_u8(h: int = 6, w: int = 8) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def encode(img: Image.Image, fmt: str, **options: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **options)
    return buf.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width`` x ``height`` (and has no pixel data)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


_GUID_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"


def make_wav(payload: bytes, *, code: int = 1, channels: int = 1, rate: int = 16000, bits: int = 16,
             extensible: bool = False, before_data: bytes = b"", data_size: int | None = None,
             with_data: bool = True) -> bytes:
    """A RIFF WAV written by hand with struct (independent of the module's encoder)."""
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 0xFFFE if extensible else code, channels, rate, rate * block, block, bits)
    if extensible:
        fmt += struct.pack("<HHI", 22, bits, 0) + struct.pack("<H", code) + _GUID_TAIL
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + before_data
    if with_data:
        size = len(payload) if data_size is None else data_size
        body += b"data" + struct.pack("<I", size) + payload + b"\0" * (len(payload) & 1)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def pcm16(x: np.ndarray) -> bytes:
    return np.clip(np.rint(x * 32768), -32768, 32767).astype("<i2").tobytes()


def sine(frames: int = 800, channels: int = 1) -> np.ndarray:
    t = np.arange(frames, dtype=np.float32) / 8000
    cols = [0.8 * np.sin(2 * np.pi * (220 + 110 * c) * t) for c in range(channels)]
    x = np.stack(cols, axis=1).astype(np.float32)
    return x[:, 0].copy() if channels == 1 else x


# ---------------------------------------------------------------------------- images: PIL input


def _palette_with_transparency() -> Image.Image:
    im = Image.new("P", (2, 1))
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    im.putpixel((1, 0), 1)
    im.info["transparency"] = 1
    return im


PIL_CASES = [
    ("RGB", lambda: Image.new("RGB", (2, 1), (10, 20, 30)), [10 / 255, 20 / 255, 30 / 255]),
    ("RGBA opaque", lambda: Image.new("RGBA", (2, 1), (10, 20, 30, 255)), [10 / 255, 20 / 255, 30 / 255]),
    ("RGBA clear", lambda: Image.new("RGBA", (2, 1), (255, 0, 0, 0)), [1, 1, 1]),
    ("RGBA half", lambda: Image.new("RGBA", (2, 1), (255, 0, 0, 51)), [1, 0.8, 0.8]),
    ("L", lambda: Image.new("L", (2, 1), 51), [0.2, 0.2, 0.2]),
    ("LA clear", lambda: Image.new("LA", (2, 1), (0, 0)), [1, 1, 1]),
    ("P", lambda: Image.new("RGB", (2, 1), (255, 0, 0)).convert("P"), [1, 0, 0]),
    ("CMYK", lambda: Image.new("CMYK", (2, 1), (0, 255, 255, 0)), [1, 0, 0]),
    ("I;16", lambda: Image.fromarray(np.full((1, 2), 1000, np.uint16)), [1000 / 65535] * 3),
    ("I", lambda: Image.new("I", (2, 1), 40000), [40000 / 65535] * 3),
    ("F", lambda: Image.new("F", (2, 1), 0.25), [0.25] * 3),
    ("1", lambda: Image.new("1", (2, 1), 1), [1, 1, 1]),
]


@pytest.mark.parametrize(("name", "build", "expected"), PIL_CASES, ids=[c[0] for c in PIL_CASES])
def test_pil_modes(name: str, build, expected: list[float]) -> None:
    im = build()
    before = (im.mode, im.size, im.tobytes())
    m = Media.image(im)
    assert m.kind == "image" and m.format == "pil" and m.mime_type == "image/png"
    assert m.data.shape == (1, 2, 3) and m.data.dtype == np.float32
    np.testing.assert_allclose(m.data[0, 0], expected, atol=1e-6)
    assert (im.mode, im.size, im.tobytes()) == before


def test_palette_transparency_is_white() -> None:
    m = Media.image(_palette_with_transparency())
    np.testing.assert_allclose(m.data[0], [[1, 0, 0], [1, 1, 1]])


def test_sixteen_bit_precision_kept() -> None:
    values = np.array([[1000, 1001, 65535]], np.uint16)
    for x in (Image.fromarray(values), encode(Image.fromarray(values), "PNG"), values):
        data = Media.image(x).data
        np.testing.assert_allclose(data[0, :, 0], values[0] / 65535, rtol=1e-6)
        assert data[0, 0, 0] != data[0, 1, 0]


def test_bad_pil_values() -> None:
    with pytest.raises(MediaError, match="65535"):
        Media.image(Image.new("I", (2, 1), -5))
    with pytest.raises(MediaError, match=r"got max 2\.0"):
        Media.image(Image.new("F", (2, 1), 2.0))


# ---------------------------------------------------------------------------- images: encoded input


@pytest.mark.parametrize(
    ("fmt", "name", "mime", "lossless"),
    [("PNG", "png", "image/png", True), ("JPEG", "jpeg", "image/jpeg", False),
     ("WEBP", "webp", "image/webp", False), ("GIF", "gif", "image/png", False),
     ("BMP", "bmp", "image/bmp", True), ("TIFF", "tiff", "image/tiff", True)],
)
def test_encoded_formats(fmt: str, name: str, mime: str, lossless: bool) -> None:
    pixels = np.zeros((16, 16, 3), np.uint8)
    pixels[:, 8:] = (200, 40, 90)
    raw = encode(Image.fromarray(pixels), fmt)
    m = Media.image(raw)
    assert (m.format, m.mime_type, m.width, m.height) == (name, mime, 16, 16)
    error = np.abs(m.data - pixels / 255)
    assert error.max() < 1e-6 if lossless else error.mean() < 0.03
    assert Media.image(bytearray(raw)).format == name
    assert Media.image(memoryview(raw)).format == name
    out = Media.image(m.to_bytes())  # written back in the source form (GIF -> PNG)
    assert out.format == ("png" if name == "gif" else name)
    if lossless:
        assert np.array_equal(out.data, m.data)


def test_gif_first_frame() -> None:
    red, blue = Image.new("RGB", (4, 4), (255, 0, 0)), Image.new("RGB", (4, 4), (0, 0, 255))
    raw = encode(red, "GIF", save_all=True, append_images=[blue], duration=100, loop=0)
    assert Image.open(io.BytesIO(raw)).n_frames == 2
    np.testing.assert_allclose(Media.image(raw).data[0, 0], [1, 0, 0])


def test_exif_orientation_applied() -> None:
    im = Image.new("RGB", (40, 20), (255, 0, 0))
    im.paste((0, 0, 255), (20, 0, 40, 20))  # left red, right blue
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    m = Media.image(encode(im, "JPEG", exif=exif, quality=95))
    assert (m.width, m.height) == (20, 40)
    np.testing.assert_allclose(m.data[2, 10], [1, 0, 0], atol=0.05)  # red is now on top
    np.testing.assert_allclose(m.data[37, 10], [0, 0, 1], atol=0.05)


def test_alpha_png_on_white() -> None:
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (0, 0, 0, 255)
    m = Media.image(encode(Image.fromarray(rgba), "PNG"))
    np.testing.assert_allclose(m.data[0, 0], [0, 0, 0])
    np.testing.assert_allclose(m.data[1, 1], [1, 1, 1])


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_image(fmt: str) -> None:
    raw = encode(Image.fromarray(rgb_u8(64, 64)), fmt)
    with pytest.raises(MediaError, match=r"could not decode image bytes \(\d+ bytes\)"):
        Media.image(raw[: len(raw) // 2])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize(
    ("raw", "pattern"),
    [(b"", r"\(0 bytes\)"), (b"this is not an image", "not a PNG, JPEG"),
     (b"\x89PNG\r\n\x1a\n" + b"\0" * 30, "could not decode image bytes")],
)
def test_undecodable_bytes(raw: bytes, pattern: str) -> None:
    with pytest.raises(MediaError, match=pattern):
        Media.image(raw)


def test_decompression_bombs() -> None:
    with pytest.raises(MediaError, match="too large"):  # PIL's own limit, raised inside Image.open
        Media.image(png_header(100_000, 100_000))
    with pytest.raises(MediaError, match="max_pixels"):  # over ours, below PIL's
        Media.image(png_header(8000, 6000))
    raw = encode(Image.fromarray(rgb_u8(20, 20)), "PNG")
    with pytest.raises(MediaError, match="max_pixels=100"):
        Media.image(raw, max_pixels=100)
    with pytest.raises(MediaError, match="max_pixels"):
        Media.image(rgb_u8(20, 20), max_pixels=399)
    with pytest.raises(MediaError, match="max_pixels"):
        Media.image(Image.new("RGB", (20, 20)), max_pixels=399)


def test_oversized_bytes() -> None:
    raw = encode(Image.fromarray(rgb_u8()), "PNG")
    with pytest.raises(MediaError, match="max_bytes=10"):
        Media.image(raw, max_bytes=10)


def test_zero_size_pil() -> None:
    with pytest.raises(MediaError, match="zero size"):
        Media.image(Image.new("RGB", (0, 5)))


# ---------------------------------------------------------------------------- images: arrays


@pytest.mark.parametrize(
    ("arr", "expected"),
    [
        (np.full((2, 3), 51, np.uint8), [0.2] * 3),
        (np.full((2, 3, 1), 51, np.uint8), [0.2] * 3),
        (np.full((2, 3, 3), (255, 0, 51), np.uint8), [1, 0, 0.2]),
        (np.full((2, 3, 4), (255, 0, 0, 0), np.uint8), [1, 1, 1]),
        (np.full((2, 3, 4), (0, 0, 0, 255), np.uint8), [0, 0, 0]),
        (np.full((2, 3, 2), (0, 51), np.uint8), [0.8] * 3),
        (np.full((2, 3, 3), 0.25, np.float32), [0.25] * 3),
        (np.full((2, 3, 3), 0.5, np.float64), [0.5] * 3),
        (np.full((2, 3), 0.5, np.float16), [0.5] * 3),
        (np.full((2, 3, 4), (0.0, 0.0, 0.0, 0.5), np.float32), [0.5] * 3),
        (np.full((2, 3, 3), 65535, np.uint16), [1, 1, 1]),
        (np.ones((2, 3), bool), [1, 1, 1]),
        (np.full((2, 3, 3), 51, np.int32), [0.2] * 3),
        (np.full((2, 3), 255, np.int64), [1, 1, 1]),
    ],
    ids=lambda v: f"{v.dtype}{v.shape}" if isinstance(v, np.ndarray) else "",
)
def test_image_arrays(arr: np.ndarray, expected: list[float]) -> None:
    before = arr.copy()
    m = Media.image(arr)
    assert m.format == "array" and m.data.shape == (2, 3, 3) and m.data.dtype == np.float32
    np.testing.assert_allclose(m.data[1, 2], expected, atol=1e-6)
    assert np.array_equal(arr, before) and arr.dtype == before.dtype
    assert not np.shares_memory(m.data, arr)


@pytest.mark.parametrize(
    ("arr", "pattern"),
    [
        (np.full((2, 2, 3), 255.0), r"\[0, 1\] \(got max 255.0\): divide by 255"),
        (np.full((2, 2, 3), -0.5, np.float32), r"got min -0.5"),
        (np.array([[0.1, np.nan]]), "finite"),
        (np.array([[0.1, np.inf]]), "finite"),
        (np.full((2, 2), 300, np.int32), r"\[0, 255\]"),
        (np.full((2, 2), -1, np.int64), r"\[0, 255\]"),
        (np.zeros(5, np.uint8), "shape"),
        (np.zeros((1, 2, 2, 3), np.uint8), "shape"),
        (np.zeros((0, 4, 3), np.uint8), "zero size"),
        (np.zeros((4, 4, 5), np.uint8), "1 to 4 channels"),
        (np.zeros((3, 32, 32), np.uint8), "transpose"),
        (np.zeros((2, 2), np.complex64), "dtype"),
    ],
    ids=lambda v: f"{v.dtype}{v.shape}" if isinstance(v, np.ndarray) else "",
)
def test_bad_image_arrays(arr: np.ndarray, pattern: str) -> None:
    with pytest.raises(MediaError, match=pattern):
        Media.image(arr)


# ---------------------------------------------------------------------------- images: tensors


@pytest.mark.parametrize(
    "build",
    [
        lambda base: torch.from_numpy(base).permute(2, 0, 1).float() / 255,  # CHW float
        lambda base: torch.from_numpy(base.copy()),  # HWC uint8
        lambda base: (torch.from_numpy(base).permute(2, 0, 1).float() / 255)[None],  # 1CHW
        lambda base: torch.from_numpy(base).float().div(255).requires_grad_(),  # HWC, grad
    ],
    ids=["chw-float", "hwc-uint8", "batch1", "requires-grad"],
)
def test_tensors(build) -> None:
    base = rgb_u8(6, 8)
    t = build(base)
    before = t.detach().clone()
    m = Media.image(t)
    assert m.format == "tensor" and m.data.shape == (6, 8, 3)
    np.testing.assert_allclose(m.data, base / 255, atol=1e-6)
    assert torch.equal(t.detach(), before)


def test_tensor_gray_and_bfloat16() -> None:
    m = Media.image(torch.full((1, 5, 7), 0.5))
    assert m.data.shape == (5, 7, 3)
    m = Media.image(torch.full((3, 5, 7), 0.5, dtype=torch.bfloat16))
    np.testing.assert_allclose(m.data, 0.5)


@pytest.mark.parametrize(
    ("t", "pattern"),
    [(torch.zeros(2, 3, 4, 4), "batch of 2"), (torch.full((3, 4, 4), 2.0), "got max 2.0"),
     (torch.zeros(2, 2, 2, 2, 2), "shape"), (torch.zeros(5, 6, 7), "channels")],
)
def test_bad_tensors(t: torch.Tensor, pattern: str) -> None:
    with pytest.raises(MediaError, match=pattern):
        Media.image(t)


# ---------------------------------------------------------------------------- images: paths, URLs, others


def test_image_paths(tmp_path: Path) -> None:
    pixels = rgb_u8()
    path = tmp_path / "x.png"
    path.write_bytes(encode(Image.fromarray(pixels), "PNG"))
    for source in (path, str(path)):
        m = Media.image(source)
        assert m.format == "png" and np.array_equal(m.to_array("uint8"), pixels)
    with pytest.raises(MediaError, match="max_bytes=10"):
        Media.image(path, max_bytes=10)
    with pytest.raises(MediaError, match=r"not found: .*missing\.png"):
        Media.image(tmp_path / "missing.png")
    with pytest.raises(MediaError, match="not a file"):
        Media.image(tmp_path)


def test_data_urls() -> None:
    pixels = rgb_u8()
    payload = base64.b64encode(encode(Image.fromarray(pixels), "PNG")).decode()
    m = Media.image(f"data:image/png;base64,{payload}")
    assert np.array_equal(m.to_array("uint8"), pixels)
    wrapped = "\n".join(payload[i : i + 60] for i in range(0, len(payload), 60))
    assert Media.image(f"data:image/png;base64,{wrapped}") == m
    with pytest.raises(MediaError, match="text/plain"):
        Media.image(f"data:text/plain;base64,{payload}")
    with pytest.raises(MediaError, match="base64"):
        Media.image("data:image/png;base64,@@not*base64@@")
    with pytest.raises(MediaError, match="base64"):
        Media.image("data:image/png,rawtext")
    with pytest.raises(MediaError, match="image/png"):
        Media.audio(f"data:image/png;base64,{payload}")


@pytest.mark.parametrize("url", ["http://example.com/a.png", "HTTPS://example.com/a.png"])
def test_urls_need_fetch(url: str) -> None:
    with pytest.raises(MediaError, match=r"fetch\(url, 'image'\)"):
        Media.image(url)
    with pytest.raises(MediaError, match=r"fetch\(url, 'audio'\)"):
        Media.audio(url)


def test_media_passthrough_and_unsupported() -> None:
    img = Media.image(rgb_u8())
    snd = Media.audio(sine(), 8000)
    assert Media.image(img) is img and Media.audio(snd) is snd and Media.audio(snd, 8000) is snd
    with pytest.raises(MediaError, match="audio Media"):
        Media.image(snd)
    with pytest.raises(MediaError, match="image Media"):
        Media.audio(img)
    with pytest.raises(MediaError, match="does not match"):
        Media.audio(snd, 16000)
    with pytest.raises(MediaError, match=r"cannot read a list; pass .*PIL image"):
        Media.image([[0, 1]])
    with pytest.raises(MediaError, match=r"cannot read a int; pass .*WAV bytes"):
        Media.audio(3)


# ---------------------------------------------------------------------------- images: encoders


def test_png_round_trip_and_encoders() -> None:
    pixels = rgb_u8()
    m = Media.image(pixels)
    assert np.array_equal(Media.image(m.to_png_bytes()).data, m.data)
    assert np.array_equal(Media.image(m.to_data_url()).data, m.data)
    assert m.to_data_url().startswith("data:image/png;base64,")
    assert m.to_data_url("jpg").startswith("data:image/jpeg;base64,")
    assert m.to_bytes().startswith(b"\x89PNG")
    pil = m.to_pil()
    assert pil.mode == "RGB" and pil.size == (8, 6) and np.array_equal(np.asarray(pil), pixels)
    for fmt, magic in [("jpeg", b"\xff\xd8"), ("webp", b"RIFF"), ("bmp", b"BM"), ("tif", b"II")]:
        assert m.to_bytes(fmt).startswith(magic)
    with pytest.raises(MediaError, match="cannot write images as 'gif'"):
        m.to_bytes("gif")
    with pytest.raises(MediaError, match="wav_bytes is defined only for audio"):
        m.to_wav_bytes()


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (5, 1), (33, 17), (64, 64)])
def test_png_writer_is_exact_for_every_shape(shape: tuple[int, int]) -> None:
    """Our own PNG writer ("up" filter, Huffman-only deflate) decodes, with PIL and zlib's checks, to the pixels."""
    pixels = rgb_u8(*shape)
    png = Media.image(pixels).to_png_bytes()
    decoded = Image.open(io.BytesIO(png))
    decoded.load()  # verifies every chunk's CRC and the deflate stream
    assert decoded.mode == "RGB" and np.array_equal(np.asarray(decoded), pixels)


def test_png_of_a_noisy_copy_is_as_small_as_pil_level_6() -> None:
    """The writer trades no bytes for its speed on what it mostly writes: smooth images under noise."""
    y, x = np.mgrid[0:128, 0:128] / 127
    smooth = np.stack([0.3 + 0.4 * x, 0.3 + 0.4 * y, 0.5 + 0.1 * x * y], axis=-1)
    for sigma in (0.03, 0.1):
        noisy = Media.image(np.clip(smooth + RNG.normal(0, sigma, smooth.shape), 0, 1).astype(np.float32))
        ours = len(noisy.to_png_bytes())
        pil = len(encode(noisy.to_pil(), "PNG", compress_level=6))
        assert ours <= 1.02 * pil, (sigma, ours, pil)


def test_jpeg_stays_jpeg() -> None:
    m = Media.image(encode(Image.fromarray(rgb_u8(16, 16)), "JPEG"))
    assert m.mime_type == "image/jpeg" and m.to_bytes().startswith(b"\xff\xd8")
    assert m.to_data_url().startswith("data:image/jpeg;base64,")


def test_to_array_and_rounding() -> None:
    m = Media.image(np.array([[[0.5, 0.499, 1 / 510]]], np.float32))
    u8 = m.to_array("uint8")
    assert u8.dtype == np.uint8 and u8.tolist() == [[[128, 127, 0]]]  # np.rint: half to even
    f = m.to_array()
    f[:] = 0  # a writable copy
    assert m.data[0, 0, 0] == np.float32(0.5)
    with pytest.raises(MediaError, match="'float32' or 'uint8'"):
        m.to_array("int16")


def test_immutable_value_object() -> None:
    m = Media.image(rgb_u8())
    assert not m.data.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        m.data[0, 0, 0] = 1
    with pytest.raises(AttributeError, match="immutable"):
        m.format = "jpeg"  # type: ignore[misc]
    assert m == Media.image(m.to_array("uint8")) and hash(m) == hash(Media.image(m.to_array("uint8")))
    assert m != Media.image(rgb_u8())
    assert pickle.loads(pickle.dumps(m)) == m and copy.deepcopy(m) is m
    assert repr(m) == "Media(image 8x6 from array)" and (m.width, m.height) == (8, 6)
    with pytest.raises(MediaError, match="only for audio"):
        _ = m.duration


def test_with_data() -> None:
    m = Media.image(encode(Image.fromarray(rgb_u8()), "JPEG"))
    noisy = np.clip(m.data.astype(np.float64) + 0.01, 0, 1)
    n = m.with_data(noisy)
    assert (n.format, n.mime_type, n.kind) == ("jpeg", "image/jpeg", "image")
    assert n.data.dtype == np.float32 and not n.data.flags.writeable
    noisy[:] = 0
    assert n.data.max() > 0
    with pytest.raises(MediaError, match=r"\(H, W, 3\)"):
        m.with_data(np.zeros((6, 8)))
    with pytest.raises(MediaError, match="got max"):
        m.with_data(m.data + 1)
    with pytest.raises(MediaError, match="float"):
        m.with_data(m.to_array("uint8"))
    a = Media.audio(sine(), 8000)
    b = a.with_data(a.data * 0.5)
    assert (b.sample_rate, b.wav_subtype, b.format) == (8000, "pcm16", "array")
    with pytest.raises(MediaError, match=r"\[-1, 1\]"):
        a.with_data(a.data * 3)


# ---------------------------------------------------------------------------- audio: arrays and tensors


@pytest.mark.parametrize(
    ("arr", "expected"),
    [
        (np.array([0.5, -0.25, 1.0, -1.0], np.float32), [0.5, -0.25, 1.0, -1.0]),
        (np.array([0.5, -0.25, 0.0, 0.0]), [0.5, -0.25, 0.0, 0.0]),
        (np.array([16384, -32768, 0, 32767], np.int16), [0.5, -1.0, 0.0, 32767 / 32768]),
        (np.array([2**30, -(2**31), 0, 0], np.int32), [0.5, -1.0, 0.0, 0.0]),
        (np.array([192, 0, 128, 128], np.uint8), [0.5, -1.0, 0.0, 0.0]),
        (np.array([64, -128, 0, 0], np.int8), [0.5, -1.0, 0.0, 0.0]),
        (np.array([[0.5], [-0.25], [0.0], [0.0]], np.float32), [0.5, -0.25, 0.0, 0.0]),
    ],
    ids=lambda v: f"{v.dtype}{v.shape}" if isinstance(v, np.ndarray) else "",
)
def test_audio_arrays(arr: np.ndarray, expected: list[float]) -> None:
    before = arr.copy()
    m = Media.audio(arr, 16000)
    assert m.kind == "audio" and m.format == "array" and m.mime_type == "audio/wav"
    assert m.wav_subtype == "pcm16" and m.data.dtype == np.float32 and m.data.shape == (4,)
    np.testing.assert_allclose(m.data, expected, atol=1e-7)
    assert np.array_equal(arr, before)


def test_audio_layouts() -> None:
    x = sine(100, 2)
    frames_first = Media.audio(x, 8000)
    channels_first = Media.audio(x.T.copy(), 8000)
    assert frames_first.data.shape == channels_first.data.shape == (100, 2)
    assert np.array_equal(frames_first.data, channels_first.data)
    assert (frames_first.n_frames, frames_first.n_channels) == (100, 2)
    assert repr(frames_first) == "Media(audio 0.01 s 8000 Hz stereo from array)"
    assert repr(Media.audio(sine(12000), 8000)) == "Media(audio 1.50 s 8000 Hz mono from array)"
    assert Media.audio(sine(100, 3), 8000).n_channels == 3


def test_audio_tensors() -> None:
    x = sine(100, 2)
    t = torch.from_numpy(x.T.copy())  # (channels, frames), the torch habit
    before = t.clone()
    m = Media.audio(t, 8000)
    assert m.data.shape == (100, 2) and np.allclose(m.data, x)
    assert torch.equal(t, before)
    assert Media.audio(t[None], 8000).data.shape == (100, 2)  # batch of one
    assert Media.audio(torch.from_numpy(sine(50)), 8000).data.shape == (50,)
    assert Media.audio(torch.tensor([16384, -32768], dtype=torch.int16), 8000).data.tolist() == [0.5, -1.0]


@pytest.mark.parametrize(
    ("arr", "rate", "pattern"),
    [
        (sine(), None, "sample_rate is required"),
        (sine(), 16000.0, "positive int"),
        (sine(), True, "positive int"),
        (sine(), -1, "positive int"),
        (sine(), 100, r"outside \[1000, 384000\]"),
        (sine(), 1_000_000, "outside"),
        (np.zeros(0, np.float32), 8000, "no samples"),
        (np.zeros((2, 0), np.float32), 8000, "no samples"),
        (np.zeros((100, 9), np.float32), 8000, "9 channels"),
        (np.zeros((2, 2, 2), np.float32), 8000, "shape"),
        (np.array([0.1, np.nan]), 8000, "finite"),
        (np.array([0.1, np.inf]), 8000, "finite"),
        (np.array([1000.0, -2.0]), 8000, r"\[-1, 1\].*32768"),
        (np.zeros(4, np.int64), 8000, "unsupported audio dtype int64"),
        (np.zeros(8001, np.float32), 8000, "max_seconds=1.0"),
    ],
)
def test_bad_audio_arrays(arr: np.ndarray, rate: object, pattern: str) -> None:
    with pytest.raises(MediaError, match=pattern):
        Media.audio(arr, rate, max_seconds=1.0)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- audio: WAV input


def _pcm_payload(bits: int, ints: np.ndarray) -> bytes:
    if bits == 8:
        return (ints + 128).astype(np.uint8).tobytes()
    if bits == 24:
        return ints.astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    return ints.astype(f"<i{bits // 8}").tobytes()


@pytest.mark.parametrize("bits", [8, 16, 24, 32])
@pytest.mark.parametrize("extensible", [False, True])
def test_pcm_wav(bits: int, extensible: bool) -> None:
    full = 2 ** (bits - 1)
    ints = np.array([[-full, full - 1], [full // 2, -full // 4], [0, 1]], np.int64)
    raw = make_wav(_pcm_payload(bits, ints), channels=2, rate=22050, bits=bits, extensible=extensible)
    m = Media.audio(raw)
    assert (m.format, m.sample_rate, m.wav_subtype, m.data.shape) == ("wav", 22050, f"pcm{bits}", (3, 2))
    np.testing.assert_allclose(m.data, ints / full, atol=1e-7)
    assert Media.audio(m.to_wav_bytes()) == m  # written back in the same sample format, bit-exact
    assert Media.audio(raw, 22050) == m


@pytest.mark.parametrize(("bits", "extensible"), [(32, False), (64, False), (32, True)])
def test_float_wav(bits: int, extensible: bool) -> None:
    x = sine(50)
    raw = make_wav(x.astype(f"<f{bits // 8}").tobytes(), code=3, bits=bits, rate=8000, extensible=extensible)
    m = Media.audio(raw)
    assert m.wav_subtype == f"float{bits}" and m.data.shape == (50,)
    assert np.array_equal(m.data, x)
    again = Media.audio(m.to_wav_bytes())
    assert again.wav_subtype == f"float{bits}" and np.array_equal(again.data, x)


def test_wav_odd_chunk_padding_and_sources(tmp_path: Path) -> None:
    x = sine(101)
    odd = b"LIST" + struct.pack("<I", 3) + b"abc" + b"\0"  # odd size, one pad byte
    raw = make_wav(pcm16(x), rate=8000, before_data=odd)
    m = Media.audio(raw)
    np.testing.assert_allclose(m.data, x, atol=1 / 32768)
    path = tmp_path / "a.wav"
    path.write_bytes(raw)
    assert Media.audio(path) == m and Media.audio(str(path)) == m
    for mime in ("audio/wav", "audio/x-wav", "audio/wave"):
        assert Media.audio(f"data:{mime};base64,{base64.b64encode(raw).decode()}") == m
    pcm8_odd = make_wav(np.full(3, 128, np.uint8).tobytes(), bits=8, rate=8000)  # data chunk needs a pad byte
    assert Media.audio(pcm8_odd).n_frames == 3
    with pytest.raises(MediaError, match="not found"):
        Media.audio(tmp_path / "nope.wav")


@pytest.mark.parametrize(
    ("raw", "pattern"),
    [
        (make_wav(pcm16(sine(100)), data_size=400), "truncated"),
        (make_wav(pcm16(sine(100)))[:-50], "truncated"),
        (make_wav(b"", with_data=False), "no 'data' chunk"),
        (make_wav(b""), "0 samples"),
        (make_wav(np.zeros(18, "<i2").tobytes(), channels=9), "9 channels"),
        (make_wav(np.zeros(8, "<i2").tobytes(), channels=0), "0 channels"),
        (make_wav(b"\0" * 16, code=0x55), "0x0055 \\(MP3\\)"),
        (make_wav(b"\0" * 16, code=2, bits=4), "0x0002"),
        (make_wav(b"\0" * 16, code=0x55, extensible=True), "0x0055"),
        (make_wav(b"\0" * 16, bits=12), "12-bit PCM"),
        (make_wav(b"\0" * 16, rate=50), "outside"),
        (make_wav(np.array([2.0, 0.0], "<f4").tobytes(), code=3, bits=32), r"\[-1, 1\]"),
        (make_wav(np.array([np.nan, 0.0], "<f4").tobytes(), code=3, bits=32), "finite"),
        (b"", r"\(0 bytes\)"),
        (b"ID3\x04\x00" + b"\0" * 40, "only WAV.*MP3.*decode it first"),
        (b"OggS" + b"\0" * 40, "only WAV.*Ogg"),
        (b"RIFF\x10\x00\x00\x00AVI LIST", "only WAV"),
        (b"RIFF\x10\x00\x00\x00WAVEfmt \x02\x00\x00\x00\x01\x00", "at least 16"),
    ],
)
def test_bad_wav(raw: bytes, pattern: str) -> None:
    with pytest.raises(MediaError, match=pattern):
        Media.audio(raw)


def test_wav_limits_and_rate_mismatch() -> None:
    raw = make_wav(pcm16(sine(8000)), rate=8000)
    with pytest.raises(MediaError, match="does not match"):
        Media.audio(raw, 16000)
    with pytest.raises(MediaError, match=r"max_seconds=0\.5"):
        Media.audio(raw, max_seconds=0.5)
    with pytest.raises(MediaError, match="max_bytes=100"):
        Media.audio(raw, max_bytes=100)


# ---------------------------------------------------------------------------- audio: encoders


@pytest.mark.parametrize("channels", [1, 2])
def test_wav_round_trip(channels: int) -> None:
    x = np.clip(RNG.normal(0, 0.5, (1000, channels)), -1, 1).astype(np.float32)
    x[:4, 0] = [1.0, -1.0, 0.99999, -0.99999]
    m = Media.audio(x if channels > 1 else x[:, 0], 16000)
    back = Media.audio(m.to_wav_bytes())
    assert back.data.shape == m.data.shape and back.sample_rate == 16000
    assert np.abs(back.data - m.data).max() <= 1 / 32767
    exact = Media.audio(m.to_wav_bytes("float32"))
    assert np.array_equal(exact.data, m.data) and exact.wav_subtype == "float32"
    with wave.open(io.BytesIO(m.to_wav_bytes())) as w:  # the standard library can read pcm16 output
        header = (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes())
        assert header == (channels, 2, 16000, 1000)
        ints = np.frombuffer(w.readframes(1000), "<i2").reshape(1000, channels)
    assert np.array_equal(ints, m.to_array("int16").reshape(1000, channels))
    assert m.to_bytes() == m.to_wav_bytes()
    assert m.to_data_url().startswith("data:audio/wav;base64,")


def test_audio_encoder_errors() -> None:
    m = Media.audio(sine(), 8000)
    with pytest.raises(MediaError, match="unknown WAV subtype"):
        m.to_wav_bytes("mp3")
    with pytest.raises(MediaError, match="only as 'wav'"):
        m.to_bytes("png")
    with pytest.raises(MediaError, match="only for image"):
        m.to_pil()
    with pytest.raises(MediaError, match="'float32' or 'int16'"):
        m.to_array("uint8")
    assert m.to_array("int16").dtype == np.int16
    assert m.duration == pytest.approx(0.1)


# ---------------------------------------------------------------------------- fetch


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    png = encode(Image.fromarray(np.full((4, 4, 3), 200, np.uint8)), "PNG")
    routes = {"/a.png": png, "/a.wav": make_wav(pcm16(sine(80)), rate=8000), "/page": b"<html></html>"}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = routes.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            kind = "text/html" if self.path == "/page" else "application/octet-stream"
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_fetch(server: str) -> None:
    local = {"allow_private": True}  # the test server is on 127.0.0.1
    img = fetch(f"{server}/a.png", "image", **local)
    assert img.format == "png" and np.allclose(img.data, 200 / 255)
    snd = fetch(f"{server}/a.wav", "audio", **local)
    assert snd.sample_rate == 8000 and snd.n_frames == 80
    with pytest.raises(MediaError, match=r"a\.png.*max_bytes=20"):
        fetch(f"{server}/a.png", "image", max_bytes=20, **local)
    with pytest.raises(MediaError, match=r"/missing.*HTTP 404"):
        fetch(f"{server}/missing", "image", **local)
    with pytest.raises(MediaError, match=r"/page.*text/html"):
        fetch(f"{server}/page", "image", **local)
    with pytest.raises(MediaError, match=r"'127\.0\.0\.1' resolves to a non-public address"):
        fetch(f"{server}/a.png", "image")  # by default: no fetching into the local network


def test_fetch_errors() -> None:
    with pytest.raises(MediaError, match=r"127\.0\.0\.1:9"):
        fetch("http://127.0.0.1:9/x.png", "image", timeout=2, allow_private=True)
    with pytest.raises(MediaError, match="http"):
        fetch("file:///etc/passwd", "image")
    with pytest.raises(MediaError, match="kind"):
        fetch("http://127.0.0.1:9/x.png", "video")


# ---------------------------------------------------------------------------- module hygiene


def test_package_never_imports_torch() -> None:
    files = sorted(Path(media_module.__file__).parent.glob("*.py"))
    assert len(files) >= 5
    for file in files:
        tree = ast.parse(file.read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert not [n for n in names if n.split(".")[0] == "torch"], file


def test_constants() -> None:
    assert media_module.DEFAULT_MAX_PIXELS == 25_000_000 == GuardConfig().max_image_pixels
    assert media_module.DEFAULT_MAX_BYTES == 50 * 1024 * 1024
    assert media_module.DEFAULT_MAX_SECONDS == 600.0
