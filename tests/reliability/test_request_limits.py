"""Bounded cost per request, the same in every path: media count, pixels per image and per request.

Each limit is tried through ``SmoothGuard.ask``, LangChain ``ChatSmoothGuard``, LlamaIndex ``SmoothGuardLLM`` and
the proxy, and must be refused before the model is called (the proxy: a 400 in OpenAI's error shape). The pixel
limits are read from the image header: a tiny PNG that claims 30000x30000 pixels is refused without allocating
its pixels.
"""

from __future__ import annotations

import base64
import io
import struct
import sys
import tracemalloc
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

_TESTS = Path(__file__).resolve().parents[1]
for _sub in ("langchain", "llamaindex", "serve"):
    if str(_TESTS / _sub) not in sys.path:
        sys.path.insert(0, str(_TESTS / _sub))

from fakes.openai_server import OpenAIStub  # noqa: E402
from langchain_core.messages import HumanMessage  # noqa: E402
from lc_fakes import FakeVLM  # noqa: E402
from llama_index.core.base.llms.types import ChatMessage, ImageBlock, MessageRole, TextBlock  # noqa: E402
from llamaindex_fakes import PixelLLM  # noqa: E402
from serve_support import ProxyServer  # noqa: E402

from smoothguard import GuardConfig, SmoothGuard  # noqa: E402
from smoothguard.errors import MediaError  # noqa: E402
from smoothguard.serve import create_app  # noqa: E402
from smoothguard_langchain import ChatSmoothGuard  # noqa: E402
from smoothguard_llamaindex import SmoothGuardLLM  # noqa: E402

LIMITS = GuardConfig(n_samples=3, seed=0, max_media_items=2, max_image_pixels=4000, max_request_pixels=6000)


def png(width: int, height: int) -> bytes:
    pixels = np.random.default_rng(width * height).integers(0, 256, (height, width, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def lying_png(width: int, height: int) -> bytes:
    """A few hundred bytes whose header claims ``width x height`` RGB pixels (a decompression bomb's shape)."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 1000))
            + chunk(b"IEND", b""))


def url(raw: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(raw).decode()


CASES = {  # name -> (images, what the error says)
    "too many media": ([png(20, 20)] * 3, "max_media_items"),
    "one image over max_image_pixels": ([png(80, 60)], "max_pixels=4000"),
    "images over max_request_pixels together": ([png(60, 51), png(60, 51)], "max_request_pixels"),
    "a header claiming 9000x9000": ([lying_png(9000, 9000)], "max_pixels=4000"),
    "a header claiming 30000x30000": ([lying_png(30000, 30000)], "too large to decode safely"),
}


def via_core(images: list[bytes]) -> None:
    calls = []

    class Backend:
        def generate(self, prompt, variants):
            calls.append(variants)
            return ["ok"] * len(variants)

    try:
        SmoothGuard(LIMITS).ask(Backend(), "What is it?", images=images)
    finally:
        assert not calls


def via_langchain(images: list[bytes]) -> None:
    inner = FakeVLM()
    guard = ChatSmoothGuard(model=inner, **{k: v for k, v in LIMITS.to_dict().items() if v is not None})
    content = [{"type": "text", "text": "What is it?"}] + [{"type": "image_url", "image_url": {"url": url(raw)}}
                                                            for raw in images]
    try:
        guard.invoke([HumanMessage(content=content)])
    finally:
        assert not inner.inputs


def via_llamaindex(images: list[bytes]) -> None:
    inner = PixelLLM()
    blocks = [TextBlock(text="What is it?")] + [ImageBlock(image=raw) for raw in images]
    try:
        SmoothGuardLLM(llm=inner, guard_config=LIMITS).chat([ChatMessage(role=MessageRole.USER, blocks=blocks)])
    finally:
        assert not inner.calls


def via_proxy(images: list[bytes]) -> None:
    content = [{"type": "text", "text": "What is it?"}] + [{"type": "image_url", "image_url": {"url": url(raw)}}
                                                            for raw in images]
    with OpenAIStub() as stub, ProxyServer(create_app(stub.base_url, LIMITS, warmup=False)) as proxy:
        response = httpx.post(f"{proxy.base_url}/chat/completions", timeout=30,
                              json={"model": "m", "messages": [{"role": "user", "content": content}]})
        assert not stub.requests
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] in ("too_many_media", "invalid_media")
    raise MediaError(error["message"])


PATHS = {"core": via_core, "langchain": via_langchain, "llamaindex": via_llamaindex, "proxy": via_proxy}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", CASES)
def test_each_limit_is_refused_before_the_model_is_called(path, case):
    images, message = CASES[case]
    with pytest.raises(MediaError, match=message):
        PATHS[path](images)


@pytest.mark.parametrize("path", ["core", "langchain", "llamaindex"])
def test_a_lying_header_is_refused_without_allocating_its_pixels(path):
    tracemalloc.start()
    try:
        with pytest.raises(MediaError):
            PATHS[path]([lying_png(9000, 9000)])  # 243 MB of uint8 RGB, 972 MB as float32
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 * 1024 * 1024


def test_the_defaults_bound_a_request():
    c = GuardConfig()
    assert (c.max_media_items, c.max_image_pixels, c.max_request_pixels) == (8, 25_000_000, 32_000_000)
    assert c.max_image_pixels >= 4032 * 3024 * 2  # two 12 MP phone photos pass, each under the per-image limit
    assert c.max_request_pixels >= 2 * 4032 * 3024
