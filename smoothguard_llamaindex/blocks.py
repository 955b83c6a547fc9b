"""Find the images and audio clips in LlamaIndex payloads and write noisy copies back in the same form.

A payload is a list of ``ChatMessage`` (its ``ImageBlock``/``AudioBlock`` items) or a list of image documents
(``ImageNode``/``ImageDocument``/``ImageBlock``, the legacy ``image_documents=`` argument). Each medium is
decoded once into a :class:`~smoothguard.Media`; :meth:`MessageMedia.build` then rebuilds the payload for
one candidate, every medium in the same slot and form as the caller's:

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

The caller's objects are never modified: copies are made with ``model_copy`` (validators skipped, so a
legacy ``additional_kwargs["images"]`` is not converted twice). Candidate 0, the original when
``include_original``, keeps the caller's very blocks (a file-like one gets its own stream of the same
bytes). GIF images are written back as PNG (with their MIME type); audio must be WAV. Images inside a
``CitableBlock`` (as a tool's output may be) or a ``CitationBlock`` are smoothed like top-level ones.

Blocks are mapped onto the kinds of :mod:`smoothguard.content_parts`, and blocks that are not smoothed go through
its one policy (:func:`~smoothguard.content_parts.unsmoothable`): ``VideoBlock`` and ``DocumentBlock`` (and any
other block class whose name says image, audio, video, document or file) raise
:class:`~smoothguard.errors.MediaError` unless ``unsmoothable_media="passthrough"``, which sends them unchanged
and says so in the notes; a block class that is neither text nor media raises (fail closed). Text, thinking,
tool-call and cache-point blocks are left as they are.
"""

from __future__ import annotations

import base64
import binascii
import io
import mimetypes
import shutil
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Self

from llama_index.core.base.llms.types import (
    AudioBlock,
    ChatMessage,
    CitableBlock,
    CitationBlock,
    DocumentBlock,
    ImageBlock,
    MessageRole,
    TextBlock,
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

__all__ = ["DocumentMedia", "MessageMedia", "block_part", "image_documents_to_blocks", "user_message"]

Form = Literal["bytes", "io", "path", "data_url", "fetched"]
_EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp", "image/bmp": ".bmp",
               "image/tiff": ".tiff", "audio/wav": ".wav"}


@dataclass(frozen=True)
class _Slot:
    """One medium of the payload: where it is, the caller's carrier, and the form to write back."""

    where: str
    kind: Literal["image", "audio"]
    form: Form
    carrier: Any
    b64: bool = True  # inline bytes were stored base64-encoded (always, after ImageBlock validation)
    suffix: str = ""
    raw: bytes | None = None  # the bytes of a file-like original (candidate 0 gets its own stream of them)


def image_fit(config: GuardConfig, llm: Any) -> Fit | None:
    """The size images are decoded at for ``llm``: ``image_resize``, with ``"auto"`` read from the LLM as the guard
    reads it, so the guard's own resize has nothing left to do."""
    return fitter(config.image_resize, rule_for_model(llm))


