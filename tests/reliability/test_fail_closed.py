"""A guard that fails closed: no content part a provider reads as media skips the guard.

Every hostile part shape goes through the three front doors: the proxy (``create_app`` in process, an ASGI client
in front, a recording upstream behind), LangChain's ``ChatSmoothGuard`` around the recording ``FakeVLM``, and
LlamaIndex's ``SmoothGuardLLM`` around the recording ``PixelLLM`` (its typed blocks). Each is either

* guarded: ``n_samples`` calls, every copy of the medium different, noise metadata in the result; or
* refused: the proxy answers 400 in the OpenAI error shape naming the part, the adapters raise ``MediaError``
  naming it, and the model is never called

and never forwarded as one unguarded call carrying the original bytes. Media the guard cannot smooth go through
(one call, said in the notes) only under ``unsmoothable_media="passthrough"``.

Also here: the media downloaders against a decompression bomb (``media.download``, ``media.fetch``), SSRF refusals
that name the host but not the address it resolved to, and malformed URLs (a port out of range, a broken IPv6
literal) refused as ``MediaError`` / 400, never a ``ValueError`` or a 500.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import io
import json
import sys
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

_TESTS = Path(__file__).resolve().parents[1]
for _sub in ("langchain", "llamaindex", "serve"):
    if str(_TESTS / _sub) not in sys.path:
        sys.path.insert(0, str(_TESTS / _sub))

from langchain_core.messages import HumanMessage  # noqa: E402
from lc_fakes import FakeVLM  # noqa: E402
from llama_index.core.base.llms.types import (  # noqa: E402
    AudioBlock,
    ChatMessage,
    CitableBlock,
    DocumentBlock,
    ImageBlock,
    MessageRole,
    TextBlock,
    VideoBlock,
)
from llamaindex_fakes import PixelLLM  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from smoothguard import GuardConfig, Media  # noqa: E402
from smoothguard.content_parts import classify, get_path  # noqa: E402
from smoothguard.errors import ConfigError, MediaError  # noqa: E402
from smoothguard.media import download, fetch  # noqa: E402
from smoothguard.serve import create_app  # noqa: E402
from smoothguard.serve.codec import find_media as proxy_find_media  # noqa: E402
from smoothguard_langchain import ChatSmoothGuard  # noqa: E402
from smoothguard_llamaindex import SmoothGuardLLM  # noqa: E402

N = 3
CONFIG = GuardConfig(n_samples=N, seed=0, allow_private_fetch=True)  # the media server is on 127.0.0.1
ANSWER = "A fine picture."


def _png(level: int = 200, size: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), level, dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


PNG = _png()
PNG_B64 = base64.b64encode(PNG).decode()
PNG_URL = f"data:image/png;base64,{PNG_B64}"
t = np.arange(800) / 8000
WAV = Media.audio((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sample_rate=8000).to_wav_bytes()
WAV_B64 = base64.b64encode(WAV).decode()
PDF_B64 = base64.b64encode(b"%PDF-1.1\n%%EOF\n").decode()


def passthrough(config: GuardConfig) -> GuardConfig:
    """``config`` with ``unsmoothable_media="passthrough"``: the GuardConfig field once it exists, until then the
    attribute set on the instance (the codecs read it with getattr)."""
    if "unsmoothable_media" in {f.name for f in dataclasses.fields(GuardConfig)}:
        return config.replace(unsmoothable_media="passthrough")
    config = dataclasses.replace(config)
    object.__setattr__(config, "unsmoothable_media", "passthrough")
    return config


# -- a local media server -----------------------------------------------------------------------------------


class _Media(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = {"/cat.png": PNG, "/clip.wav": WAV}.get(self.path)
        self.send_response(200 if body else 404)
        self.send_header("Content-Type", "image/png" if self.path.endswith(".png") else "audio/wav")
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def _serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def media_server() -> Iterator[str]:
    with _serve(_Media) as url:
        yield url


# -- the part shapes ------------------------------------------------------------------------------------------

G, R = "guarded", "refused"


@dataclass(frozen=True)
class Case:
    """One content part: how to build it (given the media server's URL, and the path: "proxy" or "langchain"),
    what each path must do with it, the words a refusal must contain, and where the medium sits in the part
    (for reading back the copies each call carried)."""

    id: str
    build: Callable[[str, str], Any]
    proxy: str | None
    langchain: str | None
    words: str = ""
    nested: tuple[Any, ...] = ()  # path (keys/indices) from the part to the medium's own part


def _const(part: Any) -> Callable[[str, str], Any]:
    return lambda server, path: part


CASES = [
    # OpenAI chat, with and without "type"
    Case("image_url", _const({"type": "image_url", "image_url": {"url": PNG_URL, "detail": "low"}}), G, G),
    Case("image_url-typeless", _const({"image_url": {"url": PNG_URL}}), G, G),
    Case("image_url-typeless-http", lambda s, p: {"image_url": f"{s}/cat.png"}, G, G),
    Case("image_url-bad-port", _const({"image_url": "http://127.0.0.1:99999/x.png"}), R, R, "URL"),
    Case("image_url-bad-ipv6", _const({"image_url": {"url": "http://[::1/x.png"}}), R, R, "URL"),
    Case("input_audio", _const({"type": "input_audio", "input_audio": {"data": WAV_B64, "format": "wav"}}), G, G),
    Case("input_audio-typeless", _const({"input_audio": {"data": WAV_B64, "format": "wav"}}), G, G),
    Case("input_audio-mp3", _const({"type": "input_audio", "input_audio": {"data": "SUQz", "format": "mp3"}}), R, R,
         "WAV"),
    Case("file", _const({"type": "file", "file": {"file_data": f"data:application/pdf;base64,{PDF_B64}",
                                                  "filename": "a.pdf"}}), R, R, "file"),
    # OpenAI Responses
    Case("input_image-data", _const({"type": "input_image", "image_url": PNG_URL, "detail": "auto"}), G, G),
    Case("input_image-http", lambda s, p: {"type": "input_image", "image_url": f"{s}/cat.png"}, G, G),
    Case("input_image-file_id", _const({"type": "input_image", "file_id": "file-abc123"}), R, R, "input_image"),
    Case("input_file", _const({"type": "input_file", "file_data": f"data:application/pdf;base64,{PDF_B64}"}), R, R,
         "input_file"),
    Case("computer_call_output", _const({"type": "computer_call_output", "call_id": "c1", "output": {
        "type": "computer_screenshot", "image_url": PNG_URL}}), R, R, "computer_call_output"),
    # vLLM
    Case("audio_url", _const({"type": "audio_url", "audio_url": {"url": f"data:audio/wav;base64,{WAV_B64}"}}), G, G),
    Case("audio_url-typeless-http", lambda s, p: {"audio_url": f"{s}/clip.wav"}, G, G),
    Case("video_url", _const({"type": "video_url", "video_url": {"url": "https://example.com/v.mp4"}}), R, R, "video"),
    Case("video_url-typeless", _const({"video_url": "https://example.com/v.mp4"}), R, R, "video"),
    Case("image_embeds", _const({"type": "image_embeds", "image_embeds": "AAAA"}), R, R, "image_embeds"),
    Case("image_embeds-typeless", _const({"image_embeds": {"image_embeds": "AAAA"}}), R, R, "image_embeds"),
    Case("audio_embeds", _const({"type": "audio_embeds", "audio_embeds": "AAAA"}), R, R, "audio_embeds"),
    Case("prompt_embeds", _const({"type": "prompt_embeds", "data": "AAAA"}), R, R, "prompt_embeds"),
    Case("image_pil", lambda s, p: {"type": "image_pil", "image_pil": Image.open(io.BytesIO(PNG))
                                    if p == "langchain" else "<PIL.Image>"}, R, R, "image_pil"),
    Case("uuid-reference", _const({"type": "image_url", "image_url": None, "uuid": "img-1"}), R, R, "uuid"),
    Case("text-smuggling-image", _const({"type": "text", "text": "hi", "uuid": "u1", "image_url": PNG_URL}), R, R,
         "image_url"),
    # Anthropic
    Case("anthropic-image", _const({"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                "data": PNG_B64}}), G, G),
    Case("anthropic-image-url", lambda s, p: {"type": "image", "source": {"type": "url", "url": f"{s}/cat.png"}}, G, G),
    Case("anthropic-image-file", _const({"type": "image", "source": {"type": "file", "file_id": "file_01"}}), R, R,
         "file id"),
    Case("anthropic-document", _const({"type": "document", "source": {"type": "base64", "media_type":
                                                                      "application/pdf", "data": PDF_B64}}), R, R,
         "document"),
    Case("anthropic-document-url", _const({"type": "document", "source": {"type": "url", "url":
                                                                          "https://example.com/a.pdf"}}), R, R,
         "document"),
    Case("container_upload", _const({"type": "container_upload", "file_id": "file_02"}), R, R, "container_upload"),
    Case("tool_result-nested-image", _const({"type": "tool_result", "tool_use_id": "t1", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}}]}), R, G,
         "nested", ("content", 0)),
    # Gemini
    Case("inline_data", _const({"inline_data": {"mime_type": "image/png", "data": PNG_B64}}), G, G),
    Case("inlineData", _const({"inlineData": {"mimeType": "image/png", "data": PNG_B64}}), G, G),
    Case("inline_data-video", _const({"inline_data": {"mime_type": "video/mp4", "data": "AAAA"}}), R, R, "video"),
    Case("file_data", _const({"file_data": {"mime_type": "video/mp4", "file_uri": "gs://b/v.mp4"}}), R, R,
         "file_data"),
    Case("media", _const({"type": "media", "mime_type": "image/png", "data": PNG_B64}), G, G),
    Case("media-file_uri", _const({"type": "media", "mime_type": "application/pdf", "file_uri": "gs://b/a.pdf"}), R,
         R, "media"),
    # LangChain v1 / v0
    Case("v1-image", _const({"type": "image", "base64": PNG_B64, "mime_type": "image/png"}), G, G),
    Case("v1-image-http", lambda s, p: {"type": "image", "url": f"{s}/cat.png"}, G, G),
    Case("v1-image-file_id", _const({"type": "image", "file_id": "file-xyz"}), R, R, "file id"),
    Case("v1-audio", _const({"type": "audio", "base64": WAV_B64, "mime_type": "audio/wav"}), G, G),
    Case("v1-video", _const({"type": "video", "url": "https://example.com/v.mp4"}), R, R, "video"),
    Case("v1-file", _const({"type": "file", "base64": PDF_B64, "mime_type": "application/pdf"}), R, R, "file"),
    Case("v0-image", _const({"type": "image", "source_type": "base64", "data": PNG_B64, "mime_type": "image/png"}),
         G, G),
    Case("v0-file", _const({"type": "file", "source_type": "base64", "data": PDF_B64,
                            "mime_type": "application/pdf"}), R, R, "file"),
    Case("non_standard-image", _const({"type": "non_standard", "value": {"type": "image_url", "image_url": PNG_URL}}),
         R, R, "non_standard"),
    # Bedrock Converse, unknown parts
    Case("bedrock-image", _const({"image": {"format": "png", "source": {"bytes": PNG_B64}}}), R, R, "image"),
    Case("unknown-type", _const({"type": "hologram", "payload": "x"}), R, R, "hologram"),
    Case("unknown-type-media-ish", _const({"type": "x_picture", "data": PNG_B64, "mime_type": "image/png"}), R, R,
         "x_picture"),
    Case("unknown-typeless", _const({"blob": PNG_B64}), R, R, "blob"),
    Case("not-an-object", _const(5), R, None, "int"),
]
PROXY_CASES = [pytest.param(c, id=c.id) for c in CASES if c.proxy]
LANGCHAIN_CASES = [pytest.param(c, id=c.id) for c in CASES if c.langchain]


def _payload(part: Any, nested: tuple[Any, ...]) -> Any:
    """The medium a (rebuilt) part carries: its payload, as the shared classifier locates it."""
    for key in nested:
        part = part[key]
    info = classify(part)
    assert info.kind in ("image", "audio"), part
    return info.value


# -- the proxy ------------------------------------------------------------------------------------------------


async def _proxy(part: Any, config: GuardConfig = CONFIG) -> tuple[httpx.Response, list[dict]]:
    sent: list[dict] = []

    def upstream(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(200, json={"id": "c", "object": "chat.completion", "created": 1, "model": "m",
                                         "choices": [{"index": 0, "finish_reason": "stop",
                                                      "message": {"role": "assistant", "content": ANSWER}}]})

    app = create_app("http://upstream.invalid/v1", config, transport=httpx.MockTransport(upstream), warmup=False,
                     allow_private_fetch=True)
    body = {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "What is it?"},
                                                                     part]}]}
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://proxy") as client:
            response = await client.post("/v1/chat/completions", content=json.dumps(body, default=str),
                                         headers={"content-type": "application/json"})
    finally:
        await app.state.proxy.aclose()
    return response, sent


@pytest.mark.parametrize("case", PROXY_CASES)
async def test_proxy(case: Case, media_server: str) -> None:
    part = case.build(media_server, "proxy")
    response, sent = await _proxy(part)
    if case.proxy == R:
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert set(error) >= {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
        assert error["param"].startswith("messages[0].content[1]") and "messages[0].content[1]" in error["message"]
        assert case.words.lower() in error["message"].lower(), error["message"]
        assert sent == []  # never forwarded, not even once
        return
    assert response.status_code == 200, response.text
    meta = response.json()["smoothguard"]
    assert meta["n_used"] == N and len(sent) == N and len(meta["noise"]) == 1
    copies = [_payload(body["messages"][0]["content"][1], case.nested) for body in sent]
    assert len(set(copies)) == N  # every copy has its own noise (candidate 0 the original, inlined if fetched)
    assert all("uuid" not in body["messages"][0]["content"][1] for body in sent[1:])
    typed = isinstance(part, dict) and "type" in part
    assert all(("type" in body["messages"][0]["content"][1]) == typed for body in sent)  # written back in kind


@pytest.mark.parametrize("part", [
    {"type": "video_url", "video_url": {"url": "https://example.com/v.mp4"}},
    {"type": "input_file", "file_id": "file-1"},
    {"image_embeds": "AAAA"},
])
def test_proxy_codec_passthrough_policy(part: dict) -> None:
    body = {"messages": [{"role": "user", "content": [part, {"type": "image_url", "image_url": {"url": PNG_URL}}]}]}
    found = proxy_find_media(body, passthrough(CONFIG))
    assert [s.block for s in found] == [1]
    assert len(found.notes) == 1 and "messages[0].content[0]" in found.notes[0]
    assert "passed through unsmoothed" in found.notes[0] and "unsmoothable_media='passthrough'" in found.notes[0]
    with pytest.raises(Exception, match="unsmoothable_media='passthrough'"):
        proxy_find_media(body, CONFIG)
    with pytest.raises(Exception, match="unknown part type"):  # unknown parts: refused whatever the policy
        proxy_find_media({"messages": [{"role": "user", "content": [{"type": "hologram"}]}]}, passthrough(CONFIG))


async def test_proxy_passthrough_policy_end_to_end() -> None:
    response, sent = await _proxy({"type": "video_url", "video_url": {"url": "https://example.com/v.mp4"}},
                                  passthrough(CONFIG))
    assert response.status_code == 200 and len(sent) == 1


# -- LangChain ------------------------------------------------------------------------------------------------


def _lc_invoke(part: Any, guard: ChatSmoothGuard, inner: FakeVLM) -> Any:
    return guard.invoke([HumanMessage(content=[{"type": "text", "text": "What is it?"}, part])])


@pytest.mark.parametrize("case", LANGCHAIN_CASES)
def test_langchain(case: Case, media_server: str) -> None:
    part = case.build(media_server, "langchain")
    inner = FakeVLM(answer_fn=lambda messages: ANSWER)
    guard = ChatSmoothGuard(model=inner, n_samples=N, seed=0, allow_private_fetch=True)
    if case.langchain == R:
        with pytest.raises(MediaError) as info:
            _lc_invoke(part, guard, inner)
        assert "messages[0].content[1]" in str(info.value)
        assert case.words.lower() in str(info.value).lower(), str(info.value)
        assert inner.inputs == []  # the model was never called
        return
    reply = _lc_invoke(part, guard, inner)
    meta = reply.response_metadata["smoothguard"]
    assert reply.content == ANSWER and meta["n_used"] == N and len(inner.inputs) == N and len(meta["noise"]) == 1
    copies = [_payload(messages[-1].content[1], case.nested) for messages in inner.inputs]
    assert len(set(map(str, copies))) == N
    # candidate 0: the caller's medium (langchain-core may have normalised an OpenAI block to a v1 one first); a
    # fetched one goes inline, so the model sees what the guard saw rather than fetching the URL itself
    original = _payload(part, case.nested)
    if isinstance(original, str) and original.startswith(("http://", "https://")):
        assert original not in str(copies[0]) and len(str(copies[0])) > 200  # the image's bytes, inline
    else:
        assert copies[0] == original
    typed = "type" in part
    assert all(("type" in m[-1].content[1]) == typed for m in inner.inputs)  # written back in kind


@pytest.fixture
def lc_passthrough(monkeypatch: pytest.MonkeyPatch) -> Callable[[FakeVLM], ChatSmoothGuard]:
    """A ChatSmoothGuard under unsmoothable_media='passthrough' (its setting once it exists)."""

    def make(inner: FakeVLM) -> ChatSmoothGuard:
        try:
            return ChatSmoothGuard(model=inner, n_samples=N, seed=0, unsmoothable_media="passthrough")
        except ConfigError:
            config = passthrough(CONFIG)
            monkeypatch.setattr(ChatSmoothGuard, "guard_config", property(lambda self: config))
            return ChatSmoothGuard(model=inner, n_samples=N, seed=0)

    return make


@pytest.mark.parametrize("part", [
    {"type": "video", "url": "https://example.com/v.mp4"},
    {"type": "file", "base64": PDF_B64, "mime_type": "application/pdf"},
    {"type": "input_image", "file_id": "file-abc123"},
])
def test_langchain_passthrough_policy(part: dict, lc_passthrough: Callable[[FakeVLM], ChatSmoothGuard]) -> None:
    inner = FakeVLM(answer_fn=lambda messages: ANSWER)
    reply = _lc_invoke(part, lc_passthrough(inner), inner)
    meta = reply.response_metadata["smoothguard"]
    assert len(inner.inputs) == 1 and meta["passthrough"]
    assert any("messages[0].content[1]" in n and "passed through unsmoothed" in n for n in meta["notes"])
    inner = FakeVLM(answer_fn=lambda messages: ANSWER)
    with pytest.raises(MediaError, match="unknown part type"):  # unknown blocks: refused whatever the policy
        _lc_invoke({"type": "hologram"}, lc_passthrough(inner), inner)
    assert inner.inputs == []


@pytest.mark.parametrize(("value", "words"), [
    (PNG_URL, "data: URL"),
    (PNG, "PNG image"),
    (PNG_B64, "base64 text of a PNG image"),
    ("https://example.com/cat.png", "URL of a media file"),
    ([{"type": "input_image", "image_url": PNG_URL}], "content blocks"),
])
def test_langchain_runnable_refuses_media_outside_messages_and_media_keys(value: Any, words: str) -> None:
    from langchain_core.prompts import ChatPromptTemplate

    from smoothguard_langchain import SmoothGuardRunnable

    inner = FakeVLM(answer_fn=lambda messages: ANSWER)
    # a text slot: the variable of a template's image or audio slot is smoothed without media_keys (issue 18)
    prompt = ChatPromptTemplate.from_messages([("user", [{"type": "text", "text": "{image}"}])])
    guarded = SmoothGuardRunnable(bound=prompt | inner, n_samples=N, seed=0)
    with pytest.raises(MediaError, match=r"input\['image'\]") as info:
        guarded.invoke({"image": value})
    assert words in str(info.value) and "media_keys" in str(info.value) and inner.inputs == []
    plain = SmoothGuardRunnable(bound=inner, n_samples=N, seed=0)
    assert plain.invoke("just a question about https://example.com/page").content == ANSWER  # text stays text


# -- LlamaIndex -----------------------------------------------------------------------------------------------


class ScreenshotImageBlock(BaseModel):
    """A block class LlamaIndex does not define, whose name says it holds an image."""

    block_type: str = "screenshot"
    data: bytes = PNG


class MysteryBlock(BaseModel):
    block_type: str = "mystery"


def _li_message(block: Any) -> ChatMessage:
    message = ChatMessage(role=MessageRole.USER, blocks=[TextBlock(text="What is it?")])
    message.blocks.append(block)  # unvalidated: a block class outside LlamaIndex's union gets in this way
    return message


LI_CASES = [
    pytest.param(lambda s: ImageBlock(image=PNG), G, "", id="ImageBlock-bytes"),
    pytest.param(lambda s: ImageBlock(url=f"{s}/cat.png"), G, "", id="ImageBlock-http"),
    pytest.param(lambda s: AudioBlock(audio=WAV, format="wav"), G, "", id="AudioBlock"),
    pytest.param(lambda s: VideoBlock(url="https://example.com/v.mp4"), R, "VideoBlock", id="VideoBlock"),
    pytest.param(lambda s: DocumentBlock(data=base64.b64decode(PDF_B64), document_mimetype="application/pdf"), R,
                 "DocumentBlock", id="DocumentBlock"),
    pytest.param(lambda s: CitableBlock(content=[DocumentBlock(data=b"%PDF-1.1")], source="s", title="t"), R,
                 "DocumentBlock", id="CitableBlock-document"),
    pytest.param(lambda s: ScreenshotImageBlock(), R, "ScreenshotImageBlock", id="unknown-image-class"),
    pytest.param(lambda s: MysteryBlock(), R, "MysteryBlock", id="unknown-class"),
]


@pytest.mark.parametrize(("build", "expect", "words"), LI_CASES)
def test_llamaindex(build: Callable[[str], Any], expect: str, words: str, media_server: str) -> None:
    inner = PixelLLM()
    llm = SmoothGuardLLM(llm=inner, guard_config=CONFIG)
    message = _li_message(build(media_server))
    if expect == R:
        with pytest.raises(MediaError) as info:
            llm.chat([message])
        assert "messages[0].blocks[1]" in str(info.value) and words in str(info.value)
        assert inner.calls == []
        return
    response = llm.chat([message])
    meta = response.additional_kwargs["smoothguard"]
    assert meta["n_used"] == N and len(inner.calls) == N and len(meta["noise"]) == 1
    sent = [call["blocks"][0] for call in inner.calls]
    raw = [(b.resolve_image() if isinstance(b, ImageBlock) else b.resolve_audio()).read() for b in sent]
    assert len(set(raw)) == N


@pytest.mark.parametrize("block", [VideoBlock(url="https://example.com/v.mp4"),
                                   DocumentBlock(data=b"%PDF-1.1", document_mimetype="application/pdf")])
def test_llamaindex_passthrough_policy(block: Any) -> None:
    inner = PixelLLM()
    response = SmoothGuardLLM(llm=inner, guard_config=passthrough(CONFIG)).chat([_li_message(block)])
    meta = response.additional_kwargs["smoothguard"]
    assert len(inner.calls) == 1 and meta["passthrough"]
    assert any("messages[0].blocks[1]" in n and "passed through unsmoothed" in n for n in meta["notes"])
    with pytest.raises(MediaError, match="MysteryBlock"):
        SmoothGuardLLM(llm=PixelLLM(), guard_config=passthrough(CONFIG)).chat([_li_message(MysteryBlock())])


# -- decompression bombs --------------------------------------------------------------------------------------

LIMIT = 1024 * 1024  # max_media_bytes for the bomb tests
BOMB_SIZE = 64 * 1024 * 1024


def _bomb(kind: str) -> bytes:
    """64 MiB of zeros, compressed (about 64 KiB with gzip); built in pieces so the test never holds 64 MiB."""
    if kind == "zstd":
        zstd = pytest.importorskip("zstandard")
        compressor = zstd.ZstdCompressor().compressobj()
        chunk = bytes(1024 * 1024)
        return b"".join(compressor.compress(chunk) for _ in range(BOMB_SIZE // len(chunk))) + compressor.flush()
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS if kind == "gzip" else zlib.MAX_WBITS)
    chunk = bytes(1024 * 1024)
    return b"".join(z.compress(chunk) for _ in range(BOMB_SIZE // len(chunk))) + z.flush()


@pytest.fixture(scope="module")
def bomb_server() -> Iterator[tuple[str, list[str]]]:
    bombs = {kind: _bomb(kind) for kind in ("gzip", "deflate")}
    asked: list[str] = []

    class Bombs(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.headers.get("Accept-Encoding", ""))
            kind = self.path.strip("/").split(".")[0]
            if kind == "zstd":
                bombs.setdefault("zstd", _bomb("zstd"))
            body = bombs[kind]
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Encoding", kind)  # compressed although identity was asked for
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    with _serve(Bombs) as url:
        yield url, asked


def _peak(run: Callable[[], Any]) -> tuple[BaseException | None, int]:
    """(what ``run`` raised, the peak of traced memory while it ran)."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        run()
        error: BaseException | None = None
    except BaseException as exc:  # returned to the test
        error = exc
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return error, peak


@pytest.mark.parametrize("kind", ["gzip", "deflate", "zstd"])
def test_download_stops_a_decompression_bomb(kind: str, bomb_server: tuple[str, list[str]]) -> None:
    """The one downloader (the proxy's, through ``download``): the limit named as the caller's setting."""
    server, asked = bomb_server
    if kind == "zstd":
        _bomb("zstd")  # skips without zstandard
    error, peak = _peak(lambda: download(f"{server}/{kind}.png", timeout=30, max_bytes=LIMIT, allow_private=True,
                                         limit_name="max_media_bytes"))
    assert isinstance(error, MediaError), error
    assert peak < 3 * LIMIT, f"peak {peak} bytes"
    assert (f"max_media_bytes={LIMIT}" in str(error)) if kind != "zstd" else "Content-Encoding" in str(error)
    assert asked[-1] == "identity"


@pytest.mark.parametrize("kind", ["gzip", "deflate", "zstd"])
def test_media_fetch_stops_a_decompression_bomb(kind: str, bomb_server: tuple[str, list[str]]) -> None:
    server, asked = bomb_server
    if kind == "zstd":
        _bomb("zstd")
    error, peak = _peak(lambda: fetch(f"{server}/{kind}.png", "image", timeout=30, max_bytes=LIMIT, allow_private=True))
    assert isinstance(error, MediaError), error
    assert peak < 3 * LIMIT, f"peak {peak} bytes"
    assert (f"max_bytes={LIMIT}" in str(error)) if kind != "zstd" else "Content-Encoding" in str(error)
    assert asked[-1] == "identity"


def test_a_compressed_small_image_is_still_read() -> None:
    """A server that gzips a real image anyway: decoded (within the limit), not refused."""
    body = zlib.compress(PNG)

    class Deflated(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Encoding", "deflate")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    with _serve(Deflated) as server:
        assert fetch(f"{server}/a.png", "image", max_bytes=LIMIT, allow_private=True).width == 16
        assert download(f"{server}/a.png", max_bytes=LIMIT, allow_private=True).body == PNG


# -- SSRF refusals and malformed URLs -------------------------------------------------------------------------


def test_ssrf_refusal_names_the_host_not_the_address(media_server: str) -> None:
    port = media_server.rsplit(":", 1)[1]

    with pytest.raises(MediaError) as info:
        download(f"http://localhost:{port}/cat.png", timeout=10, max_bytes=LIMIT)
    message = str(info.value)
    assert "'localhost'" in message and "non-public address" in message
    assert "127.0.0.1" not in message and "::1" not in message


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999/x.png", "http://[::1/x.png", "http://[::1]:70000/x.png",
                                 "http://:80/x.png"])
