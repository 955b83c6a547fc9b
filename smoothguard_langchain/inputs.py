"""Find the media in a runnable's input, whatever its shape, and rebuild the input around other media.

Inputs understood (the rest pass through untouched and count as "no media"):

- a message (``BaseMessage``), a list/tuple of message-likes (messages, ``{"role", "content"}`` dicts,
  ``(role, content)`` pairs, strings), a ``ChatPromptValue``;
- a dict whose values are any of the above (e.g. ``{"messages": [...]}`` for a ``MessagesPlaceholder``), and,
  for the keys named in ``media_keys``, raw media values: data URLs, bare base64 strings, bytes or http(s) URLs
  (e.g. ``{"image": b64}`` feeding a ``"data:image/png;base64,{image}"`` prompt template).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from smoothguard import GuardConfig, Media
from smoothguard_langchain.blocks import find_media, is_message_like, read_media_value, write_media_value

__all__ = ["InputMedia", "find_input_media"]


@dataclass(frozen=True)
class _Part:
    key: str | None  # dict key, or None for the whole input
    media: tuple[Media, ...]
    rebuild: Callable[[Sequence[Media]], Any]


@dataclass(frozen=True)
class InputMedia:
    """The media of one input (``media``, in input order) and :meth:`rebuild` to put other media in their place."""

    input: Any
    parts: tuple[_Part, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def media(self) -> list[Media]:
        return [m for part in self.parts for m in part.media]

    def rebuild(self, media: Sequence[Media]) -> Any:
        """A new input carrying ``media`` (same length and order as :attr:`media`); the original is not changed."""
        if not self.parts:
            return self.input
        if self.parts[0].key is None:
            return self.parts[0].rebuild(media)
        out = dict(self.input)
        start = 0
        for part in self.parts:
            chunk = media[start:start + len(part.media)]
            start += len(part.media)
            if any(new is not old for new, old in zip(chunk, part.media, strict=True)):
                out[part.key] = part.rebuild(chunk)
        return out


def find_input_media(value: Any, config: GuardConfig, media_keys: Mapping[str, str] | None = None) -> InputMedia:
    """Decode the media of ``value`` (see the module docstring). Raises ``MediaError`` naming the place."""
    notes: list[str] = []
    if isinstance(value, dict):
        parts = []
        for key, item in value.items():
            if media_keys and key in media_keys:
                part = _raw_part(key, item, media_keys[key], config, notes)
            else:
                part = _messages_part(item, config, notes, where=f"input[{key!r}]", key=key)
            if part is not None:
                parts.append(part)
        return InputMedia(value, tuple(parts), tuple(notes))
    part = _messages_part(value, config, notes, where="input", key=None)
    return InputMedia(value, (part,) if part is not None else (), tuple(notes))


def _messages_part(value: Any, config: GuardConfig, notes: list[str], *, where: str, key: str | None) -> _Part | None:
    from langchain_core.messages import BaseMessage
    from langchain_core.prompt_values import ChatPromptValue

    if isinstance(value, ChatPromptValue):
        found = find_media(value.messages, config, where=f"{where}.messages")

        def rebuild(media: Sequence[Media]) -> Any:
            return ChatPromptValue(messages=found.rebuild(media))
    elif isinstance(value, BaseMessage):
        found = find_media([value], config, where=where)

        def rebuild(media: Sequence[Media]) -> Any:
            return found.rebuild(media)[0]
    elif _is_message_list(value):
        found = find_media(value, config, where=where)

        def rebuild(media: Sequence[Media]) -> Any:
            messages = found.rebuild(media)
            return tuple(messages) if isinstance(value, tuple) else messages
    else:
        return None
    notes.extend(found.notes)
    return _Part(key, tuple(found.media), rebuild) if found.slots else None


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