class _Reader:
    """Decodes carriers into Media under the config's limits; collects notes; owns the temp directory."""

    def __init__(self, config: GuardConfig, fit: Fit | None = None) -> None:
        self.config = config
        self.budget = MediaBudget(config, fit)  # the request's media count and pixels; images decoded at ``fit``
        self.media: list[Media] = []
        self.slots: list[_Slot] = []
        self.notes: list[str] = []
        self._tmp: Path | None = None
        self._lock = threading.Lock()

    # -- reading ------------------------------------------------------------------------------------------

    def add_block(self, block: ImageBlock | AudioBlock, where: str) -> None:
        kind: Literal["image", "audio"] = "image" if isinstance(block, ImageBlock) else "audio"
        data = block.image if kind == "image" else block.audio
        if isinstance(data, io.IOBase):
            content = _read_io(data)
            self._add(where, kind, "io", block, lambda: self._decode(kind, content, where, block), raw=content)
        elif data:
            raw, was_b64 = _unbase64(bytes(data))
            self._add(where, kind, "bytes", block, lambda: self._decode(kind, raw, where, block), b64=was_b64)
        elif block.path is not None:
            self._add(where, kind, "path", block, lambda: self._decode(kind, str(block.path), where, block),
                      suffix=Path(str(block.path)).suffix)
        elif block.url is not None:
            self._add_url(str(block.url), where, kind, block)
        else:
            raise MediaError(f"{where} ({type(block).__name__}) holds no {kind}: its {kind}, path and url "
                             "are all empty")

    def add_node(self, node: BaseNode, where: str) -> None:
        """An ``ImageNode`` (image / image_path / image_url) or a node with an ``image_resource``."""
        if isinstance(node, ImageNode):
            inline, path, url = node.image, node.image_path or node.metadata.get("file_path"), node.image_url
        elif getattr(node, "image_resource", None) is not None:
            resource = node.image_resource
            inline, path, url = resource.data, resource.path, resource.url
        else:
            raise MediaError(f"{where} ({type(node).__name__}) holds no image: pass ImageNode, ImageDocument or a "
                             "node with an image_resource")
        if inline:
            raw, was_b64 = _unbase64(inline.encode("ascii") if isinstance(inline, str) else bytes(inline))
            self._add(where, "image", "bytes", node, lambda: self._decode("image", raw, where, node), b64=was_b64)
        elif path:
            self._add(where, "image", "path", node, lambda: self._decode("image", str(path), where, node),
                      suffix=Path(str(path)).suffix)
        elif url:
            self._add_url(str(url), where, "image", node)
        else:
            raise MediaError(f"{where} ({type(node).__name__}) holds no image: its inline data, path and url are "
                             "all empty (MediaResource.data is dropped when a docstore serialises a node; "
                             "store a path or url)")

    def _add(self, where: str, kind: Literal["image", "audio"], form: Form, carrier: Any, decode: Any,
             b64: bool = True, suffix: str = "", raw: bytes | None = None) -> None:
        self.media.append(decode())
        self.slots.append(_Slot(where, kind, form, carrier, b64, suffix, raw))

    def _add_url(self, url: str, where: str, kind: Literal["image", "audio"], carrier: Any) -> None:
        if url[:5].lower() == "data:":
            self._add(where, kind, "data_url", carrier, lambda: self._decode(kind, url, where, carrier))
            return

        def download() -> Media:
            try:
                return self.budget.fetch(url, kind)
            except MediaError as exc:
                raise MediaError(f"{where}: {exc}") from None

        try:
            fetched = limits.remote(url, kind, self.config)
        except MediaError as exc:
            raise MediaError(f"{where}: {exc}") from None
        if not fetched:
            self.notes.append(f"{where}: {limits.passthrough_note(url, kind)}")
            return

        self._add(where, kind, "fetched", carrier, download)
        self.notes.append(f"{where}: remote {kind} {shorten(url)} fetched; every copy was sent inline")

    def _decode(self, kind: str, source: Any, where: str, carrier: Any) -> Media:
        try:
            return self.budget.decode(source, kind)
        except MediaError as exc:
            raise MediaError(f"{where} ({type(carrier).__name__}{_describe(carrier)}): {exc}") from None
        except Exception as exc:  # never let a decoder's own error escape
            raise MediaError(f"{where} ({type(carrier).__name__}{_describe(carrier)}): could not read the "
                             f"{kind}: {type(exc).__name__}: {exc}") from None

    # -- writing ------------------------------------------------------------------------------------------

    def original(self, k: int) -> Any:
        """The caller's carrier of the ``k``-th medium; a file-like one gets its own stream (same bytes), so
        the model reading it never moves the caller's stream."""
        slot = self.slots[k]
        if slot.form == "io" and slot.raw is not None:
            field = "image" if isinstance(slot.carrier, ImageBlock) else "audio"
            return slot.carrier.model_copy(update={field: io.BytesIO(slot.raw)})
        return slot.carrier

    def write(self, k: int, media: Media, tag: str) -> Any:
        """The carrier of the ``k``-th medium holding ``media`` instead, in the caller's form."""
        slot = self.slots[k]
        if slot.form == "path":
            return _with_path(slot.carrier, self._save(media, slot, f"{tag}-{k}"))
        if slot.form == "data_url":
            return _with_url(slot.carrier, media.to_data_url())
        raw = media.to_bytes()
        if slot.form == "io":
            return _with_inline(slot.carrier, io.BytesIO(raw), media)
        # "bytes" and "fetched": inline bytes, base64-encoded as LlamaIndex stores them
        return _with_inline(slot.carrier, base64.b64encode(raw) if slot.b64 else raw, media)

    def _save(self, media: Media, slot: _Slot, name: str) -> Path:
        with self._lock:
            if self._tmp is None:
                self._tmp = Path(tempfile.mkdtemp(prefix="smoothguard-"))
        suffix = slot.suffix if mimetypes.guess_type(f"x{slot.suffix}")[0] == media.mime_type else ""
        path = self._tmp / f"{name}{suffix or _EXTENSIONS.get(media.mime_type, '')}"
        path.write_bytes(media.to_bytes())
        return path

    def close(self) -> None:
        """Remove the temp directory of path-form copies (if any)."""
        with self._lock:
            tmp, self._tmp = self._tmp, None
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


