"""Find the images and audio clips in LlamaIndex payloads and write noisy copies back in the same form.

A payload is a list of ``ChatMessage`` (its ``ImageBlock``/``AudioBlock`` items) or a list of image documents
(``ImageNode``/``ImageDocument``/``ImageBlock``, the legacy ``image_documents=`` argument). Each medium is
decoded once into a :class:`~smoothguard.Media`; :meth:`Payload.build` then rebuilds the payload for one
candidate, every medium in the same slot and form as the caller's:

======================  =====================================================================
caller's form           noisy copy
======================  =====================================================================
inline bytes (base64)   inline bytes, base64 as LlamaIndex stores them, same format and MIME type
file-like (``IOBase``)  a new ``BytesIO`` with the encoded bytes
``path``                a file of the same format in a private temp directory (removed by ``close``)
``data:`` URL           a ``data:`` URL
http(s) URL             per ``remote_media``: ``fetch`` downloads it (size/time limits) and sends
                        inline bytes; ``passthrough`` leaves the URL (not smoothed, said in the
                        notes); ``error`` raises :class:`~smoothguard.errors.MediaError`
======================  =====================================================================

A copy holds its medium in that one form only (the carrier's other forms are cleared, so no provider can read
the caller's original instead). The caller's objects are never modified: copies are made with ``model_copy``
(validators skipped, so a legacy ``additional_kwargs["images"]`` is not converted twice). Candidate 0, the
original when ``include_original``, keeps the caller's very blocks (a file-like one gets its own stream of the
same bytes). GIF images are written back as PNG (with their MIME type); audio must be WAV. Images inside a
``CitableBlock`` (as a tool's output may be) or a ``CitationBlock`` are smoothed like top-level ones.

Blocks are mapped onto the kinds of :mod:`smoothguard.content_parts`, and blocks that are not smoothed go through
its one policy (:func:`~smoothguard.content_parts.check_part`): ``VideoBlock`` and ``DocumentBlock`` (and any
other block class whose name says image, audio, video, document or file) raise
:class:`~smoothguard.errors.MediaError` unless ``unsmoothable_media="passthrough"``, which sends them unchanged
and says so in the notes; a block class that is neither text nor media raises (fail closed). Text, thinking,
tool-call and cache-point blocks are left as they are.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple, Self

from llama_index.core.base.llms.types import (
    AudioBlock,
    ChatMessage,
    CitableBlock,
    CitationBlock,
    DocumentBlock,
    ImageBlock,
    VideoBlock,
)
from llama_index.core.bridge.pydantic import AnyUrl
from llama_index.core.schema import BaseNode, ImageNode

from smoothguard import GuardConfig, Media, limits
from smoothguard.content_parts import ContentPart, check_part
from smoothguard.errors import MediaError, shorten
from smoothguard.image_resize import fitter, rule_for_model
from smoothguard.limits import MediaBudget
from smoothguard.media.images import Fit

__all__ = ["DocumentMedia", "MessageMedia", "Payload", "block_part", "image_documents_to_blocks", "image_fit"]

Form = Literal["bytes", "io", "path", "data_url", "fetched"]


def image_fit(config: GuardConfig, llm: Any) -> Fit | None:
    """The size images are decoded at for ``llm``: ``image_resize``, with ``"auto"`` read from the LLM as the guard
    reads it, so the guard's own resize has nothing left to do."""
    return fitter(config.image_resize, rule_for_model(llm))


# -- carriers: where each LlamaIndex class keeps its medium ------------------------------------------------------


class _Fields(NamedTuple):
    """The field names of a carrier's inline data, path, url and MIME type (None: it has no MIME field)."""

    inline: str
    path: str
    url: str
    mime: str | None


_IMAGE_BLOCK_FIELDS = _Fields("image", "path", "url", "image_mimetype")
_AUDIO_BLOCK_FIELDS = _Fields("audio", "path", "url", None)
_NODE_FIELDS = _Fields("image", "image_path", "image_url", "image_mimetype")
_RESOURCE_FIELDS = _Fields("data", "path", "url", "mimetype")  # a node's ``image_resource`` (MediaResource)


