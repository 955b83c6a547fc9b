"""The content-block codec: find images and audio in LangChain messages, write variants back in the same dialect.

Dialects read (reference/frameworks.md §1), each written back in the form it came in:

==============  =====================================================================================
``v1``          ``{"type": "image"|"audio", "base64": ..., "mime_type": ...}`` (also ``url``, ``file_id``)
``v0``          ``{"type": "image"|"audio", "source_type": "base64"|"url"|"id", "data"|"url"|"id": ...}``
``anthropic``   ``{"type": "image", "source": {"type": "base64"|"url"|"file", ...}}``
``openai``      ``{"type": "image_url", "image_url": {"url": "data:..." | "https://..."}}`` (or a bare string)
``openai``      ``{"type": "input_audio", "input_audio": {"data": <base64>, "format": "wav"}}``
==============  =====================================================================================

Messages may be ``BaseMessage`` objects, OpenAI-style dicts (``{"role", "content"}``) or ``(role, content)``
tuples. The caller's messages and blocks are never changed: variants are new messages (``model_copy``) whose
content lists hold new blocks where media changed and the very same block objects elsewhere. Candidate 0 (the
original media) gets the original blocks unchanged. Remote media follow ``GuardConfig.remote_media``; blocks of
other types (text, files, video, provider blocks) are left as they are, but media nested in a block's own
``content`` list (an Anthropic ``tool_result`` holding an image) are smoothed like top-level ones.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from smoothguard import GuardConfig, Media
from smoothguard.errors import MediaError
from smoothguard.media import fetch

__all__ = ["MediaSlot", "MessageMedia", "find_media", "is_message_like", "read_media_value", "write_media_value"]

Kind = Literal["image", "audio"]
_WAV_MIMES = ("audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave")
_MAX_NESTING = 8  # levels of blocks inside blocks searched for media
_DESCRIBE = {"v1": "v1 {kind} block", "v0": "v0 {kind} block (source_type)", "anthropic": "Anthropic {kind} block",
             "openai": "OpenAI {type} block"}


@dataclass(frozen=True)
class MediaSlot:
    """One image or clip found in a message: where it is, its dialect, and the decoded original."""

    message: int
    block: int
    kind: Kind
    dialect: str
    label: str
    media: Media
    path: tuple[int, ...] = ()  # indices in the nested ``content`` lists below ``block`` (e.g. a tool_result's)


@dataclass(frozen=True)
class MessageMedia:
    """The media found in a list of messages and how to rebuild the list around other media.

    ``media`` lists one :class:`Media` per slot, in message/block order; :meth:`rebuild` takes a list of the same
    length and order (e.g. one variant from ``SmoothGuard``) and returns new messages.
    """

    messages: tuple[Any, ...]
    slots: tuple[MediaSlot, ...]
    notes: tuple[str, ...] = ()

    @property
    def media(self) -> list[Media]:
        return [slot.media for slot in self.slots]

    def rebuild(self, media: Sequence[Media]) -> list[Any]:
        """The messages with ``media[k]`` in slot ``k``; a slot whose media is the original keeps its block."""
        if len(media) != len(self.slots):
            raise ValueError(f"rebuild needs {len(self.slots)} media, got {len(media)}")
        contents: dict[int, list[Any]] = {}
        for slot, item in zip(self.slots, media, strict=True):
            if item is slot.media:
                continue
            content = contents.setdefault(slot.message, list(_content(self.messages[slot.message])))
            content[slot.block] = _write_at(content[slot.block], slot.path, slot, item)
        return [_with_content(msg, contents[i]) if i in contents else msg for i, msg in enumerate(self.messages)]


def find_media(messages: Sequence[Any], config: GuardConfig, *, where: str = "messages") -> MessageMedia:
    """Decode every image and audio block of ``messages`` (size limits and ``remote_media`` from ``config``).

    Raises :class:`MediaError` naming the block (``messages[i].content[j]``) for anything that cannot be read.
    """
    messages = tuple(messages)
    slots: list[MediaSlot] = []
    notes: list[str] = []
    for i, message in enumerate(messages):
        content = _content(message)
        if isinstance(content, list):
            _scan(content, i, (), f"{where}[{i}].content", config, slots, notes)
    return MessageMedia(messages, tuple(slots), tuple(notes))


def _scan(content: list[Any], message: int, outer: tuple[int, ...], where: str, config: GuardConfig,
          slots: list[MediaSlot], notes: list[str]) -> None:
    """Add the media of one content list to ``slots``, descending into blocks that hold a ``content`` list of
    their own (Anthropic ``tool_result`` blocks carry images there), so nested media are smoothed too."""
    for j, block in enumerate(content):
        if not isinstance(block, dict):
            continue
        place = f"{where}[{j}]"
        found = _classify(block)
        if found is None:
            if block.get("type") in ("video", "video_url"):
                notes.append(f"{place}: video is not smoothed; it was sent unchanged")
            elif isinstance(block.get("content"), list):
                if len(outer) >= _MAX_NESTING:
                    raise MediaError(f"{place}: content blocks nested more than {_MAX_NESTING} levels deep cannot be "
                                     "checked for images or audio; flatten them")
                _scan(block["content"], message, (*outer, j), f"{place}.content", config, slots, notes)
            continue
        dialect, kind = found
        label = f"{place} ({_describe(dialect, kind, block)})"
        media = _read_block(block, dialect, kind, label, config, notes)
        if media is not None:
            top, path = (outer[0], (*outer[1:], j)) if outer else (j, ())
            slots.append(MediaSlot(message, top, kind, dialect, label, media, path))


def is_message_like(x: Any) -> bool:
    """A ``BaseMessage``, an OpenAI-style message dict, or a ``(role, content)`` pair."""
    from langchain_core.messages import BaseMessage

    if isinstance(x, BaseMessage):
        return True
    if isinstance(x, dict):
        return "role" in x and "content" in x
    return isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], str)


# -- reading ------------------------------------------------------------------------------------------------


def _classify(block: dict[str, Any]) -> tuple[str, Kind] | None:
    kind = block.get("type")
    if kind == "image_url":
        return "openai", "image"
    if kind == "input_audio":
        return "openai", "audio"
    if kind in ("image", "audio"):
        if "source_type" in block:
            return "v0", kind
        if isinstance(block.get("source"), dict):
            return "anthropic", kind
        return "v1", kind
    return None


def _describe(dialect: str, kind: str, block: dict[str, Any]) -> str:
    return _DESCRIBE[dialect].format(kind=kind, type=block.get("type"))


def _read_block(block: dict[str, Any], dialect: str, kind: Kind, label: str, config: GuardConfig,
                notes: list[str]) -> Media | None:
    """The block's media, or None when it is passed through (noted); MediaError names ``label``."""
    try:
        source, value = _source(block, dialect)
        if source == "base64":
            return _decode_base64(value, kind, config)
        if source == "url":
            if not isinstance(value, str):
                raise MediaError(f"its URL must be a string, got {type(value).__name__}")
            if value[:5].lower() == "data:":
                return _decode(value, kind, config)
            return _remote(value, kind, label, config, notes)
        return _provider_file(value, kind, label, config, notes)
    except MediaError as exc:  # one clear error naming the block; no PIL/base64 traceback chained to it
        raise MediaError(f"{label}: {exc}") from None
    except Exception as exc:  # a malformed block (wrong types inside): still our error, naming the block
        raise MediaError(f"{label}: could not read it ({type(exc).__name__}: {exc})") from None


