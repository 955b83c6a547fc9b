"""Upstream behaviours the stub cannot produce (tool calls, 401s, garbage), in process: httpx.ASGITransport in front of
the app, httpx.MockTransport behind it."""

from __future__ import annotations

import json

import httpx
from serve_support import SMALL, image_message, png_url

from smoothguard.serve import create_app


def completion(message: dict, **extra) -> dict:
    return {"id": "chatcmpl-x", "object": "chat.completion", "created": 1, "model": "mock",
            "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": "tool_calls"}],
            **extra}


async def call(upstream_handler, body: dict, **options) -> httpx.Response:
    app = create_app("http://upstream.invalid/v1", SMALL, transport=httpx.MockTransport(upstream_handler),
                     warmup=False, **options)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://proxy") as client:
            return await client.post("/v1/chat/completions", json=body, headers={"authorization": "Bearer sk-abc12345"})
    finally:
        await app.state.proxy.aclose()


async def test_tool_calls_are_voted_on_and_returned():
    def upstream(request: httpx.Request) -> httpx.Response:
        args = json.dumps({"city": "Paris", "unit": "C"})
        calls = [{"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": args}}]
        return httpx.Response(200, json=completion({"content": None, "tool_calls": calls}))

    body = {"model": "m", "messages": [image_message(png_url())], "tools": [{"type": "function", "function": {
        "name": "weather", "parameters": {"type": "object"}}}], "stream": True}
    response = await call(upstream, body)
    events = [json.loads(line[6:]) for line in response.text.split("\n") if line.startswith("data: {")]
    delta = events[0]["choices"][0]["delta"]
    assert delta["tool_calls"][0]["function"]["name"] == "weather" and delta["tool_calls"][0]["index"] == 0
    assert events[1]["choices"][0]["finish_reason"] == "tool_calls"
    meta = events[1]["smoothguard"]
    assert meta["agreement"] == 1.0 and json.loads(meta["answer"]) == [
        {"name": "weather", "arguments": {"city": "Paris", "unit": "C"}}]


async def test_every_candidate_refused_with_401_is_a_401():
    def upstream(request: httpx.Request) -> httpx.Response:
        token = request.headers["authorization"]
        return httpx.Response(401, json={"error": {"message": f"Incorrect API key provided: {token}",
                                                   "type": "invalid_request_error", "code": "invalid_api_key"}})

    response = await call(upstream, {"model": "m", "messages": [image_message(png_url())]})
    error = response.json()["error"]
    assert response.status_code == 401 and error["code"] == "upstream_401"
    assert "Incorrect API key provided" in error["message"] and "sk-abc12345" not in response.text


async def test_garbage_from_the_upstream_is_a_502():
    replies = iter([httpx.Response(200, text="<html>oops</html>"), httpx.Response(200, json={"no": "choices"}),
                    httpx.Response(200, json=[1, 2])] + [httpx.Response(200, json={"choices": []})] * 2)

    response = await call(lambda request: next(replies), {"model": "m", "messages": [image_message(png_url())]})
    body = response.json()
    assert response.status_code == 502 and body["error"]["type"] == "upstream_error"
    assert {e["error"] for e in body["smoothguard"]["errors"]} >= {
        "the upstream answered with something other than a JSON object",
        "the upstream reply is not a chat completion (the upstream reply has no choices)"}


async def test_health_without_lifespan():
    app = create_app("http://upstream.invalid", SMALL, warmup=True)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://proxy") as client:
        health = await client.get("/health")
    assert health.json()["ready"] is False  # no lifespan ran, so no warm-up yet


async def test_a_missed_quorum_whose_failures_agree_has_their_status():  # the core's rule (smoothguard.fanout)
    replies = iter([httpx.Response(401, json={"error": {"message": "bad key"}})] * 3
                   + [httpx.Response(200, json=completion({"content": "A cat."}))] * 2)

    response = await call(lambda request: next(replies), {"model": "m", "messages": [image_message(png_url())]})
    body = response.json()
    assert response.status_code == 401, body
    assert "only 2 of 5 candidates were answered" in body["error"]["message"]
    assert len(body["smoothguard"]["errors"]) == 3