def _holder(carrier: Any) -> tuple[Any, _Fields] | None:
    """The object holding ``carrier``'s medium (itself, or a node's ``image_resource``) and its field names."""
    if isinstance(carrier, ImageBlock):
        return carrier, _IMAGE_BLOCK_FIELDS
    if isinstance(carrier, AudioBlock):
        return carrier, _AUDIO_BLOCK_FIELDS
    if isinstance(carrier, ImageNode):
        return carrier, _NODE_FIELDS
    resource = getattr(carrier, "image_resource", None)
    return (resource, _RESOURCE_FIELDS) if resource is not None else None


def _source(carrier: Any) -> tuple[Any, Any, Any, str | None] | None:
    """``carrier``'s (inline, path, url, MIME type); an ImageNode's path falls back to ``metadata["file_path"]``.
    None for a node without an image."""
    found = _holder(carrier)
    if found is None:
        return None
    holder, f = found
    path = getattr(holder, f.path)
    if isinstance(carrier, ImageNode):
        path = path or carrier.metadata.get("file_path")
    return getattr(holder, f.inline), path, getattr(holder, f.url), getattr(holder, f.mime) if f.mime else None


def _with(carrier: Any, form: Literal["inline", "path", "url"], value: Any, mime: str) -> Any:
    """A copy of ``carrier`` holding ``value`` as its ``form`` (its other two forms cleared), with MIME type
    ``mime`` where the carrier keeps one."""
    found = _holder(carrier)
    assert found is not None
    holder, f = found
    if holder is not carrier and form == "url":
        value = AnyUrl(value)
    elif isinstance(carrier, ImageNode):  # an ImageNode keeps base64 text and a str path
        value = value.decode("ascii") if isinstance(value, bytes) else str(value)
    update = {f.inline: None, f.path: None, f.url: None, getattr(f, form): value}
    if f.mime:
        update[f.mime] = mime
    copy = holder.model_copy(update=update)
    return copy if holder is carrier else carrier.model_copy(update={"image_resource": copy})


def _describe(carrier: Any) -> str:
    """How ``carrier`` holds its medium, for error messages (``", path=photo.png"``)."""
    inline, path, url, _ = _source(carrier) or (None, None, None, None)
    if isinstance(inline, io.IOBase):
        return ", file-like object"
    if inline:
        return ", inline bytes"
    if path:
        return f", path={shorten(path)}"
    if url:
        return ", data: URL" if str(url).startswith("data:") else f", url={shorten(url)}"
    return ""


# -- reading and writing the media of one payload ----------------------------------------------------------------


@dataclass(frozen=True)
class _Slot:
    """One medium of the payload: the form to write back, the caller's carrier, its place in the payload."""

    form: Form
    carrier: Any
    place: Any  # the payload's key for the carrier (MessageMedia: (message, block, index inside a container))
    b64: bool = True  # inline bytes were stored base64-encoded (always, after ImageBlock validation)
    raw: bytes | None = None  # the bytes of a file-like original (candidate 0 gets its own stream of them)
    sole: bool = True  # the carrier holds no other source than the one read (inline, path or url)