def _source(block: dict[str, Any], dialect: str) -> tuple[str, Any]:
    """("base64" | "url" | "id", value) of a block in ``dialect``."""
    if dialect == "openai":
        if block["type"] == "input_audio":
            inner = block.get("input_audio")
            if not isinstance(inner, dict) or "data" not in inner:
                raise MediaError("expected {'input_audio': {'data': <base64>, 'format': 'wav'}}")
            fmt = str(inner.get("format", "wav")).lower()
            if fmt != "wav":
                raise MediaError(f"only WAV audio can be smoothed, got format {fmt!r}; convert it to WAV first")
            return "base64", inner["data"]
        inner = block.get("image_url")
        url = inner.get("url") if isinstance(inner, dict) else inner
        if url is None:
            raise MediaError("expected {'image_url': {'url': 'data:...' or 'https://...'}}")
        return "url", url
    if dialect == "v0":
        source_type = block.get("source_type")
        key = {"base64": "data", "url": "url", "id": "id"}.get(source_type)
        if key is None or key not in block:
            raise MediaError(f"unsupported source_type {source_type!r} (or its field is missing); "
                             "expected 'base64' with 'data', 'url' with 'url', or 'id' with 'id'")
        return {"data": "base64", "url": "url", "id": "id"}[key], block[key]
    if dialect == "anthropic":
        source = block["source"]
        kind = source.get("type")
        key = {"base64": "data", "url": "url", "file": "file_id"}.get(kind)
        if key is None or key not in source:
            raise MediaError(f"unsupported source type {kind!r} (or its field is missing); "
                             "expected 'base64' with 'data', 'url' with 'url', or 'file' with 'file_id'")
        return {"data": "base64", "url": "url", "file_id": "id"}[key], source[key]
    for key, source in (("base64", "base64"), ("url", "url"), ("file_id", "id")):
        if block.get(key) is not None:
            return source, block[key]
    raise MediaError("it has no 'base64', 'url' or 'file_id'")


