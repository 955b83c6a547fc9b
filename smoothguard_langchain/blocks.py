"""The content-block codec: find images and audio in LangChain messages, write variants back in the same dialect.

What each block is comes from :func:`smoothguard.content_parts.classify`, the rule the proxy shares. Dialects
smoothed (reference/frameworks.md §1), each written back in the form it came in:

==============  =====================================================================================
``v1``          ``{"type": "image"|"audio", "base64": ..., "mime_type": ...}`` (also ``url``)
``v0``          ``{"type": "image"|"audio", "source_type": "base64"|"url", "data"|"url": ...}``
``anthropic``   ``{"type": "image", "source": {"type": "base64"|"url", ...}}``
``openai``      ``{"type": "image_url", "image_url": {"url": "data:..." | "https://..."}}`` (or a bare string,
                or without ``type``)
``openai``      ``{"type": "input_audio", "input_audio": {"data": <base64>, "format": "wav"}}``
``responses``   ``{"type": "input_image", "image_url": "data:..." | "https://..."}``
``vllm``        ``{"type": "audio_url", "audio_url": {"url": ...}}``
``gemini``      ``{"inline_data": {"mime_type": "image/png", "data": <base64>}}``, ``{"type": "media", ...}``
==============  =====================================================================================

Messages may be ``BaseMessage`` objects, OpenAI-style dicts (``{"role", "content"}``) or ``(role, content)``
tuples. The caller's messages and blocks are never changed: variants are new messages (``model_copy``) whose
content lists hold new blocks where media changed and the very same block objects elsewhere. Candidate 0 (the
original media) gets the original blocks unchanged. Remote media follow ``GuardConfig.remote_media``. Media the
guard cannot smooth (video, files and documents, embeddings, provider file ids) raise :class:`MediaError` unless
``unsmoothable_media="passthrough"`` (then they are sent unchanged and named in the notes); unknown blocks always
raise (fail closed). Text, reasoning, tool calls and the like are left as they are; media nested in a block's own
``content`` list (an Anthropic ``tool_result`` holding an image) are smoothed like top-level ones.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from smoothguard import GuardConfig, Media, limits
from smoothguard.content_parts import ContentPart, check_part, classify, get_path, write_media
from smoothguard.errors import MediaError
from smoothguard.image_resize import fitter, rule_for_model
from smoothguard.media.audio import WAV_MIMES
from smoothguard.media.images import Fit

__all__ = ["MediaSlot", "MessageMedia", "find_media", "image_fit", "is_message_like", "read_media_value",
           "write_media_value"]

Kind = Literal["image", "audio"]
_MAX_NESTING = 8  # levels of blocks inside blocks searched for media
#: content_parts dialect -> the short name slots carry
_DIALECTS = {"langchain-v1": "v1", "langchain-v0": "v0"}


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
    part: ContentPart | None = None  # the block's classification (where its payload lives)
    nested: tuple[tuple[str, ...], ...] = ()  # the keys of each nested content list on the way down


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
        """The messages with ``media[k]`` in slot ``k``; a slot whose media is the original keeps its block, unless
        the block gave a URL (the fetched original goes inline, so the model sees what the guard saw)."""
        if len(media) != len(self.slots):
            raise ValueError(f"rebuild needs {len(self.slots)} media, got {len(media)}")
        contents: dict[int, list[Any]] = {}
        for slot, item in zip(self.slots, media, strict=True):
            if item is slot.media and not (slot.part is not None and slot.part.source == "url"):
                continue
            content = contents.setdefault(slot.message, list(_content(self.messages[slot.message])))
            content[slot.block] = _write_at(content[slot.block], slot.path, slot.nested, slot, item)
        return [_with_content(msg, contents[i]) if i in contents else msg for i, msg in enumerate(self.messages)]


def find_media(messages: Sequence[Any], config: GuardConfig, *, where: str = "messages",
               fit: Fit | None = None) -> MessageMedia:
    """Decode every image and audio block of ``messages`` (size limits and ``remote_media`` from ``config``;
    images straight to ``fit``'s size, :func:`image_fit`).

    Raises :class:`MediaError` naming the block (``messages[i].content[j]``) for anything that cannot be read,
    for media the guard cannot smooth (unless ``unsmoothable_media="passthrough"``) and for unknown blocks.
    """
    messages = tuple(messages)
    slots: list[MediaSlot] = []
    notes: list[str] = []
    with limits.request(config, fit):
        for i, message in enumerate(messages):
            content = _content(message)
            if isinstance(content, list):
                _scan(content, i, (), (), f"{where}[{i}].content", config, slots, notes)
            elif content is not None and not isinstance(content, str):
                raise MediaError(f"{where}[{i}].content is a {type(content).__name__}, not text or a list of "
                                 "content blocks; the guard cannot tell whether it holds media")
    return MessageMedia(messages, tuple(slots), tuple(notes))


def _scan(content: list[Any], message: int, outer: tuple[int, ...], keys: tuple[tuple[str, ...], ...], where: str,
          config: GuardConfig, slots: list[MediaSlot], notes: list[str]) -> None:
    """Add the media of one content list to ``slots``, descending into blocks that hold a ``content`` list of
    their own (Anthropic ``tool_result`` blocks carry images there), so nested media are smoothed too."""
    for j, block in enumerate(content):
        place = f"{where}[{j}]"
        info = classify(block)
        if not info.smoothable:
            if note := check_part(info, place, config):  # raises UnsupportedContent (a MediaError) when refused
                notes.append(note)
            if info.is_text and info.nested:
                if len(outer) >= _MAX_NESTING:
                    raise MediaError(f"{place}: content blocks nested more than {_MAX_NESTING} levels deep cannot be "
                                     "checked for images or audio; flatten them")
                _scan(get_path(block, info.nested), message, (*outer, j), (*keys, info.nested),
                      f"{place}.{'.'.join(info.nested)}", config, slots, notes)
            continue
        kind: Kind = info.kind  # type: ignore[assignment]
        label = f"{place} ({info.label})"
        media = _read_block(info, kind, label, config, notes)
        if media is not None:
            top, path = (outer[0], (*outer[1:], j)) if outer else (j, ())
            slots.append(MediaSlot(message, top, kind, _DIALECTS.get(info.dialect, info.dialect), label, media,
                                   path, info, keys))


def image_fit(config: GuardConfig, model: Any) -> Fit | None:
    """The size images are decoded at for ``model`` (a chat model, or a runnable holding one): ``image_resize``,
    with ``"auto"`` read from the chat model as the guard reads it, so the guard's own resize has nothing left to
    do."""
    from smoothguard_langchain.candidates import chat_model

    return fitter(config.image_resize, rule_for_model(chat_model(model)))


def is_message_like(x: Any) -> bool:
    """A ``BaseMessage``, an OpenAI-style message dict, or a ``(role, content)`` pair."""
    from langchain_core.messages import BaseMessage

    if isinstance(x, BaseMessage):
        return True
    if isinstance(x, dict):
        return "role" in x and "content" in x
    return isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], str)


# -- reading ------------------------------------------------------------------------------------------------


def _read_block(info: ContentPart, kind: Kind, label: str, config: GuardConfig, notes: list[str]) -> Media | None:
    """The block's media, or None when it is passed through (noted); MediaError names ``label``."""
    try:
        if kind == "audio" and info.audio_format is not None and info.audio_format not in ("wav", "wave", "x-wav"):
            raise MediaError(f"only WAV audio can be smoothed, got format {info.audio_format!r}; convert it to WAV "
                             "first")
        if info.source == "base64":
            return _decode_base64(info.value, kind, config)
        if info.source == "data_url":
            return _decode(info.value, kind, config)
        return _remote(info.value, kind, label, config, notes)
    except MediaError as exc:  # one clear error naming the block; no PIL/base64 traceback chained to it
        raise MediaError(f"{label}: {exc}") from None
    except Exception as exc:  # a malformed block (wrong types inside): still our error, naming the block
        raise MediaError(f"{label}: could not read it ({type(exc).__name__}: {exc})") from None


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
    return limits.decode(x, kind, config)


def _remote(url: str, kind: Kind, label: str, config: GuardConfig, notes: list[str]) -> Media | None:
    if limits.remote(url, kind, config):
        return limits.fetch(url, kind, config)
    notes.append(f"{label}: {limits.passthrough_note(url, kind)}")
    return None



# -- writing ------------------------------------------------------------------------------------------------


def _write_at(block: dict[str, Any], path: tuple[int, ...], keys: tuple[tuple[str, ...], ...], slot: MediaSlot,
              media: Media) -> dict[str, Any]:
    """:func:`_write` of the block at ``path`` in ``block``'s nested content lists (copied on the way down)."""
    if not path:
        return _write(block, slot, media)
    key, *rest = keys[0]
    inner_list = list(get_path(block, keys[0]))
    inner_list[path[0]] = _write_at(inner_list[path[0]], path[1:], keys[1:], slot, media)
    if not rest:
        return {**block, key: inner_list}
    return {**block, key: _set(block[key], tuple(rest), inner_list)}


def _set(mapping: dict[str, Any], keys: tuple[str, ...], value: Any) -> dict[str, Any]:
    if len(keys) == 1:
        return {**mapping, keys[0]: value}
    return {**mapping, keys[0]: _set(mapping[keys[0]], keys[1:], value)}


def _write(block: dict[str, Any], slot: MediaSlot, media: Media) -> dict[str, Any]:
    """A new block in ``slot``'s dialect carrying ``media`` inline (the old block is not touched)."""
    data = base64.b64encode(media.to_bytes()).decode("ascii")
    info = slot.part if slot.part is not None else classify(block)
    return write_media(block, info, data, _mime(block, slot, media))


def _mime(block: dict[str, Any], slot: MediaSlot, media: Media) -> str:
    if slot.kind == "audio":
        given = block.get("mime_type")
        return given if given in WAV_MIMES else "audio/wav"
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