class _FoundMedia:
    """What MessageMedia and DocumentMedia share: the reader, the place of each medium, the per-candidate
    replacements, and cleanup of the temporary files written for path-form media."""

    _reader: _Reader
    _places: list[Any]

    @property
    def media(self) -> list[Media]:
        return self._reader.media

    @property
    def notes(self) -> tuple[str, ...]:
        return tuple(self._reader.notes)

    def _replacements(self, variant: Sequence[Media], tag: int | str, what: str) -> dict[Any, Any]:
        """place -> new carrier for each medium of ``variant`` that is not the original Media object, and for a
        fetched original (sent inline, so the model sees what the guard saw) or a stream-form one (re-read); other
        places keep the caller's carrier."""
        if len(variant) != len(self._places):
            raise ValueError(f"variant has {len(variant)} media, the {what} {len(self._places)}")
        replaced: dict[Any, Any] = {}
        for k, (place, medium) in enumerate(zip(self._places, variant, strict=True)):
            if medium is not self.media[k] or self._reader.slots[k].form == "fetched":
                replaced[place] = self._reader.write(k, medium, str(tag))
            elif self._reader.slots[k].form == "io":
                replaced[place] = self._reader.original(k)
        return replaced

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class MessageMedia(_FoundMedia):
    """The media of a list of chat messages, and the messages rebuilt around other media.

    ``media``: one :class:`Media` per smoothed ImageBlock/AudioBlock, in message then block order.
    ``notes``: what the caller should know (remote media passed through, unsmoothed video/documents).
    Use as a context manager (or call :meth:`close`) so path-form copies are deleted.
    """

    def __init__(self, messages: Sequence[ChatMessage], config: GuardConfig, *,
                 where: Callable[[int, int], str] | None = None, fit: Fit | None = None) -> None:
        """``where(i, j)`` names block j of message i in errors and notes (default ``messages[i].blocks[j]``);
        ``fit``: the size images are decoded at (:func:`image_fit`)."""
        self.messages = list(messages)
        self._reader = _Reader(config, fit)
        self._places: list[tuple[int, int, int | None]] = []  # (message, block, index inside a citable block)
        name = where or (lambda i, j: f"messages[{i}].blocks[{j}]")
        for i, message in enumerate(self.messages):
            if not isinstance(message, ChatMessage):
                raise TypeError(f"messages[{i}] is a {type(message).__name__}, not a llama_index ChatMessage")
            for j, block in enumerate(message.blocks):
                where_ = name(i, j)
                if isinstance(block, ImageBlock | AudioBlock):
                    self._add(block, where_, (i, j, None))
                    continue
                self._check(block, where_)
                # images inside a CitableBlock (e.g. a tool's output) or a CitationBlock are smoothed too
                for k, inner in _nested(block):
                    inner_where = f"{where_}.cited_content" if k is None else f"{where_}.content[{k}]"
                    if isinstance(inner, ImageBlock | AudioBlock):
                        self._add(inner, inner_where, (i, j, k))
                    else:
                        self._check(inner, inner_where)

    def _check(self, block: Any, where: str) -> None:
        """A block that is not smoothed: text passes; media the guard cannot smooth is refused or noted; unknown
        blocks are refused (:func:`smoothguard.content_parts.unsmoothable`)."""
        if note := check_part(block_part(block), where, self._reader.config):
            self._reader.notes.append(note)

    def _add(self, block: ImageBlock | AudioBlock, where: str, place: tuple[int, int, int | None]) -> None:
        before = len(self._reader.slots)
        self._reader.add_block(block, where)
        if len(self._reader.slots) > before:
            self._places.append(place)

    def build(self, variant: Sequence[Media], tag: int | str = 0) -> list[ChatMessage]:
        """New messages with ``variant[k]`` in the k-th medium's slot; a medium that *is* the original
        Media object keeps the caller's block. ``tag`` names path-form files (the candidate index)."""
        replaced = self._replacements(variant, tag, "messages")
        out = []
        for i, message in enumerate(self.messages):
            blocks = [_rebuilt(block, i, j, replaced) for j, block in enumerate(message.blocks)]
            kwargs = {k: v for k, v in message.additional_kwargs.items() if k != "images"}
            # "images" (legacy ImageDocuments) were already turned into blocks when the message was built
            out.append(message.model_copy(update={"blocks": blocks, "additional_kwargs": kwargs}))
        return out