def test_malformed_urls_are_media_errors(url: str) -> None:
    with pytest.raises(MediaError, match="URL"):
        fetch(url, "image", timeout=5)


def test_payload_helper_reads_nested_parts() -> None:
    part = {"type": "tool_result", "content": [{"type": "image_url", "image_url": PNG_URL}]}
    assert _payload(part, ("content", 0)) == PNG_URL and get_path(part, ("content",)) == part["content"]


# -- SSRF in the adapters' downloader: private addresses refused by default, the checked address pinned ---------


def test_the_adapters_refuse_private_addresses_by_default(media_server: str) -> None:
    url = f"{media_server}/cat.png"
    inner = FakeVLM(answer_fn=lambda messages: ANSWER)
    with pytest.raises(MediaError, match="non-public address") as info:
        ChatSmoothGuard(model=inner, n_samples=N, seed=0).invoke(
            [HumanMessage(content=[{"type": "text", "text": "What?"}, {"type": "image_url", "image_url": url}])])
    assert inner.inputs == [] and "allow_private_fetch" in str(info.value)
    pixel = PixelLLM()
    with pytest.raises(MediaError, match="non-public address"):
        SmoothGuardLLM(llm=pixel, n_samples=N, seed=0).chat([_li_message(ImageBlock(url=url))])
    assert pixel.calls == []