class _Reader:
    """Decodes carriers into Media under the config's limits; collects notes; writes copies; owns the temp
    directory of path-form copies."""

    def __init__(self, config: GuardConfig, fit: Fit | None = None) -> None:
        self.config = config
        self.budget = MediaBudget(config, fit)  # the request's media count and pixels; images decoded at ``fit``
        self.media: list[Media] = []
        self.slots: list[_Slot] = []
        self.notes: list[str] = []
        self._tmp: Path | None = None
        self._lock = threading.Lock()

    def add(self, carrier: Any, where: str, place: Any) -> None:
        """Decode the medium of ``carrier`` (an ImageBlock, AudioBlock, ImageNode or node with an
        ``image_resource``); a remote one passed through adds a note and no medium."""
        source = _source(carrier)
        name = type(carrier).__name__
        if source is None:
            raise MediaError(f"{where} ({name}) holds no image: pass ImageNode, ImageDocument or a node with an "
                             "image_resource")
        inline, path, url, _ = source
        kind = "audio" if isinstance(carrier, AudioBlock) else "image"
        b64, raw = True, None
        if isinstance(inline, io.IOBase):
            form, raw = "io", _read_io(inline)
            media = self._decode(kind, raw, where, carrier)
        elif inline:
            data, b64 = _unbase64(inline.encode("ascii") if isinstance(inline, str) else bytes(inline))
            form, media = "bytes", self._decode(kind, data, where, carrier)
        elif path:
            form, media = "path", self._decode(kind, str(path), where, carrier)
        elif url and str(url)[:5].lower() == "data:":
            form, media = "data_url", self._decode(kind, str(url), where, carrier)
        elif url:
            fetched = self._fetch(str(url), kind, where)
            if fetched is None:
                return
            form, media = "fetched", fetched
        else:
            hint = (" (MediaResource.data is dropped when a docstore serialises a node; store a path or url)"
                    if isinstance(carrier, BaseNode) else "")
            raise MediaError(f"{where} ({name}) holds no {kind}: its inline data, path and url are all empty{hint}")
        self.media.append(media)
        self.slots.append(_Slot(form, carrier, place, b64, raw, sole=sum(map(bool, (inline, path, url))) == 1))

    def _fetch(self, url: str, kind: str, where: str) -> Media | None:
        """A remote medium under ``remote_media``: fetched, or None when passed through (both noted)."""
        try:
            if not limits.remote(url, kind, self.config):
                self.notes.append(f"{where}: {limits.passthrough_note(url, kind)}")
                return None
            media = self.budget.fetch(url, kind)
        except MediaError as exc:
            raise MediaError(f"{where}: {exc}") from None
        self.notes.append(f"{where}: remote {kind} {shorten(url)} fetched; every copy was sent inline")
        return media

    def _decode(self, kind: str, source: Any, where: str, carrier: Any) -> Media:
        try:
            return self.budget.decode(source, kind)
        except Exception as exc:  # a decoder's own error is a MediaError too
            problem = exc if isinstance(exc, MediaError) else f"could not read the {kind}: {type(exc).__name__}: {exc}"
            raise MediaError(f"{where} ({type(carrier).__name__}{_describe(carrier)}): {problem}") from None

    def replacements(self, variant: Sequence[Media], tag: int | str) -> dict[Any, Any]:
        """place -> new carrier for each medium of ``variant`` that is not the original Media object, and for an
        original the model could read otherwise than the guard did: a fetched one (sent inline), a file-like one (a
        stream of its own), one whose carrier holds other sources too (only the one read is kept: LlamaIndex's
        OpenAI conversion reads a url before inline data or a path); other places keep the caller's carrier."""
        if len(variant) != len(self.slots):
            raise ValueError(f"variant has {len(variant)} media, the payload {len(self.slots)}")
        replaced: dict[Any, Any] = {}
        for k, (slot, medium) in enumerate(zip(self.slots, variant, strict=True)):
            if medium is not self.media[k] or slot.form == "fetched":
                replaced[slot.place] = self._write(slot, medium, f"{tag}-{k}-")
            elif slot.form == "io" or not slot.sole:
                inline, path, _, mime = _source(slot.carrier)  # type: ignore[misc]
                if slot.form == "path":
                    replaced[slot.place] = _with(slot.carrier, "path", path, mime)
                else:  # the caller's inline data as it was stored (a stream gets one of its own)
                    data = io.BytesIO(slot.raw) if slot.form == "io" else inline
                    replaced[slot.place] = _with(slot.carrier, "inline", data, mime)
        return replaced

    def _write(self, slot: _Slot, media: Media, name: str) -> Any:
        """The slot's carrier holding ``media`` instead, in the caller's form."""
        if slot.form == "path":
            return _with(slot.carrier, "path", self._save(media, name), media.mime_type)
        if slot.form == "data_url":
            return _with(slot.carrier, "url", media.to_data_url(), media.mime_type)
        raw = media.to_bytes()
        # "io": a new stream; "bytes" and "fetched": inline bytes, base64-encoded as LlamaIndex stores them
        data = io.BytesIO(raw) if slot.form == "io" else base64.b64encode(raw) if slot.b64 else raw
        return _with(slot.carrier, "inline", data, media.mime_type)

    def _save(self, media: Media, name: str) -> Path:
        with self._lock:
            if self._tmp is None:
                self._tmp = Path(tempfile.mkdtemp(prefix="smoothguard-"))
        suffix = "." + media.mime_type.split("/", 1)[1]  # .png, .jpeg, .webp, .bmp, .tiff, .wav
        fd, path = tempfile.mkstemp(suffix, name, self._tmp)
        with os.fdopen(fd, "wb") as out:
            out.write(media.to_bytes())
        return Path(path)

    def close(self) -> None:
        """Remove the temp directory of path-form copies (if any)."""
        with self._lock:
            tmp, self._tmp = self._tmp, None
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


