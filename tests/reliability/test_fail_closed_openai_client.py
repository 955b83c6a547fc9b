"""The hostile part shapes of ``test_fail_closed.py`` sent to a running ``smoothguard serve`` through the official
``openai`` client, as a client application would: each is guarded (N upstream calls, the vote in the response)
or refused with ``openai.BadRequestError``, and a refused one never reaches the upstream."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import openai
import pytest

_TESTS = Path(__file__).resolve().parents[1]
if str(_TESTS / "serve") not in sys.path:
    sys.path.insert(0, str(_TESTS / "serve"))

import test_fail_closed as shapes  # noqa: E402
from fakes.openai_server import OpenAIStub  # noqa: E402
from serve_support import ProxyServer  # noqa: E402

from smoothguard.serve import create_app  # noqa: E402


@pytest.fixture(scope="module")
def media_url() -> Any:
    with shapes._serve(shapes._Media) as url:
        yield url


@pytest.fixture(scope="module")
def proxy() -> Any:
    with OpenAIStub() as stub, ProxyServer(create_app(stub.base_url, shapes.CONFIG, warmup=False,
                                                      allow_private_fetch=True)) as server:
        yield server, stub


@pytest.mark.parametrize("case", shapes.PROXY_CASES)
def test_official_client(case: shapes.Case, proxy: Any, media_url: str) -> None:
    server, stub = proxy
    client = openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)
    part = case.build(media_url, "proxy")
    before = len(stub.requests)
    messages = [{"role": "user", "content": [{"type": "text", "text": "What is it?"}, part]}]
    if case.proxy == shapes.R:
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(model="m", messages=messages)  # type: ignore[arg-type]
        assert "messages[0].content[1]" in str(info.value) and case.words.lower() in str(info.value).lower()
        assert len(stub.requests) == before  # never forwarded, not even once
        return
    completion = client.chat.completions.create(model="m", messages=messages)  # type: ignore[arg-type]
    meta = completion.model_extra["smoothguard"]
    assert meta["n_used"] == shapes.N and len(stub.requests) - before == shapes.N and len(meta["noise"]) == 1