def _decode_base64(value: Any, kind: Kind, config: GuardConfig) -> Media:
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("ascii", errors="replace")
    if not isinstance(value, str):
        raise MediaError(f"its base64 data must be a string, got {type(value).__name__}")
    if value[:5].lower() == "data:":  # some producers put a data URL where base64 belongs
        return _decode(value, kind, config)
    compact = "".join(value.split())
    if len(compact) // 4 * 3 > config.max_media_bytes + 3:
        raise MediaError(f"its data is about {len(compact) // 4 * 3} bytes, over max_media_bytes="
                         f"{config.max_media_bytes}")
    try:
        raw = base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MediaError(f"its data is not valid base64 ({exc})") from None
    return _decode(raw, kind, config)


def _decode(x: bytes | str, kind: Kind, config: GuardConfig) -> Media:
    if kind == "image":
        return Media.image(x, max_pixels=config.max_image_pixels, max_bytes=config.max_media_bytes)
    return Media.audio(x, max_bytes=config.max_media_bytes)


def _remote(url: str, kind: Kind, label: str, config: GuardConfig, notes: list[str]) -> Media | None:
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme not in ("http", "https"):
        raise MediaError(f"cannot read a {kind} from {_short(url)}: only data: and http(s) URLs are supported")
    if config.remote_media == "error":
        raise MediaError(f"remote {kind} {_short(url)} refused (remote_media='error'); inline it as base64 or "
                         "set remote_media='fetch'")
    if config.remote_media == "passthrough":
        notes.append(f"{label}: remote {kind} {_short(url)} was passed through unsmoothed "
                     "(remote_media='passthrough')")
        return None
    media = fetch(url, kind, timeout=config.fetch_timeout, max_bytes=config.max_media_bytes)
    if kind == "image" and media.width * media.height > config.max_image_pixels:
        raise MediaError(f"image {_short(url)} is {media.width}x{media.height} pixels, over max_image_pixels="
                         f"{config.max_image_pixels}")
    return media


def _provider_file(file_id: Any, kind: Kind, label: str, config: GuardConfig, notes: list[str]) -> None:
    if config.remote_media == "passthrough":
        notes.append(f"{label}: provider file {_short(file_id)} was passed through unsmoothed "
                     "(remote_media='passthrough')")
        return None
    raise MediaError(f"a provider file id ({_short(file_id)}) cannot be smoothed: SmoothGuard cannot download it. "
                     "Inline the bytes as base64, or set remote_media='passthrough' to send it unsmoothed")


def _short(s: Any, limit: int = 60) -> str:
    text = str(s)
    return repr(text if len(text) <= limit else text[:limit] + "...")


# -- writing ------------------------------------------------------------------------------------------------


def _write_at(block: dict[str, Any], path: tuple[int, ...], slot: MediaSlot, media: Media) -> dict[str, Any]:
    """:func:`_write` of the block at ``path`` in ``block``'s nested ``content`` lists (copied on the way down)."""
    if not path:
        return _write(block, slot, media)
    inner = list(block["content"])
    inner[path[0]] = _write_at(inner[path[0]], path[1:], slot, media)
    return {**block, "content": inner}


