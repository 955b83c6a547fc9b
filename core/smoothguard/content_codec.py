"""The dict-level content-list codec, written once: find the media in a list of content parts, rebuild it with
other media in the same slots.

Every adapter whose payload is a list of content-part dicts (the proxy's OpenAI body, LangChain's message content)
goes through here; each keeps only its own envelope (message types, error types, how media is encoded):

* :func:`scan` walks one content list in order, asking :func:`~smoothguard.content_parts.classify` what each part
  is. Smoothable image and audio parts are yielded as :class:`MediaPart` (where they are, what they are). Every
  other part goes through :func:`~smoothguard.content_parts.check_part`: media the guard cannot smooth is refused
  (:class:`~smoothguard.content_parts.UnsupportedContent`) or, under ``unsmoothable_media="passthrough"``, noted;
  unknown parts are always refused (fail closed). Containers (a ``tool_result``'s ``content`` list, Bedrock's
  ``toolResult``) are searched the same way, :data:`MAX_NESTING` lists deep at most; media found there is yielded
  too, or treated as media the guard cannot smooth when the caller passes ``refuse_nested`` (the proxy does).
* :func:`rebuild` writes new media into the parts at those slots, in each part's own dialect
  (:func:`~smoothguard.content_parts.write_media`), and returns new content lists. Untouched parts are the very
  same objects; touched parts, and the containers and lists on the way down to them, are copies; the caller's
  lists and parts are never changed.

Core only: nothing here imports LangChain or LlamaIndex.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from smoothguard.content_parts import (
    ContentPart,
    UnsupportedContent,
    check_part,
    classify,
    get_path,
    set_path,
    write_media,
)

__all__ = ["MAX_NESTING", "MediaPart", "rebuild", "scan"]

#: content lists nested inside parts (a tool result inside a tool result ...) searched for media; deeper is refused
MAX_NESTING = 8


@dataclass(frozen=True)
class MediaPart:
    """One smoothable image or audio part found by :func:`scan`.

    message: the index of the content list among the caller's (its message); block: the part's index in that list,
    or of the top-level container holding it; path: the indices in the nested content lists below ``block`` (``()``
    for a top-level part); keys: the keys that lead to each of those nested lists (``(("content",),)``).
    part: its classification (dialect, kind, where the payload lives); place: how errors and notes name it
    (``messages[0].content[1].content[0]``); original: the part itself, as the caller gave it.
    """

    message: int
    block: int
    part: ContentPart
    place: str
    path: tuple[int, ...] = ()
    keys: tuple[tuple[str, ...], ...] = ()
    original: Any = field(default=None, compare=False, repr=False)


def scan(content: Sequence[Any], where: str, config: Any, notes: list[str], *, message: int = 0,
         refuse_nested: str | None = None) -> Iterator[MediaPart]:
    """The smoothable media parts of ``content`` (one message's content list), in order, lazily: a part is
    checked only after the previous one was handled, so the first problem in reading order is the one raised.

    where: how the list is named (``messages[0].content``); config: what :func:`check_part` reads
    (``unsmoothable_media``, ``remote_media``; None: refuse); notes: pass-through notes are appended to it;
    message: copied into each :class:`MediaPart`; refuse_nested: None to yield media nested in containers like
    top-level media, else the reason they cannot be smoothed (then refused, or noted under pass-through).

    Raises :class:`UnsupportedContent` (a :class:`~smoothguard.errors.MediaError`) for a part refused, and for
    content lists nested more than :data:`MAX_NESTING` deep (code ``"invalid_messages"``).
    """
    return _scan(content, where, config, notes, message, (), (), refuse_nested)


def _scan(content: Sequence[Any], where: str, config: Any, notes: list[str], message: int, outer: tuple[int, ...],
          keys: tuple[tuple[str, ...], ...], refuse_nested: str | None) -> Iterator[MediaPart]:
    if len(outer) > MAX_NESTING:
        raise UnsupportedContent(f"{where}: content parts nested more than {MAX_NESTING} levels deep cannot be "
                                 "checked for images or audio; flatten them", place=where, part_type="content",
                                 kind="unknown", code="invalid_messages")
    for j, item in enumerate(content):
        place = f"{where}[{j}]"
        info = classify(item)
        if info.smoothable and not (outer and refuse_nested is not None):
            top, path = (outer[0], (*outer[1:], j)) if outer else (j, ())
            yield MediaPart(message, top, info, place, path, keys, item)
            continue
        if info.smoothable:
            info = dataclasses.replace(info, reason=refuse_nested)
        if note := check_part(info, place, config):
            notes.append(note)
        if info.is_text and info.nested:
            yield from _scan(get_path(item, info.nested), f"{place}.{'.'.join(info.nested)}", config, notes, message,
                             (*outer, j), (*keys, info.nested), refuse_nested)


def rebuild(contents: Callable[[int], Sequence[Any]],
            writes: Iterable[tuple[MediaPart, str, str]]) -> dict[int, list[Any]]:
    """New content lists with media written into the given slots, in each part's own dialect.

    contents: the caller's content list of a message index (read, never changed); writes: ``(slot, data, mime)``
    per part to rewrite, where ``data`` is the base64 of the encoded medium and ``mime`` its type. Returns the new
    list of every message written to, by index; messages not written to are left out (keep the caller's).
    """
    out: dict[int, list[Any]] = {}
    for slot, data, mime in writes:
        if slot.message not in out:
            out[slot.message] = list(contents(slot.message))
        content = out[slot.message]
        content[slot.block] = _write_at(content[slot.block], slot, 0, data, mime)
    return out


def _write_at(item: Any, slot: MediaPart, depth: int, data: str, mime: str) -> dict[str, Any]:
    """``item`` with the medium written at ``slot.path[depth:]`` (containers and lists on the way copied)."""
    if depth == len(slot.path):
        return write_media(item, slot.part, data, mime)
    keys = slot.keys[depth]
    inner = list(get_path(item, keys))
    inner[slot.path[depth]] = _write_at(inner[slot.path[depth]], slot, depth + 1, data, mime)
    return set_path(item, keys, inner)