class Payload:
    """The media found in a request, and the request rebuilt around other media (one per candidate).

    ``media``: one :class:`Media` per smoothed medium, in order. ``notes``: what the caller should know (remote
    media passed through, unsmoothed video/documents). Use as a context manager (or call :meth:`close`) so
    path-form copies are deleted.
    """

    _reader: _Reader

    @property
    def media(self) -> list[Media]:
        return self._reader.media

    @property
    def notes(self) -> tuple[str, ...]:
        return tuple(self._reader.notes)

    def build(self, variant: Sequence[Media], tag: int | str = "copy") -> Any:
        """The request with ``variant[k]`` in the k-th medium's slot; a medium that *is* the original Media
        object keeps the caller's carrier. ``tag`` prefixes the names of path-form files."""
        raise NotImplementedError

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class MessageMedia(Payload):
    """The media of a list of chat messages (in message, then block order); :meth:`build` returns new messages."""

    def __init__(self, messages: Sequence[ChatMessage], config: GuardConfig, *,
                 where: Callable[[int, int], str] | None = None, fit: Fit | None = None) -> None:
        """``where(i, j)`` names block j of message i in errors and notes (default ``messages[i].blocks[j]``);
        ``fit``: the size images are decoded at (:func:`image_fit`)."""
        self.messages = list(messages)
        self._reader = _Reader(config, fit)
        name = where or (lambda i, j: f"messages[{i}].blocks[{j}]")
        for i, message in enumerate(self.messages):
            if not isinstance(message, ChatMessage):
                raise TypeError(f"messages[{i}] is a {type(message).__name__}, not a llama_index ChatMessage")
            for j, block in enumerate(message.blocks):
                where_ = name(i, j)
                self._read(block, where_, (i, j, None))
                for k, inner in _nested(block):
                    self._read(inner, f"{where_}.cited_content" if k is None else f"{where_}.content[{k}]", (i, j, k))

    def _read(self, block: Any, where: str, place: tuple[int, int, int | None]) -> None:
        """Smooth an ImageBlock/AudioBlock; any other block goes through the core's policy (text passes, media the
        guard cannot smooth is refused or noted, unknown blocks are refused)."""
        if isinstance(block, ImageBlock | AudioBlock):
            self._reader.add(block, where, place)
        elif note := check_part(block_part(block), where, self._reader.config):
            self._reader.notes.append(note)

    def build(self, variant: Sequence[Media], tag: int | str = "copy") -> list[ChatMessage]:
        replaced = self._reader.replacements(variant, tag)
        out = []
        for i, message in enumerate(self.messages):
            blocks = [_rebuilt(block, i, j, replaced) for j, block in enumerate(message.blocks)]
            # "images" (legacy ImageDocuments) were already turned into blocks when the message was built
            kwargs = {k: v for k, v in message.additional_kwargs.items() if k != "images"}
            out.append(message.model_copy(update={"blocks": blocks, "additional_kwargs": kwargs}))
        return out


class DocumentMedia(Payload):
    """The media of a legacy ``image_documents`` list (ImageNode/ImageDocument/ImageBlock); :meth:`build` returns a
    new list of the same carriers."""

    def __init__(self, documents: Sequence[Any], config: GuardConfig, *, name: str = "image_documents",
                 fit: Fit | None = None) -> None:
        self.documents = list(documents)
        self._reader = _Reader(config, fit)
        for i, doc in enumerate(self.documents):
            if not isinstance(doc, BaseNode | ImageBlock | AudioBlock):
                raise TypeError(f"{name}[{i}] is a {type(doc).__name__}; pass ImageNode, ImageDocument or ImageBlock")
            self._reader.add(doc, f"{name}[{i}]", i)

    def build(self, variant: Sequence[Media], tag: int | str = "copy") -> list[Any]:
        out = list(self.documents)
        for i, carrier in self._reader.replacements(variant, tag).items():
            out[i] = carrier
        return out


#: LlamaIndex block classes without media of their own
_TEXT_BLOCKS = ("TextBlock", "ThinkingBlock", "ToolCallBlock", "CachePoint", "CitableBlock", "CitationBlock")
_KIND_WORDS = (("image", "image"), ("audio", "audio"), ("video", "video"), ("document", "file"), ("file", "file"))


