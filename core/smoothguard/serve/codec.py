"""OpenAI chat-completions bodies <-> :class:`~smoothguard.Media`: find the media, rebuild a body per variant.

Media blocks read (and written back in the same dialect):

* ``{"type": "image_url", "image_url": {"url": "data:image/png;base64,..." | "https://...", "detail": ...}}``,
  also with ``"image_url": "<url>"`` as a plain string;
* ``{"type": "input_audio", "input_audio": {"data": "<base64>", "format": "wav"}}`` (only WAV can be smoothed);
* ``{"type": "audio_url", "audio_url": {"url": "data:audio/wav;base64,..." | "https://..."}}`` (vLLM's dialect).

The client's body is never modified: rebuilt bodies share every untouched part and copy the rest.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from smoothguard.config import GuardConfig
from smoothguard.errors import MediaError
from smoothguard.media import Media
from smoothguard.serve.errors import ProxyError

__all__ = ["MediaSlot", "answer_text", "candidate_body", "decode_slot", "encode_media", "find_media", "inline"]

#: content-block type -> media kind
MEDIA_BLOCKS = {"image_url": "image", "input_audio": "audio", "audio_url": "audio"}
#: media blocks the guard cannot smooth; refused rather than let through unguarded
UNSUPPORTED_BLOCKS = {"video_url": "video", "file": "file", "input_file": "file"}


@dataclass(frozen=True)
class MediaSlot:
    """Where one image or audio clip sits in the body, and how it was given.

    message / block: indices into ``messages`` and that message's ``content`` list.
    type: the block type (``image_url``, ``input_audio``, ``audio_url``); kind: ``"image"`` or ``"audio"``.
    source: ``"data"`` (inline: data URL or base64) or ``"url"`` (http(s), subject to ``remote_media``).
    value: the data URL, base64 payload or http(s) URL. audio_format: ``input_audio``'s ``format``.
    """

    message: int
    block: int
    type: str
    kind: Literal["image", "audio"]
    source: Literal["data", "url"]
    value: str
    audio_format: str | None = None

    @property
    def param(self) -> str:
        """The block's location, as OpenAI error bodies name parameters."""
        return f"messages[{self.message}].content[{self.block}]"


