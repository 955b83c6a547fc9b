"""Partial failure: k of N candidates raise, time out, or answer nothing / no text.

While a quorum (a majority of the N) is answered the guard answers, recording each failure; below it,
``GenerationError`` lists every cause (the proxy: an OpenAI-style 5xx error with every candidate's error). Checked
in the core (sync and async), ChatSmoothGuard, SmoothGuardLLM and the proxy.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading

import httpx
import numpy as np
import pytest
from langchain_core.messages import AIMessage, HumanMessage
from llama_index.core.base.llms.types import ChatMessage, ChatResponse, ImageBlock, MessageRole, TextBlock
from reliability_support import MediaChat, MediaLLM, describe

from smoothguard import GuardConfig, Media, SmoothGuard
from smoothguard.errors import GenerationError, SmoothGuardError
from smoothguard_langchain import ChatSmoothGuard
from smoothguard_llamaindex import SmoothGuardLLM

N = 5
QUORUM = N // 2 + 1
IMAGE = Media.image(np.random.default_rng(0).integers(40, 200, (16, 16, 3), dtype=np.uint8))
ANSWER = describe(IMAGE)
PNG = IMAGE.to_png_bytes()

#: failure kind -> (what the model gives, text expected in the recorded cause)
CORE_FAILURES = {
    "raises": (lambda i: RuntimeError(f"model broke on {i}"), "RuntimeError: model broke"),
    "times out": (lambda i: TimeoutError(f"no answer within 30 s ({i})"), "TimeoutError: no answer"),
    "empty": (lambda i: "", "empty answer"),
    "blank": (lambda i: " \n\t", "empty answer"),
    "None": (lambda i: None, "returned NoneType"),
    "bytes": (lambda i: b"bytes", "returned bytes"),
    "dict": (lambda i: {"text": "hi"}, "returned dict"),
}
KS = range(N + 1)


def _outcome(k: int) -> str:
    return "answer" if N - k >= QUORUM else "GenerationError"


def _check_result(result, k: int, cause: str) -> None:
    assert result.answer == ANSWER and result.n_used == N and not result.passthrough
    errors = [s.error for s in result.samples if s.error]
    assert len(errors) == k and all(cause in e for e in errors), errors


def _check_error(exc: GenerationError, k: int, cause: str) -> None:
    assert isinstance(exc, SmoothGuardError) and len(exc.causes) == k
    assert f"only {N - k} of {N} candidates were answered" in str(exc)
    assert cause in str(exc)  # the causes are listed in the message
    assert set(exc.answers.values()) <= {ANSWER} and len(exc.answers) == N - k


# -- core ----------------------------------------------------------------------------------------------------


def _core_generate(k: int, fail):
    def generate(variants):
        return [fail(i) if i < k else describe(v[0]) for i, v in enumerate(variants)]

    return generate


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("kind", CORE_FAILURES)
def test_core_sync(kind: str, k: int) -> None:
    fail, cause = CORE_FAILURES[kind]
    guard = SmoothGuard(n_samples=N, seed=0)
    if _outcome(k) == "answer":
        _check_result(guard.run([IMAGE], _core_generate(k, fail)), k, cause)
    else:
        with pytest.raises(GenerationError) as info:
            guard.run([IMAGE], _core_generate(k, fail))
        _check_error(info.value, k, cause)


@pytest.mark.parametrize("k", [QUORUM - 1, QUORUM])
@pytest.mark.parametrize("kind", CORE_FAILURES)
async def test_core_async(kind: str, k: int) -> None:
    fail, cause = CORE_FAILURES[kind]
    sync = _core_generate(k, fail)

    async def agenerate(variants):
        await asyncio.sleep(0)
        return sync(variants)

    guard = SmoothGuard(n_samples=N, seed=0)
    if _outcome(k) == "answer":
        _check_result(await guard.arun([IMAGE], agenerate), k, cause)
    else:
        with pytest.raises(GenerationError) as info:
            await guard.arun([IMAGE], agenerate)
        _check_error(info.value, k, cause)


def test_core_whole_call_failing_and_mixed_causes() -> None:
    guard = SmoothGuard(n_samples=N, seed=0)

    def broken(variants):
        raise ConnectionError("the model server is down")

    with pytest.raises(GenerationError) as info:
        guard.run([IMAGE], broken)
    assert len(info.value.causes) == N and "ConnectionError: the model server is down" in str(info.value)

    mixed = [RuntimeError("boom"), TimeoutError("slow"), "", None, ANSWER]
    with pytest.raises(GenerationError) as info:
        guard.run([IMAGE], lambda variants: mixed)
    text = str(info.value)
    assert [i for i, _ in info.value.causes] == [0, 1, 2, 3]
    for part in ("RuntimeError: boom", "TimeoutError: slow", "empty answer", "returned NoneType"):
        assert part in text

    with pytest.raises(GenerationError, match="returned 2 answers for 5 variants"):
        guard.run([IMAGE], lambda variants: [ANSWER, ANSWER])  # a miscount is every candidate's failure


def test_core_quorum_setting() -> None:
    fail, cause = CORE_FAILURES["raises"]
    guard = SmoothGuard(n_samples=N, seed=0, quorum=2)
    _check_result(guard.run([IMAGE], _core_generate(3, fail)), 3, cause)
    with pytest.raises(GenerationError):
        guard.run([IMAGE], _core_generate(4, fail))


# -- adapters: the first k inner calls fail ----------------------------------------------------------------


def _first_k(k: int, failure):
    def script(number: int, media: Media | None):
        return failure(number) if number < k else describe(media)

    return script


LC_FAILURES = {
    "raises": (lambda i: RuntimeError(f"provider error {i}"), "RuntimeError: provider error"),
    "times out": (lambda i: TimeoutError("Request timed out."), "TimeoutError: Request timed out."),
    "empty": (lambda i: "", "empty answer"),
    "non-text": (lambda i: AIMessage(content=[{"type": "image", "base64": "AAAA", "mime_type": "image/png"}]),
                 "empty answer"),
}


def _lc_messages() -> list:
    block = {"type": "image", "base64": base64.b64encode(PNG).decode(), "mime_type": "image/png"}
    return [HumanMessage(content=[{"type": "text", "text": "What is this?"}, block])]


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("kind", LC_FAILURES)
def test_chat_smoothguard(kind: str, k: int) -> None:
    failure, cause = LC_FAILURES[kind]
    inner = MediaChat(script=_first_k(k, failure))
    guard = ChatSmoothGuard(model=inner, n_samples=N, seed=0)
    if _outcome(k) == "answer":
        reply = guard.invoke(_lc_messages())
        meta = reply.response_metadata["smoothguard"]
        assert reply.content == ANSWER and meta["n_used"] == N
        errors = [s["error"] for s in meta["samples"] if s["error"]]
        assert len(errors) == k and all(cause in e for e in errors)
    else:
        with pytest.raises(GenerationError) as info:
            guard.invoke(_lc_messages())
        _check_error(info.value, k, cause)
    assert inner.calls == N


@pytest.mark.parametrize("k", [QUORUM - 1, QUORUM])
@pytest.mark.parametrize("kind", LC_FAILURES)
async def test_chat_smoothguard_async(kind: str, k: int) -> None:
    failure, cause = LC_FAILURES[kind]
    guard = ChatSmoothGuard(model=MediaChat(script=_first_k(k, failure)), n_samples=N, seed=0)
    if k < QUORUM:
        reply = await guard.ainvoke(_lc_messages())
        assert reply.content == ANSWER
    else:
        with pytest.raises(GenerationError) as info:
            await guard.ainvoke(_lc_messages())
        _check_error(info.value, k, cause)


LI_FAILURES = {
    "raises": (lambda i: RuntimeError(f"provider error {i}"), "RuntimeError: provider error"),
    "times out": (lambda i: TimeoutError("Request timed out."), "TimeoutError: Request timed out."),
    "empty": (lambda i: "", "empty answer"),
    "no content": (lambda i: ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=None)),
                   "empty answer"),
    "non-text": (lambda i: ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT,
                                                            blocks=[ImageBlock(image=PNG)])), "empty answer"),
}


def _li_messages() -> list[ChatMessage]:
    return [ChatMessage(role=MessageRole.USER, blocks=[TextBlock(text="What is this?"), ImageBlock(image=PNG)])]


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("kind", LI_FAILURES)
def test_smoothguard_llm(kind: str, k: int) -> None:
    failure, cause = LI_FAILURES[kind]
    inner = MediaLLM(script=_first_k(k, failure))
    llm = SmoothGuardLLM(llm=inner, n_samples=N, seed=0)
    if _outcome(k) == "answer":
        reply = llm.chat(_li_messages())
        meta = reply.additional_kwargs["smoothguard"]
        assert reply.message.content == ANSWER and meta["n_used"] == N
        errors = [s["error"] for s in meta["samples"] if s["error"]]
        assert len(errors) == k and all(cause in e for e in errors)
    else:
        with pytest.raises(GenerationError) as info:
            llm.chat(_li_messages())
        _check_error(info.value, k, cause)
    assert inner.calls == N


@pytest.mark.parametrize("k", [QUORUM - 1, QUORUM])
@pytest.mark.parametrize("kind", LI_FAILURES)
async def test_smoothguard_llm_async(kind: str, k: int) -> None:
    failure, cause = LI_FAILURES[kind]
    llm = SmoothGuardLLM(llm=MediaLLM(script=_first_k(k, failure)), n_samples=N, seed=0)
    if k < QUORUM:
        reply = await llm.achat(_li_messages())
        assert reply.message.content == ANSWER
    else:
        with pytest.raises(GenerationError) as info:
            await llm.achat(_li_messages())
        _check_error(info.value, k, cause)


# -- the proxy: the first k upstream calls fail ------------------------------------------------------------------

TIMEOUT_S = 0.3


def _completion(content) -> httpx.Response:
    return httpx.Response(200, json={"id": "c", "object": "chat.completion", "created": 0, "model": "m",
                                     "choices": [{"index": 0, "finish_reason": "stop",
                                                  "message": {"role": "assistant", "content": content}}]})


async def _slow(request: httpx.Request) -> httpx.Response:
    await asyncio.sleep(10 * TIMEOUT_S)
    return _completion(ANSWER)


PROXY_FAILURES = {
    "HTTP 500": (lambda r: httpx.Response(500, json={"error": {"message": "GPU fell over"}}),
                 "upstream HTTP 500: GPU fell over", 502, "upstream_500"),
    "times out": (_slow, "did not answer within", 504, "upstream_timeout"),
    "empty": (lambda r: _completion(""), "empty answer", 502, "upstream_failed"),
    "non-text": (lambda r: _completion([{"type": "image_url", "image_url": {"url": "x"}}]), "empty answer", 502,
                 "upstream_failed"),
    "null content": (lambda r: _completion(None), "empty answer", 502, "upstream_failed"),
    "not JSON": (lambda r: httpx.Response(200, content=b"<html>oops</html>"), "other than a JSON object", 502,
                 "upstream_bad_response"),
    "no choices": (lambda r: httpx.Response(200, json={"choices": []}), "not a chat completion", 502,
                   "upstream_bad_response"),
}


def _upstream(k: int, failure) -> httpx.MockTransport:
    lock = threading.Lock()
    count = [0]

    async def handler(request: httpx.Request) -> httpx.Response:
        with lock:
            number = count[0]
            count[0] += 1
        if number < k:
            out = failure(request)
            return await out if asyncio.iscoroutine(out) else out
        return _completion(ANSWER)

    return httpx.MockTransport(handler)


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("kind", PROXY_FAILURES)
async def test_proxy(kind: str, k: int) -> None:
    from smoothguard.serve import create_app

    failure, cause, status, code = PROXY_FAILURES[kind]
    app = create_app("http://upstream/v1", GuardConfig(n_samples=N, seed=0), transport=_upstream(k, failure),
                     upstream_timeout=TIMEOUT_S, warmup=False)
    url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    body = {"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": url}}]}]}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://proxy") as client:
        response = await client.post("/v1/chat/completions", json=body)
    data = response.json()
    if _outcome(k) == "answer":
        assert response.status_code == 200, data
        assert data["choices"][0]["message"]["content"] == ANSWER
        errors = [s["error"] for s in data["smoothguard"]["samples"] if s["error"]]
        assert len(errors) == k and all(cause in e for e in errors), errors
    else:
        expected = (status, code)  # failures all alike: their status, however many answered (smoothguard.fanout)
        assert (response.status_code, data["error"]["code"]) == expected, data
        errors = data["smoothguard"]["errors"]
        assert len(errors) == k and all(cause in e["error"] for e in errors), json.dumps(errors)
