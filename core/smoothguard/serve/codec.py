"""OpenAI chat-completions bodies <-> :class:`~smoothguard.Media`: find the media, rebuild a body per variant.

Finding the media in a content list and writing it back is the core's codec (:mod:`smoothguard.content_codec`,
which the LangChain adapter shares); this module keeps what is the proxy's: the body's ``messages``, ProxyError
codes and params, decoding a slot, and :func:`inline`. Image and audio parts the guard can smooth are read, and
written back in their own shape; among them:

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
from collections.abc import Iterable, Sequence
from typing import Any

from smoothguard import limits, tool_calls
from smoothguard.config import GuardConfig
from smoothguard.content_codec import MediaPart, rebuild, scan
from smoothguard.content_parts import UnsupportedContent, classify
from smoothguard.errors import MediaError
from smoothguard.media import Media
from smoothguard.media.audio import WAV_MIMES
from smoothguard.media.images import image_mime_of
from smoothguard.media.sources import decode_base64
from smoothguard.serve.errors import ProxyError
from smoothguard.serve.parsing import check_tool_calls

__all__ = ["FoundMedia", "MediaSlot", "answer_text", "candidate_body", "decode_slot", "find_media", "inline"]

#: why media nested inside another part is refused (or passed through) rather than smoothed here
_NESTED = ("media nested inside another part; the proxy smooths top-level content parts only, so send it as a part "
           "of the message's own content")


class MediaSlot(MediaPart):
    """One image or audio clip to smooth: the core codec's :class:`MediaPart`, as the proxy reads it.

    message / block: indices into ``messages`` and that message's ``content`` list; part: its classification.
    type: the part's type (``image_url``, ``input_image``, ``input_audio``, ``audio_url``, ...); kind: ``"image"`` or
    ``"audio"``; source: ``"data"`` (inline: data URL or base64) or ``"url"`` (http(s), subject to
    ``remote_media``); value: the data URL, base64 payload or http(s) URL; param: the block's location, as OpenAI
    error bodies name parameters (``messages[1].content[0]``).
    """

    @property
    def type(self) -> str:
        return self.part.type

    @property
    def kind(self) -> str:
        return self.part.kind

    @property
    def source(self) -> str:
        return "url" if self.part.source == "url" else "data"

    @property
    def value(self) -> Any:
        return self.part.value

    @property
    def param(self) -> str:
        return self.place


class FoundMedia(list):
    """The media slots of a body (a list of :class:`MediaSlot`), with ``notes`` on media passed through
    unsmoothed (``unsmoothable_media="passthrough"``)."""

    notes: list[str]

    def __init__(self) -> None:
        super().__init__()
        self.notes = []


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
        try:
            for ref in scan(content, f"messages[{i}].content", config, found.notes, message=i, refuse_nested=_NESTED):
                found.append(MediaSlot(ref.message, ref.block, ref.part, ref.place, original=ref.original))
        except UnsupportedContent as exc:
            param = exc.place
            if exc.code == "invalid_media" and exc.problem_path:
                param += "." + ".".join(exc.problem_path)
            raise ProxyError(400, str(exc), code=exc.code, param=param) from None
    return found


def _rewritten(body: dict[str, Any], writes: Iterable[tuple[MediaPart, str, str]]) -> list[Any]:
    """``body``'s messages with ``writes`` (``(slot, base64 data, mime)``) applied by the core codec
    (:func:`~smoothguard.content_codec.rebuild`); messages not written to are the client's own objects."""
    contents = rebuild(lambda i: body["messages"][i]["content"], writes)
    return [{**m, "content": contents[i]} if i in contents else m for i, m in enumerate(body["messages"])]


def decode_slot(slot: MediaSlot, config: GuardConfig, raw: bytes | None = None) -> Media:
    """The slot's media, decoded under the config's size limits and the request's (:mod:`smoothguard.limits`;
    ``raw``: bytes fetched for a URL slot). Raises :class:`MediaError` for anything that cannot be decoded or is
    too large."""
    value = slot.value
    if raw is not None:
        return limits.decode(raw, slot.kind, config)
    if slot.part.source != "base64" or (isinstance(value, str) and value[:5].lower() == "data:"):
        return limits.decode(value, slot.kind, config)
    mime = slot.part.mime  # input_audio's is its format's: audio/wav for wav, wave and x-wav
    if slot.kind == "audio" and mime and mime.lower() not in WAV_MIMES:
        raise MediaError(f"audio of type {mime!r} cannot be smoothed: only WAV is decoded; send 16-bit PCM WAV")
    if not isinstance(value, str):
        raise MediaError(f"{slot.type} data must be base64 text, not {type(value).__name__}")
    data = decode_base64(value, config.max_media_bytes, f"{slot.type} data", "max_media_bytes")
    return limits.decode(data, slot.kind, config)


def inline(body: dict[str, Any], slot: MediaSlot, raw: bytes, media: Media) -> tuple[dict[str, Any], MediaSlot]:
    """``body`` with the URL of ``slot`` replaced by the bytes fetched from it (``raw``, decoded as ``media``),
    inline in the part's own shape, and the slot that now points at them. ``body`` is not modified."""
    mime = "audio/wav" if media.kind == "audio" else image_mime_of(raw)
    messages = _rewritten(body, [(slot, base64.b64encode(raw).decode("ascii"), mime)])
    block = messages[slot.message]["content"][slot.block]
    inlined = MediaSlot(slot.message, slot.block, classify(block), slot.place, original=block)
    return {**body, "messages": messages}, inlined


def _encoded(media: Media) -> tuple[str, str]:
    """``(base64 data, mime)`` of a noisy copy (or a resized original). Images as PNG, so the noise arrives exactly
    (a JPEG q95 re-encode keeps about 75% of it); audio as WAV in the source sample format."""
    raw, mime = (media.to_bytes(), "audio/wav") if media.kind == "audio" else (media.to_png_bytes(), "image/png")
    return base64.b64encode(raw).decode("ascii"), mime


def candidate_body(body: dict[str, Any], slots: Sequence[MediaSlot], originals: Sequence[Media],
                   variant: Sequence[Media], *, set_fields: dict[str, Any] | None = None,
                   drop_fields: Sequence[str] = ()) -> dict[str, Any]:
    """``body`` with each slot's media replaced by ``variant``'s (a medium that *is* the original keeps the
    client's block, bytes unchanged), ``drop_fields`` removed and ``set_fields`` set. ``body`` is not modified."""
    writes = [(slot, *_encoded(media))
              for slot, original, media in zip(slots, originals, variant, strict=True) if media is not original]
    out = {k: v for k, v in body.items() if k not in drop_fields}
    out["messages"] = _rewritten(body, writes)
    out.update(set_fields or {})
    return out


def answer_text(completion: Any) -> str:
    """What the vote compares for a candidate's completion: ``choices[0].message``'s tool calls as the core's
    canonical JSON (:mod:`smoothguard.tool_calls`) when it makes any, else its content (text parts joined).
    Raises ValueError when ``completion`` is not a chat completion, or its tool calls cannot be relayed."""
    if not isinstance(completion, dict) or not isinstance(completion.get("choices"), list) \
            or not completion["choices"] or not isinstance(completion["choices"][0], dict):
        raise ValueError("the upstream reply has no choices")
    message = completion["choices"][0].get("message")
    if not isinstance(message, dict):
        raise ValueError("the upstream reply's first choice has no message")
    check_tool_calls(message.get("tool_calls"))
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return tool_calls.vote_text(content, tool_calls.openai_tool_calls(message.get("tool_calls")))