def block_part(block: Any) -> ContentPart:
    """The :class:`~smoothguard.content_parts.ContentPart` of a LlamaIndex block that is not an ImageBlock or
    AudioBlock: video, file (DocumentBlock), text, a medium the guard cannot decode (a class whose name says image,
    audio, video, document or file), or unknown."""
    name = type(block).__name__
    if isinstance(block, VideoBlock):
        return ContentPart("video", "llamaindex", name, "object", block.url, mime=block.video_mimetype)
    if isinstance(block, DocumentBlock):
        return ContentPart("file", "llamaindex", name, "object", block.url, mime=block.document_mimetype)
    if isinstance(block, str) or name in _TEXT_BLOCKS:
        return ContentPart("text", "llamaindex", name)
    lowered = name.lower()
    for word, kind in _KIND_WORDS:
        if word in lowered:
            return ContentPart(kind, "llamaindex", name, "object",  # type: ignore[arg-type]
                               reason=f"a {name} the guard does not know how to decode")
    return ContentPart("unknown", "llamaindex", name, problem=f"an unknown content block class {name!r} (neither "
                       "text nor a known medium)")


def _nested(block: Any) -> list[tuple[int | None, Any]]:
    """(index, block) of the blocks inside a CitableBlock's ``content`` (index None: a CitationBlock's
    ``cited_content``); nothing for other blocks."""
    if isinstance(block, CitableBlock):
        return list(enumerate(block.content))
    if isinstance(block, CitationBlock):
        return [(None, block.cited_content)]
    return []


def _rebuilt(block: Any, i: int, j: int, replaced: dict[tuple[int, int, int | None], Any]) -> Any:
    """Block ``j`` of message ``i`` with its replaced media (a container copied with its new inner blocks)."""
    if (i, j, None) in replaced:
        if isinstance(block, CitationBlock):
            return block.model_copy(update={"cited_content": replaced[(i, j, None)]})
        return replaced[(i, j, None)]
    if isinstance(block, CitableBlock) and any((i, j, k) in replaced for k in range(len(block.content))):
        return block.model_copy(update={"content": [replaced.get((i, j, k), inner)
                                                    for k, inner in enumerate(block.content)]})
    return block


def image_documents_to_blocks(documents: Sequence[Any] | None, *, name: str = "image_documents") -> list[Any]:
    """ImageBlocks for a legacy ``image_documents`` list (ImageNode, ImageDocument, a node with an
    ``image_resource``, or ImageBlock items), keeping their form: inline base64, path or url.

    Raises :class:`MediaError` naming the item for a node without an image.
    """
    blocks: list[Any] = []
    for i, doc in enumerate(documents or ()):
        where = f"{name}[{i}]"
        if isinstance(doc, ImageBlock | AudioBlock):
            blocks.append(doc)
            continue
        if not isinstance(doc, BaseNode):
            raise TypeError(f"{where} is a {type(doc).__name__}; pass ImageNode, ImageDocument or ImageBlock")
        inline, path, url, mime = _source(doc) or (None, None, None, None)
        if inline:
            raw, _ = _unbase64(inline.encode("ascii") if isinstance(inline, str) else bytes(inline))
            blocks.append(ImageBlock(image=raw, image_mimetype=mime))
        elif path:
            if not Path(str(path)).is_file():
                raise MediaError(f"{where} ({type(doc).__name__}): image file not found: {shorten(path)}")
            blocks.append(ImageBlock(path=Path(str(path)), image_mimetype=mime))
        elif url:
            blocks.append(ImageBlock(url=str(url), image_mimetype=mime))
        else:
            raise MediaError(f"{where} ({type(doc).__name__}) holds no image: its inline data, path and url are "
                             "all empty")
    return blocks


def _read_io(stream: io.IOBase) -> bytes:
    """All bytes of a file-like object, leaving its position where it was."""
    if isinstance(stream, io.BytesIO):
        return stream.getvalue()
    position = stream.tell()
    try:
        stream.seek(0)
        return stream.read()  # type: ignore[attr-defined]
    finally:
        stream.seek(position)


def _unbase64(data: bytes) -> tuple[bytes, bool]:
    """(raw bytes, whether ``data`` was base64): LlamaIndex stores inline media base64-encoded."""
    try:
        return base64.b64decode(data, validate=True), True
    except (binascii.Error, ValueError):
        return data, False