def _write(block: dict[str, Any], slot: MediaSlot, media: Media) -> dict[str, Any]:
    """A new block in ``slot.dialect`` carrying ``media`` inline (the old block is not touched)."""
    raw = media.to_bytes()
    data = base64.b64encode(raw).decode("ascii")
    mime = _mime(block, slot, media)
    if slot.dialect == "openai":
        if block["type"] == "input_audio":
            return {**block, "input_audio": {**block["input_audio"], "data": data, "format": "wav"}}
        url = f"data:{mime};base64,{data}"
        inner = block["image_url"]
        return {**block, "image_url": {**inner, "url": url} if isinstance(inner, dict) else url}
    if slot.dialect == "anthropic":
        source = {k: v for k, v in block["source"].items() if k not in ("url", "file_id", "data")}
        return {**block, "source": {**source, "type": "base64", "media_type": mime, "data": data}}
    if slot.dialect == "v0":
        if block.get("source_type") == "url" and str(block.get("url", ""))[:5].lower() == "data:":
            return {**block, "url": f"data:{mime};base64,{data}", "mime_type": mime}
        new = {k: v for k, v in block.items() if k not in ("url", "id", "data")}
        return {**new, "source_type": "base64", "data": data, "mime_type": mime}
    if block.get("base64") is None and str(block.get("url", ""))[:5].lower() == "data:":
        return {**block, "url": f"data:{mime};base64,{data}", **({"mime_type": mime} if "mime_type" in block else {})}
    new = {k: v for k, v in block.items() if k not in ("url", "file_id", "base64")}
    return {**new, "base64": data, "mime_type": mime}


def _mime(block: dict[str, Any], slot: MediaSlot, media: Media) -> str:
    if slot.kind == "audio":
        given = block.get("mime_type")
        return given if given in _WAV_MIMES else "audio/wav"
    return media.mime_type


# -- message plumbing ---------------------------------------------------------------------------------------


def _content(message: Any) -> Any:
    if isinstance(message, dict):
        return message.get("content")
    if isinstance(message, tuple):
        return message[1] if len(message) == 2 else None
    return getattr(message, "content", None)


def _with_content(message: Any, content: list[Any]) -> Any:
    if isinstance(message, dict):
        return {**message, "content": content}
    if isinstance(message, tuple):
        return (message[0], content)
    return message.model_copy(update={"content": content})


# -- raw values (SmoothGuardRunnable.media_keys) ------------------------------------------------------------


def read_media_value(value: Any, kind: Kind, label: str, config: GuardConfig,
                     notes: list[str]) -> Media | None:
    """Decode a raw input value: a data URL, a bare base64 string, bytes, or an http(s) URL (``remote_media``)."""
    try:
        if isinstance(value, (bytes, bytearray, memoryview)):
            return _decode(bytes(value), kind, config)
        if not isinstance(value, str):
            raise MediaError(f"expected a data URL, base64 string, http(s) URL or bytes, got {type(value).__name__}")
        if value[:5].lower() == "data:":
            return _decode(value, kind, config)
        if value[:7].lower() == "http://" or value[:8].lower() == "https://":
            return _remote(value, kind, label, config, notes)
        return _decode_base64(value, kind, config)
    except MediaError as exc:  # one clear error naming the block; no PIL/base64 traceback chained to it
        raise MediaError(f"{label}: {exc}") from None
    except Exception as exc:  # a malformed block (wrong types inside): still our error, naming the block
        raise MediaError(f"{label}: could not read it ({type(exc).__name__}: {exc})") from None


def write_media_value(original: Any, media: Media) -> Any:
    """``media`` in the form ``original`` had: bytes, a data URL (also for fetched URLs) or bare base64."""
    raw = media.to_bytes()
    if isinstance(original, (bytes, bytearray, memoryview)):
        return raw
    data = base64.b64encode(raw).decode("ascii")
    if original[:5].lower() == "data:" or original[:4].lower() == "http":
        mime = "audio/wav" if media.kind == "audio" else media.mime_type
        return f"data:{mime};base64,{data}"
    return data
