"""The remote-media policy, the same through LangChain, LlamaIndex and the proxy (one rule: ``limits.remote`` and
``limits.fetch`` in the adapters, the same downloader in the proxy).

For an image given as an http(s) URL on a local server:

* ``remote_media="error"``: refused before the model is called;
* ``"passthrough"``: the URL reaches the model unchanged, and the result's notes say it was not smoothed;
* ``"fetch"`` (the default) with the default ``allow_private_fetch=False``: the server is on 127.0.0.1, so the
  fetch is refused before the model is called, naming the host and never its address;
* ``"fetch"`` with ``allow_private_fetch=True``: fetched, and every call carries an inline copy, never the URL.
"""

from __future__ import annotations

import base64
import io
import sys
import threading
from collections.abc import Iterator
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

from fakes.openai_server import OpenAIStub  # noqa: E402
from langchain_core.messages import HumanMessage  # noqa: E402
from lc_fakes import FakeVLM  # noqa: E402
from llama_index.core.base.llms.types import ChatMessage, ImageBlock, MessageRole, TextBlock  # noqa: E402
from llamaindex_fakes import PixelLLM  # noqa: E402
from serve_support import ProxyServer  # noqa: E402

from smoothguard import GuardConfig  # noqa: E402
from smoothguard.errors import MediaError  # noqa: E402
from smoothguard.serve import create_app  # noqa: E402
from smoothguard_langchain import ChatSmoothGuard  # noqa: E402
from smoothguard_llamaindex import SmoothGuardLLM  # noqa: E402

N = 3


def _png() -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.full((24, 32, 3), 200, np.uint8)).save(out, "PNG")
    return out.getvalue()


PNG = _png()


class _Images(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(PNG)))
        self.end_headers()
        self.wfile.write(PNG)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def image_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_address[1]}/cat.png"
    finally:
        server.shutdown()
        server.server_close()


# Each path answers one request with the image at ``url`` and returns (what each call carried: "url" or
# "inline", the result's notes), or raises MediaError when the request was refused (the model never called).


def via_langchain(url: str, config: GuardConfig) -> tuple[list[str], list[str]]:
    inner = FakeVLM()
    guard = ChatSmoothGuard(model=inner, **{k: v for k, v in config.to_dict().items() if v is not None})
    content = [{"type": "text", "text": "What is it?"}, {"type": "image_url", "image_url": {"url": url}}]
    try:
        reply = guard.invoke([HumanMessage(content=content)])
    except MediaError:
        assert not inner.inputs
        raise
    carried = []
    for messages in inner.inputs:
        part = messages[-1].content[1]
        carried.append("url" if part["image_url"]["url"] == url else "inline")
    return carried, reply.response_metadata["smoothguard"]["notes"]


def via_llamaindex(url: str, config: GuardConfig) -> tuple[list[str], list[str]]:
    inner = PixelLLM()
    blocks = [TextBlock(text="What is it?"), ImageBlock(url=url)]
    try:
        response = SmoothGuardLLM(llm=inner, guard_config=config).chat([ChatMessage(role=MessageRole.USER,
                                                                                       blocks=blocks)])
    except MediaError:
        assert not inner.calls
        raise
    carried = ["url" if call["forms"] == ["url"] else "inline" for call in inner.calls]
    return carried, response.additional_kwargs["smoothguard"]["notes"]


def via_proxy(url: str, config: GuardConfig) -> tuple[list[str], list[str]]:
    content = [{"type": "text", "text": "What is it?"}, {"type": "image_url", "image_url": {"url": url}}]
    with OpenAIStub() as stub, ProxyServer(create_app(stub.base_url, config, warmup=False)) as proxy:
        response = httpx.post(f"{proxy.base_url}/chat/completions", timeout=30,
                              json={"model": "m", "messages": [{"role": "user", "content": content}]})
        requests = list(stub.requests)
    if response.status_code == 400:
        assert not requests
        raise MediaError(response.json()["error"]["message"])
    assert response.status_code == 200, response.text
    carried = []
    for request in requests:
        part = request.body["messages"][0]["content"][1]
        carried.append("url" if part["image_url"]["url"] == url else "inline")
    return carried, response.json()["smoothguard"]["notes"]


PATHS = {"langchain": via_langchain, "llamaindex": via_llamaindex, "proxy": via_proxy}


@pytest.mark.parametrize("path", PATHS)
def test_remote_media_error_refuses_before_the_model(path: str, image_url: str) -> None:
    with pytest.raises(MediaError, match="remote"):
        PATHS[path](image_url, GuardConfig(n_samples=N, seed=0, remote_media="error"))


@pytest.mark.parametrize("path", PATHS)
def test_remote_media_passthrough_sends_the_url_and_says_so(path: str, image_url: str) -> None:
    carried, notes = PATHS[path](image_url, GuardConfig(n_samples=N, seed=0, remote_media="passthrough"))
    assert carried and set(carried) == {"url"}
    assert any("passthrough" in note for note in notes), notes


@pytest.mark.parametrize("path", PATHS)
def test_private_addresses_are_refused_by_default(path: str, image_url: str) -> None:
    with pytest.raises(MediaError, match="non-public address") as info:
        PATHS[path](image_url, GuardConfig(n_samples=N, seed=0))
    assert "'localhost'" in str(info.value) and "127.0.0.1" not in str(info.value)


@pytest.mark.parametrize("path", PATHS)
def test_fetched_media_go_out_inline_in_every_call(path: str, image_url: str) -> None:
    carried, _ = PATHS[path](image_url, GuardConfig(n_samples=N, seed=0, allow_private_fetch=True))
    assert carried == ["inline"] * N


def test_every_adapter_decodes_an_upload_at_the_models_size() -> None:
    """LangChain and LlamaIndex decode a large JPEG straight to the size the wrapped model looks at (OpenAI's rule
    for these models), keeping the size sent; the proxy does the same (tests/core/test_image_resize.py)."""
    from smoothguard_langchain.blocks import find_media, image_fit
    from smoothguard_llamaindex.blocks import MessageMedia
    from smoothguard_llamaindex.blocks import image_fit as li_image_fit

    out = io.BytesIO()
    Image.fromarray(np.full((1500, 2000, 3), 120, np.uint8)).save(out, "JPEG")
    raw = out.getvalue()
    config = GuardConfig(n_samples=N, seed=0)
    url = "data:image/jpeg;base64," + base64.b64encode(raw).decode()
    content = [{"type": "text", "text": "What is it?"}, {"type": "image_url", "image_url": {"url": url}}]
    langchain = find_media([HumanMessage(content=content)], config, fit=image_fit(config, FakeVLM())).media[0]
    message = ChatMessage(role=MessageRole.USER, blocks=[TextBlock(text="What is it?"), ImageBlock(image=raw)])
    llamaindex = MessageMedia([message], config, fit=li_image_fit(config, PixelLLM())).media[0]
    for media in (langchain, llamaindex):
        assert (media.width, media.height) == (1024, 768) and media.source_size == (2000, 1500)