def test_fetch_connects_to_the_address_it_checked(media_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A name is resolved once per hop, checked, and the connection goes to that address: a second resolution
    (where DNS rebinding would answer differently) never happens."""
    import socket

    port = int(media_server.rsplit(":", 1)[1])
    real = socket.getaddrinfo
    answers = iter(["127.0.0.1", "203.0.113.9"])  # the second answer would be another host: it must not be asked

    def rebinding(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "rebind.test":
            return real(next(answers), *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    assert fetch(f"http://rebind.test:{port}/cat.png", "image", timeout=10, allow_private=True).width == 16
    assert next(answers) == "203.0.113.9"  # resolved exactly once
    answers = iter(["127.0.0.1"])
    with pytest.raises(MediaError, match=r"'rebind\.test' resolves to a non-public address") as info:
        fetch(f"http://rebind.test:{port}/cat.png", "image", timeout=10)
    assert "127.0.0.1" not in str(info.value)


def test_the_proxy_connects_to_the_address_it_checked(media_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The proxy fetches with the same downloader: one resolution per hop, and the connection goes there."""
    import socket

    port = int(media_server.rsplit(":", 1)[1])
    real = socket.getaddrinfo
    asked: list[str] = []

    def rebinding(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "rebind.test":
            asked.append(host)
            return real("127.0.0.1" if len(asked) == 1 else "203.0.113.9", *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    part = {"type": "image_url", "image_url": {"url": f"http://rebind.test:{port}/cat.png"}}
    response, sent = asyncio.run(_proxy(part))
    assert response.status_code == 200, response.text
    assert asked == ["rebind.test"] and len(sent) == N


def test_download_has_one_deadline_even_for_a_trickling_server() -> None:
    """A server that sends a byte every 50 ms never trips a per-read timeout; the download still ends at its
    deadline, with a clear error."""

    class Trickle(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            with contextlib.suppress(OSError):
                for _ in range(200):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.05)

        def log_message(self, *args: Any) -> None:
            pass

    with _serve(Trickle) as server:
        start = time.monotonic()
        with pytest.raises(MediaError, match=r"within 0\.5 s"):
            download(f"{server}/slow.png", timeout=0.5, allow_private=True)
        assert time.monotonic() - start < 1.5
