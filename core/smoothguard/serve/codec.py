"""OpenAI chat-completions bodies <-> :class:`~smoothguard.Media`: find the media, rebuild a body per variant.

What each content part is comes from :func:`smoothguard.content_parts.classify`, the rule every adapter shares.
Image and audio parts the guard can smooth are read, and written back in their own shape; among them:

* ``{"type": "image_url", "image_url": {"url": "data:image/png;base64,..." | "https://...", "detail": ...}}``,
  also with ``"image_url": "<url>"`` as a plain string, and without ``type`` (as vLLM reads it);
* ``{"type": "input_image", "image_url": "data:..." | "https://..."}`` (the Responses API's shape);
* ``{"type": "input_audio", "input_audio": {"data": "<base64>", "format": "wav"}}`` (only WAV can be smoothed);
* ``{"type": "audio_url", "audio_url": {"url": "data:audio/wav;base64,..." | "https://..."}}`` (vLLM's dialect);
* Anthropic ``image`` (base64 / url source), Gemini ``inline_data`` images, LangChain v0/v1 image/audio parts.

Media the guard cannot smooth (video, files, embeddings, provider file ids) are refused with a 400 unless the
operator set ``unsmoothable_media="passthrough"``; unknown parts are always refused (fail closed); so is media
nested inside another part (a tool result's content). The client's body is never modified: rebuilt bodies share
every untouched part and copy the rest.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from smoothguard import limits, tool_calls
from smoothguard.config import GuardConfig
from smoothguard.content_parts import ContentPart, UnsupportedContent, check_part, classify, get_path, write_media
from smoothguard.errors import MediaError
from smoothguard.media import Media
from smoothguard.media.images import image_mime_of
from smoothguard.serve.errors import ProxyError

__all__ = ["FoundMedia", "MediaSlot", "answer_text", "candidate_body", "decode_slot", "encode_media", "find_media",
           "inline"]

_MAX_NESTING = 8  # levels of parts inside parts checked for media


@dataclass(frozen=True)
class MediaSlot:
    """Where one image or audio clip sits in the body, and how it was given.

    message / block: indices into ``messages`` and that message's ``content`` list.
    type: the part's type (``image_url``, ``input_image``, ``input_audio``, ``audio_url``, ...); kind: ``"image"`` or
    ``"audio"``. source: ``"data"`` (inline: data URL or base64) or ``"url"`` (http(s), subject to
    ``remote_media``). value: the data URL, base64 payload or http(s) URL. audio_format: ``input_audio``'s
    ``format``. part: the part's classification (dialect, where the payload lives).
    """

    message: int
    block: int
    type: str
    kind: Literal["image", "audio"]
    source: Literal["data", "url"]
    value: str
    audio_format: str | None = None
    part: ContentPart | None = field(default=None, compare=False, repr=False)

    @property
    def param(self) -> str:
        """The block's location, as OpenAI error bodies name parameters."""
        return f"messages[{self.message}].content[{self.block}]"


class FoundMedia(list):
    """The media slots of a body (a list of :class:`MediaSlot`), with ``notes`` on media passed through
    unsmoothed (``unsmoothable_media="passthrough"``)."""

    notes: list[str]

    def __init__(self, slots: Sequence[MediaSlot] = (), notes: Sequence[str] = ()) -> None:
        super().__init__(slots)
        self.notes = list(notes)


