"""Find the media in a runnable's input, whatever its shape, and rebuild the input around other media.

Inputs understood:

- a message (``BaseMessage``), a list/tuple of message-likes (messages, ``{"role", "content"}`` dicts,
  ``(role, content)`` pairs, strings), a ``ChatPromptValue``;
- a dict whose values are any of the above (e.g. ``{"messages": [...]}`` for a ``MessagesPlaceholder``), and,
  for the keys named in ``media_keys``, raw media values: data URLs, bare base64 strings, bytes or http(s) URLs
  (e.g. ``{"image": b64}`` feeding a ``"data:image/png;base64,{image}"`` prompt template).

Other values pass through untouched and count as "no media", except values that are media the guard was not told
about, which a prompt template would hand to the model unguarded: a media ``data:`` URL, bytes or base64 text
of an image/audio/video/PDF file, an http(s) URL of a media file (by its extension), or a list of content blocks
holding media outside any message. Those raise ``MediaError`` naming the key and saying to declare it in
``media_keys`` (fail closed).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from smoothguard import GuardConfig, Media, limits
from smoothguard.content_parts import classify
from smoothguard.errors import MediaError
from smoothguard.media.images import Fit
from smoothguard_langchain.blocks import find_media, is_message_like, read_media_value, write_media_value

__all__ = ["InputMedia", "find_input_media", "template_media_keys"]


@dataclass(frozen=True)
class _Part:
    key: Any  # the dict key (unused for a whole input)
    media: tuple[Media, ...]
    rebuild: Callable[[Sequence[Media]], Any]


@dataclass(frozen=True)
class InputMedia:
    """The media of one input (``media``, in input order) and :meth:`rebuild` to put other media in their place."""

    input: Any
    parts: tuple[_Part, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def media(self) -> list[Media]:
        return [m for part in self.parts for m in part.media]

    def rebuild(self, media: Sequence[Media]) -> Any:
        """A new input carrying ``media`` (same length and order as :attr:`media`); the original is not changed."""
        if not self.parts:
            return self.input
        if not isinstance(self.input, dict):
            return self.parts[0].rebuild(media)
        out = dict(self.input)
        start = 0
        for part in self.parts:
            chunk = media[start:start + len(part.media)]
            start += len(part.media)
            if any(new is not old for new, old in zip(chunk, part.media, strict=True)):
                out[part.key] = part.rebuild(chunk)
        return out


def find_input_media(value: Any, config: GuardConfig, media_keys: Mapping[str, str] | None = None,
                     fit: Fit | None = None) -> InputMedia:
    """Decode the media of ``value`` (see the module docstring), under one request's limits
    (:mod:`smoothguard.limits`), images straight to ``fit``'s size. Raises ``MediaError`` naming the place."""
    whole = not isinstance(value, dict)
    media_keys = {} if whole or media_keys is None else media_keys
    parts: list[_Part] = []
    notes: list[str] = []
    with limits.request(config, fit):
        for key, item in [(None, value)] if whole else value.items():
            where = "input" if whole else f"input[{key!r}]"
            if key in media_keys:
                part = _raw_part(key, item, media_keys[key], config, notes)
            else:
                part = _messages_part(key, item, config, notes, where)
                if part is None:
                    _refuse_undeclared(item, where, None if whole else key)
            if part is not None:
                parts.append(part)
    return InputMedia(value, tuple(parts), tuple(notes))


def _messages_part(key: Any, value: Any, config: GuardConfig, notes: list[str], where: str) -> _Part | None:
    """The media of messages, a message list or a ``ChatPromptValue``; None for anything else, or no media."""
    from langchain_core.messages import BaseMessage
    from langchain_core.prompt_values import ChatPromptValue

    wrap: Callable[[list[Any]], Any]
    if isinstance(value, ChatPromptValue):
        messages, where, wrap = value.messages, f"{where}.messages", lambda new: ChatPromptValue(messages=new)
    elif isinstance(value, BaseMessage):
        messages, wrap = [value], lambda new: new[0]
    elif _is_message_list(value):
        messages, wrap = value, tuple if isinstance(value, tuple) else list
    else:
        return None
    found = find_media(messages, config, where=where)
    notes.extend(found.notes)
    if not found.slots:
        return None
    return _Part(key, tuple(found.media), lambda media: wrap(found.rebuild(media)))


def _is_message_list(value: Any) -> bool:
    if not isinstance(value, list | tuple) or not value:
        return False
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        return False  # a single (role, content) pair, not a list of messages
    return all(isinstance(x, str) or is_message_like(x) for x in value) and any(is_message_like(x) for x in value)


def _raw_part(key: str, value: Any, kind: str, config: GuardConfig, notes: list[str]) -> _Part | None:
    if kind not in ("image", "audio"):
        raise ValueError(f"media_keys[{key!r}] must be 'image' or 'audio', not {kind!r}")
    media = read_media_value(value, kind, f"input[{key!r}]", config, notes)  # type: ignore[arg-type]
    if media is None:
        return None
    return _Part(key, (media,), lambda chunk: write_media_value(value, chunk[0]))