def find_media(body: dict[str, Any]) -> list[MediaSlot]:
    """Every media block in ``body["messages"]``, in order; a 400 :class:`ProxyError` for malformed ones."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ProxyError(400, "'messages' must be a non-empty list of chat messages", code="invalid_messages",
                         param="messages")
    slots: list[MediaSlot] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ProxyError(400, f"messages[{i}] must be an object with 'role' and 'content'",
                             code="invalid_messages", param=f"messages[{i}]")
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for j, block in enumerate(content):
            if not isinstance(block, dict):
                continue
            kind = block.get("type")
            if kind in UNSUPPORTED_BLOCKS:
                raise ProxyError(400, f"the guard cannot smooth {kind!r} content ({UNSUPPORTED_BLOCKS[kind]}), and "
                                 "does not let it through unguarded; send images as image_url or audio as WAV "
                                 "input_audio", code="unsupported_media", param=f"messages[{i}].content[{j}]")
            if kind in MEDIA_BLOCKS:
                slots.append(_slot(i, j, kind, block))
    return slots


def _slot(i: int, j: int, kind: str, block: dict[str, Any]) -> MediaSlot:
    param = f"messages[{i}].content[{j}].{kind}"
    inner = block.get(kind)
    if kind == "input_audio":
        if not isinstance(inner, dict) or not isinstance(inner.get("data"), str):
            raise ProxyError(400, "input_audio must be an object with 'data' (base64) and 'format'",
                             code="invalid_media", param=param)
        fmt = str(inner.get("format", "wav")).lower()
        return MediaSlot(i, j, kind, "audio", "data", inner["data"], audio_format=fmt)
    url = inner.get("url") if isinstance(inner, dict) else inner
    if not isinstance(url, str) or not url:
        raise ProxyError(400, f"{kind} must hold a 'url' (a data: URL or an http(s) URL)", code="invalid_media",
                         param=f"{param}.url")
    head = url[:8].lower()
    if head.startswith("data:"):
        source = "data"
    elif head.startswith(("http://", "https://")):
        source = "url"
    else:
        raise ProxyError(400, f"{kind}.url must be a data: URL or an http(s) URL", code="invalid_media",
                         param=f"{param}.url")
    return MediaSlot(i, j, kind, MEDIA_BLOCKS[kind], source, url)  # type: ignore[arg-type]


def decode_slot(slot: MediaSlot, config: GuardConfig, raw: bytes | None = None) -> Media:
    """The slot's media, decoded under the config's size limits (``raw``: bytes fetched for a URL slot).

    Raises :class:`MediaError` for anything that cannot be decoded or is too large.
    """
    limits = {"max_bytes": config.max_media_bytes}
    if raw is not None:
        source: Any = raw
    elif slot.type == "input_audio":
        if slot.audio_format not in ("wav", "wave", "x-wav"):
            raise MediaError(f"input_audio format {slot.audio_format!r} cannot be smoothed: only WAV is decoded; "
                             "send 16-bit PCM WAV")
        if len(slot.value) // 4 * 3 > config.max_media_bytes + 3:
            raise MediaError(f"input_audio data is about {len(slot.value) // 4 * 3} bytes, over "
                             f"max_media_bytes={config.max_media_bytes}")
        try:
            source = base64.b64decode("".join(slot.value.split()), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise MediaError(f"input_audio data is not valid base64: {exc}") from None
    else:
        source = slot.value
    if slot.kind == "image":
        return Media.image(source, max_pixels=config.max_image_pixels, **limits)
    return Media.audio(source, **limits)


_MIME = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp", "gif": "image/gif", "bmp": "image/bmp",
         "tiff": "image/tiff"}


def inline(body: dict[str, Any], slot: MediaSlot, raw: bytes, media: Media) -> tuple[dict[str, Any], MediaSlot]:
    """``body`` with the URL of ``slot`` replaced by a data URL of ``raw`` (the bytes fetched from it, decoded as
    ``media``), and the slot that now points at it. ``body`` is not modified."""
    mime = "audio/wav" if media.kind == "audio" else _MIME.get(media.format, media.mime_type)
    url = f"data:{mime};base64,{base64.b64encode(raw).decode('ascii')}"
    messages = list(body["messages"])
    message = dict(messages[slot.message])
    content = list(message["content"])
    block = content[slot.block]
    inner = block[slot.type]
    content[slot.block] = {**block, slot.type: {**inner, "url": url} if isinstance(inner, dict) else url}
    message["content"] = content
    messages[slot.message] = message
    return {**body, "messages": messages}, dataclasses.replace(slot, source="data", value=url)


def encode_media(media: Media, image_format: str = "png") -> str:
    """A data URL of one noisy copy (or a resized original). Images: PNG whatever ``image_format`` says, so the
    noise arrives exactly (a JPEG q95 re-encode keeps about 75% of it). Audio: WAV in the source sample format."""
    if media.kind == "audio":
        return media.to_data_url()
    return media.to_data_url("png")


def _encode_block(block: dict[str, Any], slot: MediaSlot, media: Media, image_format: str) -> dict[str, Any]:
    url = encode_media(media, image_format)
    if slot.type == "input_audio":
        payload = url.split(",", 1)[1]
        return {**block, "input_audio": {**block["input_audio"], "data": payload, "format": "wav"}}
    inner = block[slot.type]
    return {**block, slot.type: {**inner, "url": url} if isinstance(inner, dict) else url}


def candidate_body(body: dict[str, Any], slots: Sequence[MediaSlot], originals: Sequence[Media],
                   variant: Sequence[Media], *, set_fields: dict[str, Any] | None = None,
                   drop_fields: Sequence[str] = (), image_format: str = "png") -> dict[str, Any]:
    """``body`` with each slot's media replaced by ``variant``'s (a medium that *is* the original keeps the
    client's block, bytes unchanged), ``drop_fields`` removed and ``set_fields`` set. ``body`` is not modified."""
    messages = list(body["messages"])
    copied: set[int] = set()
    for slot, original, media in zip(slots, originals, variant, strict=True):
        if media is original:
            continue
        if slot.message not in copied:
            message = dict(messages[slot.message])
            message["content"] = list(message["content"])
            messages[slot.message] = message
            copied.add(slot.message)
        content = messages[slot.message]["content"]
        content[slot.block] = _encode_block(content[slot.block], slot, media, image_format)
    out = {k: v for k, v in body.items() if k not in drop_fields}
    out["messages"] = messages
    out.update(set_fields or {})
    return out


def answer_text(completion: Any) -> str:
    """The text a candidate answered: ``choices[0].message.content`` (text parts joined), or, for a message that
    only calls tools, its tool calls as canonical JSON (so tool calls are voted on too). Raises ValueError when
    ``completion`` is not a chat completion."""
    if not isinstance(completion, dict) or not isinstance(completion.get("choices"), list) \
            or not completion["choices"] or not isinstance(completion["choices"][0], dict):
        raise ValueError("the upstream reply has no choices")
    message = completion["choices"][0].get("message")
    if not isinstance(message, dict):
        raise ValueError("the upstream reply's first choice has no message")
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if isinstance(content, str) and content.strip():
        return content
    calls = message.get("tool_calls")
    if isinstance(calls, list) and calls:
        canon = [{"name": (c.get("function") or {}).get("name"), "arguments": _canonical_args(c)}
                 for c in calls if isinstance(c, dict)]
        return json.dumps(canon, sort_keys=True)
    return content if isinstance(content, str) else ""


def _canonical_args(call: dict[str, Any]) -> Any:
    args = (call.get("function") or {}).get("arguments")
    if isinstance(args, str):
        try:
            return json.loads(args)
        except ValueError:
            return args
    return args