def find_media(body: dict[str, Any], config: GuardConfig | None = None) -> FoundMedia:
    """Every smoothable media part in ``body["messages"]``, in order; a 400 :class:`ProxyError` for malformed
    ones, unknown parts, and media the guard cannot smooth (unless ``config.unsmoothable_media`` is
    ``"passthrough"``: then they are left in place and named in ``notes``)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ProxyError(400, "'messages' must be a non-empty list of chat messages", code="invalid_messages",
                         param="messages")
    found = FoundMedia()
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ProxyError(400, f"messages[{i}] must be an object with 'role' and 'content'",
                             code="invalid_messages", param=f"messages[{i}]")
        content = message.get("content")
        if content is None or isinstance(content, str):
            continue
        if not isinstance(content, list):
            raise ProxyError(400, f"messages[{i}].content must be a string or a list of content parts, not a "
                             f"{type(content).__name__}", code="invalid_messages", param=f"messages[{i}].content")
        for j, block in enumerate(content):
            place = f"messages[{i}].content[{j}]"
            info = classify(block)
            try:
                if info.smoothable:
                    found.append(_slot(i, j, info))
                    continue
                if note := check_part(info, place, config):
                    found.notes.append(note)
                if info.is_text and info.nested:
                    _refuse_nested(get_path(block, info.nested), f"{place}.{'.'.join(info.nested)}", config,
                                   found.notes, 1)
            except UnsupportedContent as exc:
                raise _proxy_error(exc, info) from None
    return found


def _refuse_nested(content: Any, where: str, config: GuardConfig | None, notes: list[str], depth: int) -> None:
    """Media nested inside a part (a tool result's content) cannot be rewritten here: refused like media the
    guard cannot smooth, unless the policy passes those through."""
    if not isinstance(content, list):
        return
    if depth > _MAX_NESTING:
        raise ProxyError(400, f"{where}: content parts nested more than {_MAX_NESTING} levels deep cannot be "
                         "checked for media; flatten them", code="invalid_messages", param=where)
    for k, part in enumerate(content):
        place = f"{where}[{k}]"
        info = classify(part)
        try:
            if info.smoothable:
                info = _nested(info)
            if note := check_part(info, place, config):
                notes.append(note)
        except UnsupportedContent as exc:
            raise _proxy_error(exc, info) from None
        if info.is_text and info.nested:
            _refuse_nested(get_path(part, info.nested), f"{place}.{'.'.join(info.nested)}", config, notes, depth + 1)


def _nested(info: ContentPart) -> ContentPart:
    return dataclasses.replace(info, reason="media nested inside another part; the proxy smooths top-level content "
                               "parts only, so send it as a part of the message's own content")


def _proxy_error(exc: UnsupportedContent, info: ContentPart) -> ProxyError:
    param = exc.place
    if exc.code == "invalid_media" and info.problem_path:
        param += "." + ".".join(info.problem_path)
    return ProxyError(400, str(exc), code=exc.code, param=param)


def _slot(i: int, j: int, info: ContentPart) -> MediaSlot:
    return MediaSlot(i, j, info.type, info.kind, "url" if info.source == "url" else "data",  # type: ignore[arg-type]
                     info.value, audio_format=info.audio_format, part=info)


def decode_slot(slot: MediaSlot, config: GuardConfig, raw: bytes | None = None) -> Media:
    """The slot's media, decoded under the config's size limits and the request's (:mod:`smoothguard.limits`;
    ``raw``: bytes fetched for a URL slot).

    Raises :class:`MediaError` for anything that cannot be decoded or is too large.
    """
    base64_payload = (slot.part is not None and slot.part.source == "base64") or slot.type == "input_audio"
    if raw is not None:
        source: Any = raw
    elif base64_payload and not (isinstance(slot.value, str) and slot.value[:5].lower() == "data:"):
        if slot.kind == "audio" and (slot.audio_format or "wav") not in ("wav", "wave", "x-wav"):
            raise MediaError(f"{slot.type} format {slot.audio_format!r} cannot be smoothed: only WAV is decoded; "
                             "send 16-bit PCM WAV")
        mime = slot.part.mime if slot.part is not None else None
        if slot.kind == "audio" and mime and mime.lower() not in ("audio/wav", "audio/x-wav", "audio/wave",
                                                                  "audio/vnd.wave"):
            raise MediaError(f"audio of type {mime!r} cannot be smoothed: only WAV is decoded; send 16-bit PCM WAV")
        if not isinstance(slot.value, str):
            raise MediaError(f"{slot.type} data must be base64 text, not {type(slot.value).__name__}")
        compact = "".join(slot.value.split())
        if len(compact) // 4 * 3 > config.max_media_bytes + 3:
            raise MediaError(f"{slot.type} data is about {len(compact) // 4 * 3} bytes, over "
                             f"max_media_bytes={config.max_media_bytes}")
        try:
            source = base64.b64decode(compact, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise MediaError(f"{slot.type} data is not valid base64: {exc}") from None
    else:
        source = slot.value
    return limits.decode(source, slot.kind, config)


def inline(body: dict[str, Any], slot: MediaSlot, raw: bytes, media: Media) -> tuple[dict[str, Any], MediaSlot]:
    """``body`` with the URL of ``slot`` replaced by the bytes fetched from it (``raw``, decoded as ``media``),
    inline in the part's own shape, and the slot that now points at them. ``body`` is not modified."""
    mime = "audio/wav" if media.kind == "audio" else image_mime_of(raw)
    block = _replace_block(body, slot, base64.b64encode(raw).decode("ascii"), mime)
    messages = list(body["messages"])
    message = dict(messages[slot.message])
    content = list(message["content"])
    content[slot.block] = block
    message["content"] = content
    messages[slot.message] = message
    info = classify(block)
    return {**body, "messages": messages}, _slot(slot.message, slot.block, info)


def _replace_block(body: dict[str, Any], slot: MediaSlot, data: str, mime: str) -> dict[str, Any]:
    block = body["messages"][slot.message]["content"][slot.block]
    info = slot.part if slot.part is not None else classify(block)
    return write_media(block, info, data, mime)


def encode_media(media: Media, image_format: str = "png") -> str:
    """A data URL of one noisy copy (or a resized original). Images: PNG whatever ``image_format`` says, so the
    noise arrives exactly (a JPEG q95 re-encode keeps about 75% of it). Audio: WAV in the source sample format."""
    if media.kind == "audio":
        return media.to_data_url()
    return media.to_data_url("png")


def _encode_block(block: dict[str, Any], slot: MediaSlot, media: Media, image_format: str) -> dict[str, Any]:
    url = encode_media(media, image_format)
    header, data = url.split(",", 1)
    info = slot.part if slot.part is not None else classify(block)
    return write_media(block, info, data, header[5:].split(";", 1)[0])


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
    """What the vote compares for a candidate's completion: ``choices[0].message``'s tool calls as the core's
    canonical JSON (:mod:`smoothguard.tool_calls`) when it makes any, else its content (text parts joined).
    Raises ValueError when ``completion`` is not a chat completion."""
    if not isinstance(completion, dict) or not isinstance(completion.get("choices"), list) \
            or not completion["choices"] or not isinstance(completion["choices"][0], dict):
        raise ValueError("the upstream reply has no choices")
    message = completion["choices"][0].get("message")
    if not isinstance(message, dict):
        raise ValueError("the upstream reply's first choice has no message")
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return tool_calls.vote_text(content, tool_calls.openai_tool_calls(message.get("tool_calls")))
