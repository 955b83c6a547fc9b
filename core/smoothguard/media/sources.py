"""Where media bytes come from: tensors (duck-typed, no torch import), file paths and ``data:`` URLs."""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np

from smoothguard.errors import MediaError, shorten

Kind = Literal["image", "audio"]



# ---------------------------------------------------------------------------- sources


def is_tensor(x: object) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def tensor_to_numpy(x: Any) -> np.ndarray:
    """A numpy view or copy of a torch tensor, without importing torch. Never written to."""
    try:
        t = x.detach().cpu()
        try:
            return t.numpy()
        except TypeError:  # bfloat16 and friends have no numpy dtype
            return t.float().numpy()
    except Exception as exc:
        raise MediaError(f"could not convert the {type(x).__name__} to numpy: {exc}") from exc


def read_source(x: str | os.PathLike, kind: Kind, max_bytes: int) -> bytes:
    """Bytes of a ``data:`` URL or a file; http(s) URLs are refused (use :func:`fetch`)."""
    if isinstance(x, str):
        head = x[:8].lower()
        if head.startswith("data:"):
            return _decode_data_url(x, kind, max_bytes)
        if head.startswith(("http://", "https://")):
            raise MediaError(f"Media never downloads on its own: fetch {shorten(x)} with "
                             f"smoothguard.media.fetch(url, {kind!r}) or enable the remote_media setting")
    path = Path(x)
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise MediaError(f"{kind} path {shorten(path)} is not a file")
        if size > max_bytes:
            raise MediaError(f"{kind} file {shorten(path)} has {size} bytes, over max_bytes={max_bytes}")
        return path.read_bytes()
    except FileNotFoundError as exc:
        hint = " (to pass base64 data, use a data URL: 'data:<mime>;base64,...')" if len(str(x)) > 200 else ""
        raise MediaError(f"{kind} file not found: {shorten(path)}{hint}") from exc
    except OSError as exc:
        raise MediaError(f"could not read {kind} file {shorten(path)}: {exc.strerror or exc}") from exc
    except ValueError as exc:  # a NUL byte or a lone surrogate: no file system can name it
        raise MediaError(f"{kind} path {shorten(path)} is not a valid file name ({exc})") from None


def _decode_data_url(url: str, kind: Kind, max_bytes: int) -> bytes:
    header, sep, payload = url.partition(",")
    if not sep:
        raise MediaError(f"malformed data URL {shorten(url)}: expected 'data:<mime>;base64,<payload>'")
    params = header[5:].split(";")
    mime = params[0].strip().lower()
    if not mime.startswith(kind + "/"):
        raise MediaError(f"data URL has MIME type {mime or '(none)'!r}; Media.{kind} needs {kind}/...")
    if "base64" not in (p.strip().lower() for p in params[1:]):
        raise MediaError("only base64 data URLs are supported: 'data:<mime>;base64,<payload>'")
    return decode_base64(payload, max_bytes, "data URL payload")


def decode_base64(text: str, max_bytes: int, what: str, limit_name: str = "max_bytes") -> bytes:
    """The bytes of base64 ``text`` (whitespace ignored, missing padding added). :class:`MediaError` naming ``what``
    when it is not base64, or when it would decode to more than ``max_bytes`` (``limit_name``: the setting it came
    from), checked before anything is decoded."""
    compact = "".join(text.split())
    approx = len(compact) // 4 * 3
    if approx > max_bytes + 3:
        raise MediaError(f"{what} is about {approx} bytes, over {limit_name}={max_bytes}")
    try:
        return base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MediaError(f"{what} is not valid base64 ({exc})") from None


