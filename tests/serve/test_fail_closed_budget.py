"""A guard that fails closed, item 6: ``time_budget`` covers the whole request, the proxy's own decoding, noise and
encoding included: no new work starts after the deadline, and a budget spent before any candidate could be sent
is a 504 ``time_budget_exceeded``."""

from __future__ import annotations

import json
import os
import time

import httpx
from serve_support import image_message, png_url

import smoothguard.serve.app as app_module
from smoothguard import GuardConfig
from smoothguard.serve import create_app

BUDGET = 1.0
MARGIN = 1.5  # generous: a slow, shared 2-core machine
SLACK = 0.2  # the request arrives a moment after the test starts its clock


def completion(text: str = "A gradient.") -> dict:
    return {"id": "chatcmpl-x", "object": "chat.completion", "created": 1, "model": "mock",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}


async def timed(config: GuardConfig, body: dict, calls: list | None = None) -> tuple[httpx.Response, float]:
    def upstream(request: httpx.Request) -> httpx.Response:
        if calls is not None:
            calls.append(time.monotonic())
        return httpx.Response(200, json=completion())

    app = create_app("http://upstream.invalid/v1", config, transport=httpx.MockTransport(upstream), warmup=False)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://proxy",
                                     timeout=60) as client:
            start = time.monotonic()
            response = await client.post("/v1/chat/completions", content=json.dumps(body).encode(),
                                         headers={"content-type": "application/json"})
            return response, time.monotonic() - start
    finally:
        await app.state.proxy.aclose()


def assert_budget_answer(response: httpx.Response) -> None:
    assert response.status_code in (200, 504), response.text
    if response.status_code == 504:
        error = response.json()["error"]
        assert error["code"] == "time_budget_exceeded" and "time budget" in error["message"]


async def test_a_large_image_answers_within_the_budget():
    """4000x4000 at its source size: noise and PNG encoding of 4 copies took 4.7 s here with a 1 s budget."""
    config = GuardConfig(n_samples=5, image_resize="none", time_budget=BUDGET)
    response, elapsed = await timed(config, {"model": "m", "messages": [image_message(png_url(0.5, size=4000))]})
    assert elapsed < BUDGET + MARGIN, elapsed
    assert_budget_answer(response)


async def test_no_decoding_starts_after_the_deadline(monkeypatch):
    started: list[float] = []
    decode = app_module.decode_slot

    def slow_decode(*args, **kwargs):
        started.append(time.monotonic())
        time.sleep(0.8)
        return decode(*args, **kwargs)

    monkeypatch.setattr(app_module, "decode_slot", slow_decode)
    calls: list[float] = []
    message = image_message(png_url())
    message["content"] += [message["content"][1]] * 4  # five images: 4 s of decoding
    config = GuardConfig(n_samples=5, time_budget=BUDGET)
    begin = time.monotonic()
    response, elapsed = await timed(config, {"model": "m", "messages": [message]}, calls)
    assert response.status_code == 504 and response.json()["error"]["code"] == "time_budget_exceeded"
    assert "before any candidate" in response.json()["error"]["message"]
    assert elapsed < BUDGET + MARGIN and calls == []
    assert 1 <= len(started) <= 2 and all(t < begin + BUDGET + SLACK for t in started)


async def test_no_encoding_starts_after_the_deadline(monkeypatch):
    started: list[float] = []
    build = app_module.candidate_body

    def slow_build(*args, **kwargs):
        started.append(time.monotonic())
        time.sleep(0.8)
        return build(*args, **kwargs)

    monkeypatch.setattr(app_module, "candidate_body", slow_build)
    calls: list[float] = []
    config = GuardConfig(n_samples=5, time_budget=BUDGET)
    begin = time.monotonic()
    response, elapsed = await timed(config, {"model": "m", "messages": [image_message(png_url())]}, calls)
    assert elapsed < BUDGET + MARGIN, elapsed  # 5 x 0.8 s of encoding before
    assert response.status_code == 504 and response.json()["error"]["code"] == "time_budget_exceeded"
    encoders = min(5, os.cpu_count() or 1)  # the core fan-out encodes on every core (smoothguard.fanout)
    assert all(t < begin + BUDGET + SLACK for t in started) and 1 <= len(started) <= 2 * encoders
    assert len(calls) <= len(started)  # each candidate went out as soon as it was encoded, none after


async def test_a_budget_that_fits_is_unchanged():
    config = GuardConfig(n_samples=5, time_budget=30.0)
    response, _ = await timed(config, {"model": "m", "messages": [image_message(png_url())]})
    assert response.status_code == 200 and response.json()["smoothguard"]["n_used"] == 5
