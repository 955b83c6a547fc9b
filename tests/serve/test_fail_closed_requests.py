"""A guard that fails closed, item 4: what a client or an upstream gets wrong is a 4xx or a clean 502, never a 500:
malformed media URLs, lone surrogates in the text, malformed tool calls from the upstream; and a refused fetch
names no address the host name resolved to."""

from __future__ import annotations

import json

import httpx
import pytest
from serve_support import SMALL, image_message, png_url

from smoothguard.serve import create_app

PROXY_KEY = "Bearer sk-abc12345"


def completion(message: dict) -> dict:
    return {"id": "chatcmpl-x", "object": "chat.completion", "created": 1, "model": "mock",
            "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": "stop"}]}


def answering(message: dict, seen: list | None = None):
    def upstream(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(json.loads(request.content))
        return httpx.Response(200, json=completion(message))

    return upstream


async def send(upstream, body: dict | bytes, config=SMALL, **options) -> httpx.Response:
    app = create_app("http://upstream.invalid/v1", config, transport=httpx.MockTransport(upstream), warmup=False,
                     **options)
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://proxy") as client:
            response = await client.post("/v1/chat/completions", content=content,
                                         headers={"authorization": PROXY_KEY, "content-type": "application/json"})
    finally:
        await app.state.proxy.aclose()
    assert "Traceback" not in response.text and response.status_code != 500, response.text
    return response


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999/x.png", "http://[::1/x.png", "http://[::1]:99999/x.png",
                                 "http://example.com:port/x.png", "https://[not-an-address]/x.png"])
@pytest.mark.parametrize("remote_media", ["fetch", "passthrough"])
async def test_a_malformed_media_url_is_a_400(url, remote_media):
    seen: list = []
    response = await send(answering({"content": "A cat."}, seen), {"model": "m", "messages": [image_message(url)]},
                          SMALL.replace(remote_media=remote_media))
    error = response.json()["error"]
    assert response.status_code == 400 and error["type"] == "invalid_request_error", error
    assert error["code"] == "invalid_media" and error["param"].startswith("messages[0].content[1]")
    assert "URL" in error["message"] and seen == []


async def test_a_refused_fetch_names_no_resolved_address():
    response = await send(answering({"content": "A cat."}), {"model": "m", "messages": [
        image_message("http://localhost:9/cat.png")]})
    error = response.json()["error"]
    assert response.status_code == 400 and error["code"] == "media_fetch_failed"
    assert "non-public" in error["message"] and "localhost" in error["message"]
    for address in ("127.0.0.1", "::1", "127.0.1.1"):
        assert address not in response.text


LONE = b'"caption \\ud800 here"'
PAIR = b'"smile \\ud83d\\ude00"'


@pytest.mark.parametrize("where", ["text-only", "guarded", "with-override", "key", "low-surrogate"])
async def test_a_lone_surrogate_is_a_400_invalid_text(where):
    image = json.dumps(image_message(png_url())).encode()
    bodies = {
        "text-only": b'{"model": "m", "messages": [{"role": "user", "content": ' + LONE + b"}]}",
        "guarded": b'{"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": ' + LONE
                   + b'}, ' + json.dumps(image_message(png_url())["content"][1]).encode() + b"]}]}",
        "with-override": b'{"model": "m", "smoothguard": {"sigma": 0.2}, "messages": [{"role": "user", '
                         b'"content": ' + LONE + b"}]}",
        "key": b'{"model": "m", "metadata": {"\\udc80": 1}, "messages": [' + image + b"]}",
        "low-surrogate": b'{"model": "m", "messages": [{"role": "user", "content": "\\uDFFF"}]}',
    }
    seen: list = []
    response = await send(answering({"content": "A cat."}, seen), bodies[where])
    error = response.json()["error"]
    assert response.status_code == 400 and error["code"] == "invalid_text", error
    assert error["message"].startswith("invalid text") and seen == []


async def test_a_surrogate_pair_is_fine():
    seen: list = []
    body = (b'{"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": ' + PAIR + b"}, "
            + json.dumps(image_message(png_url())["content"][1]).encode() + b"]}]}")
    response = await send(answering({"content": "A cat."}, seen), body)
    assert response.status_code == 200 and len(seen) == 5
    assert seen[0]["messages"][0]["content"][0]["text"] == "smile \U0001f600"


BAD_TOOL_CALLS = [[1, 2], "weather()", {"name": "weather"}, [{"type": "function", "function": "weather"}],
                  [{"type": "function", "function": {"name": ["weather"], "arguments": "{}"}}]]


@pytest.mark.parametrize("calls", BAD_TOOL_CALLS, ids=range(len(BAD_TOOL_CALLS)))
@pytest.mark.parametrize("stream", [True, False])
async def test_malformed_tool_calls_from_the_upstream_are_a_clean_502(calls, stream):
    body = {"model": "m", "stream": stream, "messages": [image_message(png_url())],
            "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]}
    response = await send(answering({"content": None, "tool_calls": calls}), body)
    error = response.json()["error"]
    assert response.status_code == 502 and error["code"] == "upstream_bad_response", error
    assert error["type"] == "upstream_error" and "tool_calls" in error["message"]


async def test_well_formed_tool_calls_still_stream():
    calls = [{"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}]
    body = {"model": "m", "stream": True, "messages": [image_message(png_url())]}
    response = await send(answering({"content": None, "tool_calls": calls}), body)
    events = [json.loads(line[6:]) for line in response.text.split("\n") if line.startswith("data: {")]
    assert response.status_code == 200 and events[0]["choices"][0]["delta"]["tool_calls"][0]["index"] == 0


async def test_a_lone_surrogate_from_the_upstream_is_relayed_escaped_not_a_500():
    def upstream(request: httpx.Request) -> httpx.Response:
        raw = b'{"choices": [{"index": 0, "message": {"role": "assistant", "content": "A cat \\ud800."}}]}'
        return httpx.Response(200, content=raw, headers={"content-type": "application/json"})

    for stream in (False, True):
        response = await send(upstream, {"model": "m", "stream": stream, "messages": [image_message(png_url())]})
        assert response.status_code == 200 and "A cat \\ud800." in response.text  # valid (ASCII) JSON
