"""The content-block codec: find images and audio in LangChain messages, write variants back in the same dialect.

Finding media in a content list and writing it back is the core's codec (:mod:`smoothguard.content_codec`, which
the proxy shares; the dialects, LangChain v1 and v0, OpenAI chat and Responses, Anthropic, vLLM and Gemini, and
what each may hold are :mod:`smoothguard.content_parts`'). This module keeps what is LangChain's: messages
(``BaseMessage`` objects, OpenAI-style ``{"role", "content"}`` dicts or ``(role, content)`` tuples) to and from
content lists, the v0/v1 naming, and decoding through :mod:`smoothguard.limits`.

The caller's messages and blocks are never changed: variants are new messages (``model_copy``) whose content lists
hold new blocks where media changed and the very same block objects elsewhere. Candidate 0 (the original media)
gets the original blocks unchanged. Remote media follow ``GuardConfig.remote_media``. Media the guard cannot
smooth (video, files and documents, embeddings, provider file ids) raise :class:`MediaError` unless
``unsmoothable_media="passthrough"`` (then they are sent unchanged and named in the notes); unknown blocks always
raise (fail closed). Text, reasoning, tool calls and the like are left as they are; media nested in a block's own
``content`` list (an Anthropic ``tool_result`` holding an image) are smoothed like top-level ones.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from smoothguard import GuardConfig, Media, content_codec, limits
from smoothguard.content_codec import MediaPart
from smoothguard.errors import MediaError
from smoothguard.image_resize import fitter, rule_for_model
from smoothguard.media.audio import WAV_FORMATS, WAV_MIMES
from smoothguard.media.images import Fit
from smoothguard.media.sources import decode_base64
from smoothguard_langchain.candidates import chat_model

__all__ = ["MediaSlot", "MessageMedia", "find_media", "image_fit", "is_message_like", "read_media_value",
           "write_media_value"]

Kind = Literal["image", "audio"]
#: content_parts dialect -> the short name slots carry
_DIALECTS = {"langchain-v1": "v1", "langchain-v0": "v0"}


@dataclass(frozen=True)
class MediaSlot(MediaPart):
    """One image or clip found in a message: the core codec's slot (``message``, ``block``, ``path``, ``part``,
    ``place``, ``original``) with its decoded original ``media``."""

    media: Media = field(kw_only=True, compare=False)

    @property
    def kind(self) -> Kind:
        return self.part.kind  # type: ignore[return-value]

    @property
    def dialect(self) -> str:
        """``v1``, ``v0``, ``anthropic``, ``openai``, ..."""
        return _DIALECTS.get(self.part.dialect, self.part.dialect)

    @property
    def label(self) -> str:
        """How errors name it: ``messages[0].content[1] (OpenAI image_url block)``."""
        return _label(self)


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
        writes = [(slot, base64.b64encode(item.to_bytes()).decode("ascii"), _mime(slot, item))
                  for slot, item in zip(self.slots, media, strict=True)
                  if item is not slot.media or slot.part.source == "url"]
        contents = content_codec.rebuild(lambda i: _content(self.messages[i]), writes)
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
                for ref in content_codec.scan(content, f"{where}[{i}].content", config, notes, message=i):
                    part = ref.part
                    media = _read(part.value, part.source, part.kind, _label(ref), config, notes, part.audio_format)
                    if media is not None:
                        slots.append(MediaSlot(**vars(ref), media=media))
            elif content is not None and not isinstance(content, str):
                raise MediaError(f"{where}[{i}].content is a {type(content).__name__}, not text or a list of "
                                 "content blocks; the guard cannot tell whether it holds media")
    return MessageMedia(messages, tuple(slots), tuple(notes))


def image_fit(config: GuardConfig, model: Any) -> Fit | None:
    """The size images are decoded at for ``model`` (a chat model, or a runnable holding one): ``image_resize``,
    with ``"auto"`` read from the chat model as the guard reads it, so the guard's own resize has nothing left to
    do."""
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


def read_media_value(value: Any, kind: Kind, label: str, config: GuardConfig,
                     notes: list[str]) -> Media | None:
    """Decode a raw input value (``SmoothGuardRunnable.media_keys``): a data URL, a bare base64 string, bytes, or
    an http(s) URL (``remote_media``)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _read(bytes(value), "data_url", kind, label, config, notes)
    if not isinstance(value, str):
        raise MediaError(f"{label}: expected a data URL, base64 string, http(s) URL or bytes, got "
                         f"{type(value).__name__}")
    if value[:5].lower() == "data:":
        return _read(value, "data_url", kind, label, config, notes)
    if value[:7].lower() == "http://" or value[:8].lower() == "https://":
        return _read(value, "url", kind, label, config, notes)
    return _read(value, "base64", kind, label, config, notes)


def _label(ref: MediaPart) -> str:
    return f"{ref.place} ({ref.part.label})"


def _read(value: Any, source: str, kind: str, label: str, config: GuardConfig, notes: list[str],
          audio_format: str | None = None) -> Media | None:
    """The medium held as ``source`` (``base64``, ``data_url``: a data URL or the file's bytes, else a URL), or
    None when it is passed through (noted). One :class:`MediaError` naming ``label``, with no PIL/base64 traceback
    chained to it, for anything that cannot be read."""
    try:
        if kind == "audio" and audio_format not in (None, *WAV_FORMATS):
            raise MediaError(f"only WAV audio can be smoothed, got format {audio_format!r}; convert it to WAV first")
        if source == "base64":
            return limits.decode(_unbase64(value, config), kind, config)
        if source == "data_url":
            return limits.decode(value, kind, config)
        if limits.remote(value, kind, config):
            return limits.fetch(value, kind, config)
        notes.append(f"{label}: {limits.passthrough_note(value, kind)}")
        return None
    except MediaError as exc:
        raise MediaError(f"{label}: {exc}") from None
    except Exception as exc:  # a malformed block (wrong types inside): still our error, naming the block
        raise MediaError(f"{label}: could not read it ({type(exc).__name__}: {exc})") from None


def _unbase64(value: Any, config: GuardConfig) -> bytes | str:
    """The bytes of a block's base64 data (a data URL given there instead is kept as it is)."""
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("ascii", errors="replace")
    if not isinstance(value, str):
        raise MediaError(f"its base64 data must be a string, got {type(value).__name__}")
    if value[:5].lower() == "data:":  # some producers put a data URL where base64 belongs
        return value
    return decode_base64(value, config.max_media_bytes, "its data", "max_media_bytes")


# -- writing ------------------------------------------------------------------------------------------------


def _mime(slot: MediaSlot, media: Media) -> str:
    """The MIME type a rewritten block declares: WAV for audio (the block's own WAV spelling kept), else the
    image's."""
    if slot.kind == "audio":
        given = slot.original.get("mime_type")
        return given if given in WAV_MIMES else "audio/wav"
    return media.mime_type


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