class DocumentMedia(_FoundMedia):
    """The media of a legacy ``image_documents`` list (ImageNode/ImageDocument/ImageBlock), rebuilt per candidate.

    Same contract as :class:`MessageMedia`; :meth:`build` returns a new list of the same carriers.
    """

    def __init__(self, documents: Sequence[Any], config: GuardConfig, *, name: str = "image_documents",
                 fit: Fit | None = None) -> None:
        self.documents = list(documents)
        self._reader = _Reader(config, fit)
        self._places: list[int] = []
        for i, doc in enumerate(self.documents):
            before = len(self._reader.slots)
            if isinstance(doc, BaseNode):
                self._reader.add_node(doc, f"{name}[{i}]")
            elif isinstance(doc, ImageBlock | AudioBlock):
                self._reader.add_block(doc, f"{name}[{i}]")
            else:
                raise TypeError(f"{name}[{i}] is a {type(doc).__name__}; pass ImageNode, ImageDocument or ImageBlock")
            if len(self._reader.slots) > before:
                self._places.append(i)

    def build(self, variant: Sequence[Media], tag: int | str = 0) -> list[Any]:
        out = list(self.documents)
        for i, carrier in self._replacements(variant, tag, "documents").items():
            out[i] = carrier
        return out


#: LlamaIndex block classes without media of their own
_TEXT_BLOCKS = ("TextBlock", "ThinkingBlock", "ToolCallBlock", "CachePoint", "CitableBlock", "CitationBlock")
_KIND_WORDS = (("image", "image"), ("audio", "audio"), ("video", "video"), ("document", "file"), ("file", "file"))


