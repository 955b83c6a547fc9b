"""What a content part is, written once: text, or media (and where its payload lives), or unknown.

Every codec that looks for media in a request (:mod:`smoothguard.content_codec`, which the proxy's OpenAI body
codec and the LangChain block codec share; the LlamaIndex adapter maps its typed blocks onto the same kinds) asks
:func:`classify` what each content part is, and lets :func:`unsmoothable` decide what happens to media the guard
cannot smooth. So the rule that keeps media from skipping the guard lives here, and a shape a provider reads as
media is never forwarded unguarded because one codec did not know it.

Kinds (:class:`ContentPart.kind`):

``text``
    Parts without media of their own: a plain string, ``text`` / ``input_text`` / ``output_text``, ``refusal``,
    reasoning and thinking parts, tool calls and tool results, cache markers, citations (see :data:`TEXT_TYPES`,
    :data:`NON_MEDIA_TYPES`). A container (an Anthropic ``tool_result`` ...) is text itself; the parts in its
    ``nested`` content list are classified like top-level ones.
``image`` / ``audio``
    Smoothed when the payload is inline (a data URL or base64) or an http(s) URL (per ``remote_media``); audio
    only as WAV (other formats are refused when decoded). A provider file id, a server-side reference (a vLLM
    ``uuid`` without data), an ``image_pil`` object or media wrapped in another block cannot be smoothed.
``video`` / ``file`` / ``embeds``
    Never smoothed (video, documents and files, precomputed embeddings).
``unknown``
    Anything else: a part type no supported provider documents, a part that mixes kinds, a non-dict item.
    Always refused: the guard cannot tell whether the model reads media from it (fail closed).

Media that cannot be smoothed is refused unless the operator opts into ``unsmoothable="passthrough"``
(:func:`unsmoothable`), which sends it unchanged and says so in the result's notes. Part shapes understood:

====================  ==========================================================================================
dialect               shapes
====================  ==========================================================================================
``openai``            ``image_url`` (``{"url"}`` or a string), ``input_audio`` (``{"data", "format"}``), ``file``;
                      also without ``type`` (``{"image_url": ...}``, as vLLM and OpenAI accept)
``responses``         ``input_image`` (``image_url`` data/http URL, or ``file_id``), ``input_file``,
                      ``input_audio``, ``computer_call_output`` screenshots, ``image_generation_call``
``vllm``              ``audio_url``, ``video_url``, ``image_pil``, ``image_embeds`` / ``audio_embeds`` /
                      ``video_embeds`` / ``prompt_embeds`` (typed or not); a ``uuid`` with no data
``anthropic``         ``image`` / ``document`` with ``source`` base64, url, file (document text: text),
                      ``container_upload``
``gemini``            ``inline_data`` / ``inlineData`` (mime type + base64 data), ``file_data`` / ``fileData``;
                      LangChain-Google ``{"type": "media", "mime_type", "data" | "file_uri"}``
``langchain-v0``      ``image`` / ``audio`` / ``file`` with ``source_type`` base64, url, id
``langchain-v1``      ``image`` / ``audio`` / ``video`` / ``file`` / ``text-plain`` with base64, url, file_id;
                      ``non_standard`` (its ``value`` classified; media inside cannot be smoothed)
``bedrock``           ``{"image": ...}`` / ``{"document": ...}`` / ``{"video": ...}`` (never smoothed)
====================  ==========================================================================================

Core only: nothing here imports LangChain or LlamaIndex.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from smoothguard.errors import MediaError, shorten
from smoothguard.media.audio import WAV_FORMATS

__all__ = [
    "MEDIA_KEYS",
    "NON_MEDIA_TYPES",
    "TEXT_TYPES",
    "ContentPart",
    "UnsupportedContent",
    "check_part",
    "classify",
    "get_path",
    "set_path",
    "unsmoothable",
    "unsmoothable_policy",
    "write_media",
]

Kind = Literal["text", "image", "audio", "video", "file", "embeds", "unknown"]
#: where the payload lives: ``data_url`` / ``base64`` (inline), ``url`` (http(s)), ``id`` (a provider file id, a
#: file URI or a server-side reference), ``object`` (an in-process object or an opaque structure), ``none`` (text)
Source = Literal["data_url", "base64", "url", "id", "object", "none"]
Policy = Literal["error", "passthrough"]

#: parts that are text to every provider
TEXT_TYPES = frozenset({
    "text", "input_text", "output_text", "refusal", "thinking", "redacted_thinking", "reasoning", "summary_text",
    "reasoning_text", "reasoning_content", "tool_reference", "guard_content",
})
#: parts without media of their own: tool calls and results, search results, cache markers, server tool calls.
#: Their ``content`` list, if any, is classified part by part (media inside a tool result is media).
NON_MEDIA_TYPES = frozenset({
    # Anthropic
    "tool_use", "tool_result", "server_tool_use", "mcp_tool_use", "mcp_tool_result", "search_result",
    "web_search_tool_result", "web_search_result", "web_fetch_tool_result", "code_execution_tool_result",
    "bash_code_execution_tool_result", "text_editor_code_execution_tool_result", "tool_search_tool_result",
    "cache_control",
    # LangChain v1
    "tool_call", "tool_call_chunk", "invalid_tool_call", "server_tool_call", "server_tool_call_chunk",
    "server_tool_result", "cache_point",
    # OpenAI Responses items (kept in LangChain AIMessage content)
    "function_call", "function_call_output", "custom_tool_call", "custom_tool_call_output", "web_search_call",
    "file_search_call", "code_interpreter_call", "computer_call", "local_shell_call", "local_shell_call_output",
    "shell_call", "shell_call_output", "apply_patch_call", "apply_patch_call_output", "mcp_call", "mcp_list_tools",
    "mcp_approval_request", "mcp_approval_response", "item_reference", "tool_search_call",
    # Gemini (LangChain-Google)
    "executable_code", "code_execution_result",
})
#: keys from which some server reads media whatever the part's ``type`` says (vLLM reads these from a part
#: without a type, or with a ``uuid``); a part holding one that its type does not own is refused
MEDIA_KEYS = ("image_url", "image_pil", "image_embeds", "audio_embeds", "video_embeds", "prompt_embeds", "audio_url",
              "input_audio", "video_url", "inline_data", "inlineData", "file_data", "fileData")
#: typeless parts without media (Gemini parts, Bedrock Converse blocks)
_TYPELESS_TEXT = frozenset({
    "text", "thought", "function_call", "functionCall", "function_response", "functionResponse", "executable_code",
    "executableCode", "code_execution_result", "codeExecutionResult", "toolUse", "reasoningContent", "cachePoint",
    "guardContent", "json",
})
_TYPELESS_CONTAINERS = {"toolResult": ("toolResult", "content")}
_BEDROCK_MEDIA = {"image": "image", "document": "file", "video": "video", "audio": "audio"}
#: keys a "clearly text" part of an unknown type may hold
_TEXTISH_KEYS = frozenset({"type", "text", "id", "index", "cache_control", "annotations", "citations", "signature",
                           "extras", "logprobs", "thought_signature", "name"})
_MEDIA_WORDS = ("image", "audio", "video", "file", "document", "media", "pdf", "embed", "blob", "pil", "bytes")

_ADVICE = {
    "video": "send still frames as images",
    "file": "send its pages as images (PNG) or its text as a text part",
    "embeds": "send the image or audio itself, inline, so the guard can add noise to it",
    "image": "send the image bytes inline (a base64 data URL)",
    "audio": "send the audio inline as base64 WAV",
}


@dataclass(frozen=True)
class ContentPart:
    """What one content part is (see the module docstring).

    kind: ``text``, ``image``, ``audio``, ``video``, ``file``, ``embeds`` or ``unknown``.
    dialect: whose shape it is (``openai``, ``responses``, ``vllm``, ``anthropic``, ``gemini``, ``langchain-v0``,
    ``langchain-v1``, ``bedrock``, ``llamaindex``, ``text``, ``unknown``).
    type: its ``type``, or for a part without one the key that marks it (``image_url``, ``inline_data``).
    source / value: where the payload lives (:data:`Source`) and the payload (a data URL, base64 text, URL or id).
    path: the keys that lead to the payload inside the part (``("image_url", "url")``); () when none.
    mime: the MIME type the part declares; audio_format: ``input_audio``'s ``format``.
    nested: the keys that lead to a list of nested content parts (a ``tool_result``'s ``content``).
    problem / problem_path: for media whose shape is malformed: what is wrong, and the keys it concerns.
    reason: why media cannot be smoothed (for ``unsmoothable``), when it is not the kind itself.
    """

    kind: Kind
    dialect: str
    type: str
    source: Source = "none"
    value: Any = field(default=None, repr=False)
    path: tuple[str, ...] = ()
    mime: str | None = None
    audio_format: str | None = None
    nested: tuple[str, ...] = ()
    problem: str | None = None
    problem_path: tuple[str, ...] = ()
    reason: str | None = None
    typeless: bool = False

    @property
    def is_text(self) -> bool:
        return self.kind == "text"

    @property
    def smoothable(self) -> bool:
        """Image or audio the guard can decode, add noise to and write back in kind."""
        return (self.kind in ("image", "audio") and self.problem is None and self.reason is None
                and self.source in ("data_url", "base64", "url"))

    @property
    def label(self) -> str:
        """How errors and notes name it: ``"OpenAI image_url block"``, ``"v0 image block (source_type)"``."""
        if self.dialect == "langchain-v1":
            text = f"v1 {self.type} block"
        elif self.dialect == "langchain-v0":
            text = f"v0 {self.type} block (source_type)"
        elif self.dialect == "llamaindex":
            text = self.type
        else:
            text = f"{_DIALECT_NAMES.get(self.dialect, self.dialect)} {self.type} block".replace("  ", " ")
        return text + " without a 'type'" if self.typeless else text


_DIALECT_NAMES = {"openai": "OpenAI", "responses": "OpenAI Responses", "vllm": "vLLM", "anthropic": "Anthropic",
                  "gemini": "Gemini", "bedrock": "Bedrock", "llamaindex": "LlamaIndex", "text": "text",
                  "unknown": "unknown"}


class UnsupportedContent(MediaError):
    """A content part refused: media the guard cannot smooth, a malformed media part, or an unknown part.

    place: where it is (``messages[0].content[2]``); part_type: its type; kind: what it is (``video``, ``unknown``,
    ...); code: ``"unsupported_media"``, ``"unknown_content_part"``, ``"invalid_media"`` or ``"invalid_messages"``
    (content nested too deep; the proxy's error codes); problem_path: for ``invalid_media``, the keys inside the part
    that are wrong.
    """

    def __init__(self, message: str, *, place: str, part_type: str, kind: str, code: str,
                 problem_path: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.place = place
        self.part_type = part_type
        self.kind = kind
        self.code = code
        self.problem_path = problem_path


# -- classification ----------------------------------------------------------------------------------------


def classify(part: Any) -> ContentPart:
    """What ``part`` (one item of a message's content list, or a whole string content) is. Never raises."""
    if isinstance(part, str):
        return ContentPart("text", "text", "string")
    if not isinstance(part, Mapping):
        return _unknown(type(part).__name__, f"an item of type {type(part).__name__}, not a content part (an object "
                        "with a 'type')")
    kind = part.get("type")
    if kind is None:
        return _typeless(part)
    if not isinstance(kind, str):
        return _unknown(repr(kind)[:40], f"a part whose 'type' is a {type(kind).__name__}, not a string")
    info = _typed(kind, part)
    if info.kind != "unknown":
        owned = {info.path[0]} if info.path else set()
        uuid = part.get("uuid") is not None  # with a uuid, vLLM reads media keys even when they are null
        foreign = [k for k in MEDIA_KEYS if k in part and (part[k] is not None or uuid) and k not in owned]
        if foreign:
            return _unknown(kind, f"a {kind!r} part that also holds {foreign[0]!r}, which some servers read as "
                            "media (vLLM does for a part with a 'uuid'); send one medium per part")
    return info


def _typed(kind: str, part: Mapping[str, Any]) -> ContentPart:
    if kind in TEXT_TYPES or kind in NON_MEDIA_TYPES:
        nested = ("content",) if isinstance(part.get("content"), list) else ()
        return ContentPart("text", "text", kind, nested=nested)
    if kind == "image_url":
        return _url_part("image", "openai", kind, part, "image_url")
    if kind == "audio_url":
        return _url_part("audio", "vllm", kind, part, "audio_url")
    if kind == "video_url":
        return _url_part("video", "vllm", kind, part, "video_url")
    if kind == "input_audio":
        return _input_audio(part, "openai", kind)
    if kind in ("image_embeds", "audio_embeds", "video_embeds", "prompt_embeds"):
        return ContentPart("embeds", "vllm", kind, "object", part.get(kind if kind != "prompt_embeds" else "data"),
                           path=(kind,))
    if kind == "image_pil":
        return ContentPart("image", "vllm", kind, "object", path=(kind,), reason="an in-process PIL image object")
    if kind == "input_image":
        return _input_image(part)
    if kind == "input_file":
        return _file_like("responses", kind, part, ("file_data", "file_url", "file_id"))
    if kind == "file":
        if "source_type" in part:
            return _v0(kind, part, "file")
        inner = part.get("file")
        if isinstance(inner, Mapping):
            return _file_like("openai", kind, inner, ("file_data", "file_id", "file_url"), prefix=("file",))
        return _file_like("langchain-v1", kind, part, ("base64", "url", "file_id"))
    if kind in ("image", "audio", "video"):
        if "source_type" in part:
            return _v0(kind, part, kind)
        if isinstance(part.get("source"), Mapping):
            return _anthropic(kind, part)
        return _v1(kind, part)
    if kind == "document":
        source = part.get("source")
        if isinstance(source, Mapping) and source.get("type") == "text":
            return ContentPart("text", "anthropic", kind)
        if isinstance(source, Mapping):
            return _anthropic_file(kind, source)
        return ContentPart("file", "anthropic", kind, "object")
    if kind == "text-plain":
        if not any(part.get(k) is not None for k in ("base64", "url", "file_id")):
            return ContentPart("text", "langchain-v1", kind)
        return _file_like("langchain-v1", kind, part, ("base64", "url", "file_id"))
    if kind == "container_upload":
        return ContentPart("file", "anthropic", kind, "id", part.get("file_id"), path=("file_id",))
    if kind == "media":
        return _genai_media(part)
    if kind == "non_standard":
        return _wrapped(part)
    if kind == "image_generation_call":
        return ContentPart("image", "responses", kind, "object", reason="an image the model generated, kept as an "
                           "output item")
    if kind == "computer_call_output":
        return ContentPart("image", "responses", kind, "object", reason="a computer-use screenshot output item")
    return _unknown_type(kind, part)


def _typeless(part: Mapping[str, Any]) -> ContentPart:
    """A part without ``type``: vLLM reads media keys first (in this order), Gemini and Bedrock parts by key."""
    keys = [k for k in MEDIA_KEYS if k in part and (part[k] is not None or k in ("image_url", "image_pil",
                                                                             "image_embeds", "audio_embeds",
                                                                             "prompt_embeds", "audio_url",
                                                                             "video_url"))]
    if len(keys) > 1:
        return _unknown(keys[0], f"a part without a 'type' holding both {keys[0]!r} and {keys[1]!r}; send one "
                        "medium per part, each with its 'type'")
    if keys:
        key = keys[0]
        if key in ("inline_data", "inlineData"):
            info = _gemini_inline(part, key)
        elif key in ("file_data", "fileData"):
            info = _gemini_file(part, key)
        else:
            info = _typed(key, part)
        return dataclasses.replace(info, typeless=True)
    for key, path in _TYPELESS_CONTAINERS.items():
        if isinstance(part.get(key), Mapping):
            nested = path if isinstance(part[key].get("content"), list) else ()
            return ContentPart("text", "bedrock", key, nested=nested, typeless=True)
    for key, kind in _BEDROCK_MEDIA.items():
        if key in part:
            return ContentPart(kind, "bedrock", key, "object", path=(key,),  # type: ignore[arg-type]
                               reason="a Bedrock Converse block the guard does not decode", typeless=True)
    if part and any(k in _TYPELESS_TEXT for k in part) and not _media_ish(part):
        return ContentPart("text", "text", next(k for k in part if k in _TYPELESS_TEXT), typeless=True)
    keys_shown = ", ".join(repr(k) for k in list(part)[:6]) or "none"
    return _unknown("", f"a part without a 'type' (keys: {keys_shown})")


def _unknown_type(kind: str, part: Mapping[str, Any]) -> ContentPart:
    lowered = kind.lower()
    if "text" in lowered and not any(w in lowered for w in _MEDIA_WORDS) and set(part) <= _TEXTISH_KEYS \
            and isinstance(part.get("text", ""), str):
        return ContentPart("text", "text", kind)  # clearly text: a text-like type holding only text
    if any(w in lowered for w in _MEDIA_WORDS) or _media_ish(part):
        return _unknown(kind, f"an unknown part type {kind!r} that looks like media")
    return _unknown(kind, f"an unknown part type {kind!r}")


def _unknown(kind: str, what: str) -> ContentPart:
    return ContentPart("unknown", "unknown", kind, problem=what)


def _media_ish(part: Mapping[str, Any]) -> bool:
    """Keys or values that say media: image/audio/video/file-ish keys, a MIME type, a data: URL."""
    for key, value in part.items():
        k = str(key).lower()
        if any(w in k for w in _MEDIA_WORDS) or k in ("mime_type", "mimetype", "media_type", "data", "base64",
                                                       "source", "source_type", "url", "uri", "file_uri"):
            return True
        if isinstance(value, str) and value[:5].lower() == "data:":
            return True
    return False


def _url_source(kind: str, value: Any) -> tuple[Source, str | None]:
    """(source, problem) of a URL-valued payload."""
    if not isinstance(value, str):
        return "object", f"its URL must be a string, got {type(value).__name__}"
    head = value[:8].lower()
    if head.startswith("data:"):
        return "data_url", None
    if head.startswith(("http://", "https://")):
        return "url", None
    shown = repr(value if len(value) <= 40 else value[:40] + "...")
    return "object", (f"cannot read a {kind} from {shown}: its URL must be a data: URL or an http(s) URL (only data: "
                      "and http(s) URLs are supported)")


def _url_part(kind: Kind, dialect: str, key: str, part: Mapping[str, Any], field_: str) -> ContentPart:
    """``{field_: {"url": ...}}`` or ``{field_: "..."}`` (OpenAI image_url, vLLM audio_url / video_url)."""
    inner = part.get(field_)
    empty = inner is None or (isinstance(inner, Mapping) and inner.get("url") is None)
    if empty and part.get("uuid") is not None:
        return _cached(kind, key, field_)
    if isinstance(inner, Mapping):
        url, path = inner.get("url"), (field_, "url")
    else:
        url, path = inner, (field_,)
    if url is None or url == "":
        return ContentPart(kind, dialect, key, path=path, problem=f"expected {{'{field_}': {{'url': 'data:...' or "
                           "'https://...'}}", problem_path=(field_, "url"))
    source, problem = _url_source(kind, url)
    if problem and kind in ("image", "audio"):
        return ContentPart(kind, dialect, key, source, url, path=path, problem=problem, problem_path=(field_, "url"))
    return ContentPart(kind, dialect, key, source, url, path=path)


def _cached(kind: Kind, key: str, field_: str) -> ContentPart:
    return ContentPart(kind, "vllm", key, "id", path=(field_,),
                       reason="a vLLM media 'uuid' with no data: a reference to media the server cached earlier")


def _input_audio(part: Mapping[str, Any], dialect: str, key: str) -> ContentPart:
    inner = part.get("input_audio")
    if (inner is None or (isinstance(inner, Mapping) and not inner.get("data"))) and part.get("uuid") is not None:
        return _cached("audio", key, "input_audio")
    if not isinstance(inner, Mapping) or "data" not in inner:
        return ContentPart("audio", dialect, key, path=("input_audio",), problem="expected {'input_audio': {'data': "
                           "<base64>, 'format': 'wav'}}: 'input_audio' must be an object with 'data' (base64) and "
                           "'format'", problem_path=("input_audio",))
    fmt = str(inner.get("format", "wav")).lower()
    return ContentPart("audio", dialect, key, "base64", inner["data"], path=("input_audio", "data"),
                       mime="audio/wav" if fmt in WAV_FORMATS else f"audio/{fmt}", audio_format=fmt)


def _input_image(part: Mapping[str, Any]) -> ContentPart:
    url = part.get("image_url")
    if isinstance(url, Mapping):
        url, path = url.get("url"), ("image_url", "url")
    else:
        path = ("image_url",)
    if url is not None:
        source, problem = _url_source("image", url)
        return ContentPart("image", "responses", "input_image", source, url, path=path, problem=problem,
                           problem_path=path if problem else ())
    if part.get("file_id") is not None:
        return ContentPart("image", "responses", "input_image", "id", part["file_id"], path=("file_id",),
                           reason=f"a provider file id ({shorten(part['file_id'])}) the guard cannot download")
    if part.get("uuid") is not None:
        return _cached("image", "input_image", "image_url")
    return ContentPart("image", "responses", "input_image", problem="expected {'type': 'input_image', 'image_url': "
                       "'data:...' or 'https://...'} (or a 'file_id')", problem_path=("image_url",))


def _file_like(dialect: str, kind: str, part: Mapping[str, Any], keys: tuple[str, ...],
               prefix: tuple[str, ...] = ()) -> ContentPart:
    for key in keys:
        value = part.get(key)
        if value is not None:
            source: Source = "id" if key in ("file_id", "id") else "url" if key.endswith("url") else "base64"
            if isinstance(value, str) and value[:5].lower() == "data:":
                source = "data_url"
            return ContentPart("file", dialect, kind, source, value, path=(*prefix, key),
                               mime=part.get("mime_type") if isinstance(part.get("mime_type"), str) else None)
    return ContentPart("file", dialect, kind, "object")


def _v0(kind: str, part: Mapping[str, Any], media: str) -> ContentPart:
    source_type = part.get("source_type")
    key = {"base64": "data", "url": "url", "id": "id"}.get(_name(source_type))
    mime = part.get("mime_type") if isinstance(part.get("mime_type"), str) else None
    if media not in ("image", "audio"):
        if source_type == "text" and media == "file":
            return ContentPart("text", "langchain-v0", kind)
        return ContentPart(media, "langchain-v0", kind, "object", part.get(key) if key else None,  # type: ignore[arg-type]
                           path=(key,) if key else (), mime=mime)
    if several := _several_sources(media, "langchain-v0", kind, part, ("data", "url", "id"), mime):
        return several
    if key is None or key not in part:
        return ContentPart(media, "langchain-v0", kind, mime=mime, problem=f"unsupported source_type {source_type!r} "
                           "(or its field is missing); expected 'base64' with 'data', 'url' with 'url', or 'id' with "
                           "'id'", problem_path=("source_type",))
    return _payload(media, "langchain-v0", kind, part[key], (key,), key, mime)


def _anthropic(kind: str, part: Mapping[str, Any]) -> ContentPart:
    source = part["source"]
    stype = source.get("type")
    key = {"base64": "data", "url": "url", "file": "file_id"}.get(_name(stype))
    mime = source.get("media_type") if isinstance(source.get("media_type"), str) else None
    if kind not in ("image", "audio"):
        return ContentPart(kind, "anthropic", kind, "object", mime=mime)  # type: ignore[arg-type]
    if key is None or key not in source:
        return ContentPart(kind, "anthropic", kind, mime=mime, problem=f"unsupported source type {stype!r} (or its "  # type: ignore[arg-type]
                           "field is missing); expected 'base64' with 'data', 'url' with 'url', or 'file' with "
                           "'file_id'", problem_path=("source",))
    return _payload(kind, "anthropic", kind, source[key], ("source", key), key, mime)


def _anthropic_file(kind: str, source: Mapping[str, Any]) -> ContentPart:
    key = {"base64": "data", "url": "url", "file": "file_id"}.get(_name(source.get("type")))
    value = source.get(key) if key else None
    src: Source = "id" if key == "file_id" else "url" if key == "url" else "base64" if key == "data" else "object"
    return ContentPart("file", "anthropic", kind, src, value, path=("source", key) if key else ("source",),
                       mime=source.get("media_type") if isinstance(source.get("media_type"), str) else None)


def _v1(kind: str, part: Mapping[str, Any]) -> ContentPart:
    mime = part.get("mime_type") if isinstance(part.get("mime_type"), str) else None
    if kind in ("image", "audio") and (several := _several_sources(kind, "langchain-v1", kind, part,
                                                                    ("base64", "url", "file_id"), mime)):
        return several
    for key in ("base64", "url", "file_id"):
        if part.get(key) is not None:
            if kind not in ("image", "audio"):
                src: Source = "id" if key == "file_id" else "base64" if key == "base64" else "url"
                return ContentPart(kind, "langchain-v1", kind, src, part[key], path=(key,), mime=mime)  # type: ignore[arg-type]
            return _payload(kind, "langchain-v1", kind, part[key], (key,), key, mime)
    if kind not in ("image", "audio"):
        return ContentPart(kind, "langchain-v1", kind, "object", mime=mime)  # type: ignore[arg-type]
    return ContentPart(kind, "langchain-v1", kind, mime=mime,  # type: ignore[arg-type]
                       problem="it has no 'base64', 'url' or 'file_id'", problem_path=())


def _name(value: Any) -> str | None:
    """``value`` when it is a string (a source type read from the caller's part), else None: a list or a dict there
    is a malformed part, to be refused, not a lookup error."""
    return value if isinstance(value, str) else None


def _several_sources(kind: str, dialect: str, type_: str, part: Mapping[str, Any], keys: tuple[str, ...],
                     mime: str | None) -> ContentPart | None:
    """A refusal for a part that carries its medium more than one way (``keys``: its source fields), else None:
    langchain-core's provider converters read ``url`` first, so the model could be sent another medium than the one
    the guard smooths."""
    sources = [key for key in keys if part.get(key) is not None]
    if len(sources) < 2:
        return None
    return ContentPart(kind, dialect, type_, mime=mime, problem=f"it holds both {' and '.join(map(repr, sources))}: "  # type: ignore[arg-type]
                       "a provider may send another one than the guard smooths; keep one", problem_path=())


def _payload(kind: str, dialect: str, type_: str, value: Any, path: tuple[str, ...], key: str,
             mime: str | None) -> ContentPart:
    """An image/audio payload under ``key``: base64 (``data``/``base64``), a URL (``url``) or an id."""
    if key in ("id", "file_id"):
        return ContentPart(kind, dialect, type_, "id", value, path=path, mime=mime,  # type: ignore[arg-type]
                           reason=f"a provider file id ({shorten(value)}) cannot be smoothed: SmoothGuard cannot "
                           "download it")
    if key == "url":
        source, problem = _url_source(kind, value)
        return ContentPart(kind, dialect, type_, source, value, path=path, mime=mime, problem=problem,  # type: ignore[arg-type]
                           problem_path=path if problem else ())
    if isinstance(value, str) and value[:5].lower() == "data:":
        return ContentPart(kind, dialect, type_, "data_url", value, path=path, mime=mime)  # type: ignore[arg-type]
    return ContentPart(kind, dialect, type_, "base64", value, path=path, mime=mime)  # type: ignore[arg-type]


def _mime_kind(mime: Any) -> Kind:
    head = str(mime or "").lower().split("/", 1)[0]
    return head if head in ("image", "audio", "video") else "file"  # type: ignore[return-value]


def _gemini_inline(part: Mapping[str, Any], key: str) -> ContentPart:
    inner = part.get(key)
    mime_key = "mimeType" if key == "inlineData" else "mime_type"
    if not isinstance(inner, Mapping) or inner.get("data") is None:
        return ContentPart("file", "gemini", key, problem=f"expected {{'{key}': {{'{mime_key}': ..., 'data': "
                           "<base64>}}", problem_path=(key,))
    mime = inner.get(mime_key, inner.get("mime_type", inner.get("mimeType")))
    kind = _mime_kind(mime)
    value = inner["data"]
    if isinstance(value, (bytes, bytearray)):
        return ContentPart(kind, "gemini", key, "object", path=(key, "data"), mime=mime,
                           reason="raw bytes in a Gemini part (send base64 text)")
    return ContentPart(kind, "gemini", key, "base64", value, path=(key, "data"), mime=mime if isinstance(mime, str)
                       else None)


def _gemini_file(part: Mapping[str, Any], key: str) -> ContentPart:
    inner = part.get(key)
    if not isinstance(inner, Mapping):
        return ContentPart("file", "gemini", key, "object", path=(key,))
    mime = inner.get("mimeType" if key == "fileData" else "mime_type", inner.get("mime_type", inner.get("mimeType")))
    uri = inner.get("fileUri" if key == "fileData" else "file_uri", inner.get("file_uri", inner.get("fileUri")))
    return ContentPart(_mime_kind(mime), "gemini", key, "id", uri, path=(key,),
                       mime=mime if isinstance(mime, str) else None,
                       reason=f"a file URI ({shorten(uri)}) the provider downloads itself")


def _genai_media(part: Mapping[str, Any]) -> ContentPart:
    """LangChain-Google's ``{"type": "media", "mime_type": ..., "data": <base64 or bytes> | "file_uri": ...}``."""
    mime = part.get("mime_type")
    kind = _mime_kind(mime)
    if part.get("file_uri") is not None:
        return ContentPart(kind, "gemini", "media", "id", part["file_uri"], path=("file_uri",), mime=mime,
                           reason=f"a file URI ({shorten(part['file_uri'])}) the provider downloads itself")
    value = part.get("data")
    if isinstance(value, str):
        return _payload(kind, "gemini", "media", value, ("data",), "data", mime if isinstance(mime, str) else None)
    if isinstance(value, (bytes, bytearray)):
        return ContentPart(kind, "gemini", "media", "object", path=("data",), mime=mime,
                           reason="raw bytes (send base64 text)")
    return ContentPart(kind, "gemini", "media", mime=mime, problem="expected 'data' (base64) or 'file_uri'",
                       problem_path=("data",))


def _wrapped(part: Mapping[str, Any]) -> ContentPart:
    """LangChain v1 ``non_standard``: what its ``value`` is; media inside it cannot be written back."""
    inner = classify(part.get("value")) if isinstance(part.get("value"), Mapping) else None
    if inner is None or inner.kind == "text":
        return ContentPart("text", "langchain-v1", "non_standard")
    if inner.kind == "unknown":
        return _unknown("non_standard", f"a non_standard block holding {inner.problem}")
    return ContentPart(inner.kind, "langchain-v1", "non_standard", "object", path=("value",), mime=inner.mime,
                       reason=f"{'an' if inner.kind[0] in 'aeiou' else 'a'} {inner.kind} wrapped in a non_standard "
                       "block")


# -- what happens to a part --------------------------------------------------------------------------------


def unsmoothable_policy(config: Any, part: ContentPart | None = None) -> Policy:
    """The policy for media the guard cannot smooth: ``config.unsmoothable_media`` (``"error"`` where the config
    has no such setting yet). An image or audio given by provider file id is also passed under
    ``remote_media="passthrough"`` (remote media the guard cannot download), as before this setting existed."""
    policy = getattr(config, "unsmoothable_media", "error") if config is not None else "error"
    if policy == "passthrough":
        return "passthrough"
    if part is not None and _remote_id(part) and getattr(config, "remote_media", None) == "passthrough":
        return "passthrough"
    return "error"


def _remote_id(part: ContentPart) -> bool:
    return part.kind in ("image", "audio") and part.source == "id" and part.dialect != "vllm"


def check_part(part: ContentPart, place: str, config: Any) -> str:
    """:func:`unsmoothable` under the config's policy (:func:`unsmoothable_policy`)."""
    policy = unsmoothable_policy(config, part)
    setting = "unsmoothable_media"
    if policy == "passthrough" and getattr(config, "unsmoothable_media", "error") != "passthrough":
        setting = "remote_media"
    return unsmoothable(part, place, policy, setting=setting)


def unsmoothable(part: ContentPart, place: str, policy: Policy, *, setting: str = "unsmoothable_media") -> str:
    """What to do with a part the guard does not smooth. Text and smoothable media: ``""``. Media the guard
    cannot smooth: under ``policy="passthrough"`` the note for the result's notes (``setting`` names the setting
    that allowed it); under ``"error"`` :class:`UnsupportedContent`. Unknown and malformed parts always raise
    :class:`UnsupportedContent`. ``place`` names the part (``messages[0].content[1]``).

    This is the one place the refusal and pass-through messages are written.
    """
    if part.kind == "text" or part.smoothable:
        return ""
    if part.kind == "unknown":
        raise UnsupportedContent(
            f"{place}: {part.problem or 'an unknown content part'}. The guard cannot tell whether the model reads "
            "media from it, so it refuses it rather than risk media going through unguarded (fail closed); send "
            "text as {'type': 'text', 'text': ...} parts and images as image_url parts",
            place=place, part_type=part.type, kind="unknown", code="unknown_content_part") from None
    if part.problem is not None:
        raise UnsupportedContent(f"{place} ({part.label}): {part.problem}", place=place, part_type=part.type,
                                 kind=part.kind, code="invalid_media", problem_path=part.problem_path) from None
    why = part.reason or {"video": "video is not smoothed", "file": "files and documents are not smoothed",
                          "embeds": "precomputed embeddings cannot be given noise"}.get(part.kind, "it is not inline")
    if policy == "passthrough":
        shown = f" {shorten(part.value)}" if part.source in ("id", "url") and part.value is not None else ""
        return f"{place} ({part.label}){shown} was passed through unsmoothed: {why} ({setting}='passthrough')"
    raise UnsupportedContent(
        f"{place} ({part.label}): the guard cannot smooth it ({why}) and does not let media through unguarded. "
        f"To guard it, {_ADVICE.get(part.kind, 'send it inline')}; or set unsmoothable_media='passthrough' to send "
        "it unsmoothed (the result's notes then say so)",
        place=place, part_type=part.type, kind=part.kind, code="unsupported_media") from None


# -- writing back ------------------------------------------------------------------------------------------


def get_path(part: Any, path: tuple[str, ...]) -> Any:
    """The value at ``path`` in nested mappings (None when absent)."""
    for key in path:
        if not isinstance(part, Mapping):
            return None
        part = part.get(key)
    return part


def set_path(part: Mapping[str, Any], path: tuple[str, ...], value: Any, drop: tuple[str, ...] = ()) -> dict:
    """A copy of ``part`` with ``path`` set to ``value`` (mappings on the way copied; ``drop``: keys removed from
    the innermost one)."""
    out = {k: v for k, v in part.items() if not (len(path) == 1 and k in drop)}
    if len(path) == 1:
        out[path[0]] = value
        return out
    inner = part.get(path[0])
    out[path[0]] = set_path(inner if isinstance(inner, Mapping) else {}, path[1:], value, drop)
    return out


def write_media(part: Mapping[str, Any], info: ContentPart, data: str, mime: str) -> dict[str, Any]:
    """A new part in ``info``'s dialect carrying ``data`` (base64 of the encoded media, ``mime`` its type) inline
    where the original carried its media; ``part`` is not touched. A vLLM ``uuid`` is dropped, so the server
    cannot answer every copy from the cache entry of one."""
    url = f"data:{mime};base64,{data}"
    base = {k: v for k, v in part.items() if k != "uuid"}
    dialect, path = info.dialect, info.path
    if info.type == "input_audio" or path[:1] == ("input_audio",):
        return {**base, "input_audio": {**part["input_audio"], "data": data, "format": "wav"}}
    if dialect == "anthropic":
        source = {k: v for k, v in part["source"].items() if k not in ("url", "file_id", "data")}
        return {**base, "source": {**source, "type": "base64", "media_type": mime, "data": data}}
    if dialect == "langchain-v0":
        if part.get("source_type") == "url" and info.source == "data_url":
            return {**base, "url": url, "mime_type": mime}
        new = {k: v for k, v in base.items() if k not in ("url", "id", "data")}
        return {**new, "source_type": "base64", "data": data, "mime_type": mime}
    if dialect == "langchain-v1":
        if part.get("base64") is None and info.source == "data_url":
            return {**base, "url": url, **({"mime_type": mime} if "mime_type" in part else {})}
        new = {k: v for k, v in base.items() if k not in ("url", "file_id", "base64")}
        return {**new, "base64": data, "mime_type": mime}
    if dialect == "gemini":
        if info.type == "media":
            new = {k: v for k, v in base.items() if k != "file_uri"}
            return {**new, "data": data, "mime_type": mime}
        mime_key = "mimeType" if info.type == "inlineData" else "mime_type"
        return {**base, info.type: {**part[info.type], "data": data, mime_key: mime}}
    if info.type == "input_image":
        new = {k: v for k, v in base.items() if k != "file_id"}
        return set_path(new, path if path else ("image_url",), url)
    if not path:
        raise ValueError(f"cannot write media back into a {info.label}")
    return set_path(base, path, url if info.source in ("data_url", "url") or info.type.endswith("_url") else data)