# -- media slots of prompt templates ------------------------------------------------------------------------


def template_media_keys(runnable: Any) -> dict[str, str]:
    """The input variables that fill a media slot of a prompt template inside ``runnable`` (a chain, a binding,
    a prompt), each ``"image"`` or ``"audio"``: an ``ImagePromptTemplate``'s variables, and those of a dict block
    template (``{"type": "image", "base64": "{img}", ...}``, ``{"type": "input_audio", ...}``) that is media.

    :class:`~smoothguard_langchain.SmoothGuardRunnable` smooths these inputs without being told (``media_keys``).
    """
    found: dict[str, str] = {}
    for template in _templates(runnable, 0, set()):
        kind = _template_kind(template)
        if kind is not None:
            for name in getattr(template, "input_variables", None) or []:
                found.setdefault(name, kind)
    return found


def _templates(node: Any, depth: int, seen: set[int]) -> Iterator[Any]:
    """Every part template (text, image, dict) of the chat prompt templates reachable from ``node``."""
    from pydantic import BaseModel

    if depth > 24 or id(node) in seen:
        return
    seen.add(id(node))
    prompt = getattr(node, "prompt", None)
    if isinstance(prompt, list):  # a message template with content parts
        yield from prompt
    if not isinstance(node, BaseModel):
        return
    for name in type(node).model_fields:
        value = getattr(node, name, None)
        values = value.values() if isinstance(value, dict) else value if isinstance(value, list | tuple) else [value]
        for item in values:
            if isinstance(item, BaseModel):
                yield from _templates(item, depth + 1, seen)


def _template_kind(template: Any) -> str | None:
    name = type(template).__name__
    if name == "ImagePromptTemplate":
        return "image"
    if name == "DictPromptTemplate" and isinstance(getattr(template, "template", None), dict):
        kind = classify(template.template).kind
        return kind if kind in ("image", "audio") else None  # video, files: refused when filled (fail closed)
    return None


# -- media the guard was not told about --------------------------------------------------------------------

_MAGIC = ((b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
          (b"%PDF", "a PDF document"), (b"ID3", "an MP3 clip"), (b"OggS", "an Ogg clip"), (b"fLaC", "a FLAC clip"),
          (b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"))
_MEDIA_SUFFIX = re.compile(r"\.(png|jpe?g|gif|webp|bmp|tiff?|heic|avif|wav|mp3|m4a|ogg|flac|opus|aac|mp4|mov|webm|"
                           r"mkv|avi|pdf)$", re.IGNORECASE)
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]{32,}={0,2}")


def _sniff(raw: bytes) -> str | None:
    for magic, what in _MAGIC:
        if raw.startswith(magic):
            return what
    if raw[:4] == b"RIFF" and raw[8:12] in (b"WAVE", b"WEBP", b"AVI "):
        return {b"WAVE": "a WAV clip", b"WEBP": "a WebP image", b"AVI ": "an AVI video"}[raw[8:12]]
    if raw[4:8] == b"ftyp":
        return "an MP4/MOV/HEIC file"
    return None


def _undeclared(value: Any) -> str | None:
    """What media ``value`` is, when it is media given outside any message (None when it is not)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        what = _sniff(bytes(value[:16]))
        return f"the bytes of {what}" if what else None
    if isinstance(value, str):
        text = value.strip()
        head = text[:40].lower()
        if head.startswith("data:") and head[5:].split("/", 1)[0] in ("image", "audio", "video", "application"):
            return f"a data: URL ({head[5:].split(';', 1)[0].split(',', 1)[0]})"
        if head.startswith(("http://", "https://")) and " " not in text \
                and _MEDIA_SUFFIX.search(text.split("?", 1)[0].split("#", 1)[0]):
            return "the URL of a media file"
        if len(text) >= 32 and _BASE64.fullmatch(text[:64]):
            try:
                what = _sniff(base64.b64decode(text[:32], altchars=b"-_" if "-" in text or "_" in text else None))
            except (binascii.Error, ValueError):
                what = None
            return f"base64 text of {what}" if what else None
        return None
    if isinstance(value, list | tuple) and value and all(isinstance(x, Mapping) and "type" in x for x in value):
        for item in value:
            info = classify(item)
            if not info.is_text:
                return f"content blocks holding {info.label}s outside any message"
    return None


def _refuse_undeclared(value: Any, where: str, key: str | None) -> None:
    what = _undeclared(value)
    if what is None:
        return
    fix = (f"declare it with media_keys={{{key!r}: 'image'}} (or 'audio') so it is smoothed" if key is not None
           else "pass it inside a message's content, or as a dict value named in media_keys, so it is smoothed")
    raise MediaError(f"{where} holds {what}, which a prompt would hand to the model unguarded; {fix}")