def block_part(block: Any) -> ContentPart:
    """The :class:`~smoothguard.content_parts.ContentPart` kind of a LlamaIndex content block: ImageBlock and
    AudioBlock are image/audio; VideoBlock video; DocumentBlock file; text, thinking, tool-call, cache-point and
    citation blocks text; any other class whose name says image, audio, video, document or file that kind (not
    decodable); anything else unknown."""
    name = type(block).__name__
    if isinstance(block, ImageBlock):
        return ContentPart("image", "llamaindex", name, "object")
    if isinstance(block, AudioBlock):
        return ContentPart("audio", "llamaindex", name, "object")
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
        if isinstance(doc, ImageNode):
            inline, path, url = doc.image, doc.image_path or doc.metadata.get("file_path"), doc.image_url
            mime = doc.image_mimetype
        elif getattr(doc, "image_resource", None) is not None:
            resource = doc.image_resource
            inline, path, url, mime = resource.data, resource.path, resource.url, resource.mimetype
        else:
            inline = path = url = mime = None
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


def user_message(prompt: str, media_blocks: Sequence[Any]) -> ChatMessage:
    """One user message: the media blocks first, then the prompt as a TextBlock."""
    return ChatMessage(role=MessageRole.USER, blocks=[*media_blocks, TextBlock(text=prompt)])


# -- helpers ------------------------------------------------------------------------------------------------


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


def _with_inline(carrier: Any, data: Any, media: Media) -> Any:
    if isinstance(carrier, ImageBlock):
        return carrier.model_copy(update={"image": data, "path": None, "url": None,
                                          "image_mimetype": media.mime_type})
    if isinstance(carrier, AudioBlock):
        return carrier.model_copy(update={"audio": data, "path": None, "url": None})
    if isinstance(carrier, ImageNode):
        text = data.decode("ascii") if isinstance(data, bytes) else data
        return carrier.model_copy(update={"image": text, "image_path": None, "image_url": None,
                                          "image_mimetype": media.mime_type})
    return _with_resource(carrier, data=data, path=None, url=None, mimetype=media.mime_type)


def _with_path(carrier: Any, path: Path) -> Any:
    mime = mimetypes.guess_type(path.name)[0]
    if isinstance(carrier, ImageNode):
        return carrier.model_copy(update={"image": None, "image_path": str(path), "image_url": None,
                                          "image_mimetype": mime or carrier.image_mimetype})
    if isinstance(carrier, ImageBlock):
        return carrier.model_copy(update={"path": path, "image_mimetype": mime or carrier.image_mimetype})
    if isinstance(carrier, AudioBlock):
        return carrier.model_copy(update={"path": path})
    return _with_resource(carrier, data=None, path=path, url=None, mimetype=mime)


def _with_url(carrier: Any, url: str) -> Any:
    mime = url[5:].split(";", 1)[0]
    if isinstance(carrier, ImageNode):
        return carrier.model_copy(update={"image_url": url, "image_mimetype": mime})
    if isinstance(carrier, ImageBlock):
        return carrier.model_copy(update={"url": url, "image_mimetype": mime})
    if isinstance(carrier, AudioBlock):
        return carrier.model_copy(update={"url": url})
    return _with_resource(carrier, data=None, path=None, url=AnyUrl(url), mimetype=mime)


def _with_resource(node: Any, **update: Any) -> Any:
    """A copy of ``node`` whose ``image_resource`` is updated (the node's other fields shared)."""
    return node.model_copy(update={"image_resource": node.image_resource.model_copy(update=update)})


def _describe(carrier: Any) -> str:
    if isinstance(carrier, ImageNode):
        inline, path, url = carrier.image, carrier.image_path or carrier.metadata.get("file_path"), carrier.image_url
    elif isinstance(carrier, ImageBlock | AudioBlock):
        inline = carrier.image if isinstance(carrier, ImageBlock) else carrier.audio
        path, url = carrier.path, carrier.url
    elif getattr(carrier, "image_resource", None) is not None:
        resource = carrier.image_resource
        inline, path, url = resource.data, resource.path, resource.url
    else:
        return ""
    if isinstance(inline, io.IOBase):
        return ", file-like object"
    if inline:
        return ", inline bytes"
    if path:
        return f", path={shorten(path)}"
    if url:
        return ", data: URL" if str(url).startswith("data:") else f", url={shorten(url)}"
    return ""

