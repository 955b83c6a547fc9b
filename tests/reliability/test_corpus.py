"""The malformed-media corpus through every entry point: ``Media``, ChatSmoothGuard, SmoothGuardLLM and the proxy.

Each case must end, within a second, in the documented error (``MediaError``; HTTP 400 ``invalid_media`` from the
proxy, or the case's ``proxy_code``), saying the case's ``reason`` when it gives one, without the model being
called, or, for valid media, in a guarded answer (every candidate asked). Any other exception, a hang or an
unguarded answer fails the test. The caller's input is never changed. ``Media`` decodes images under the guard's
limits (``CONFIG``), as the adapters do. A case with a ``media_bug`` is an expected failure (strict) through
``Media``. The terminal summary says how many inputs each path tried and how many it handled cleanly (its test
passed).
"""

from __future__ import annotations

import base64
import copy
import json
import time
from collections import Counter

import httpx
import numpy as np
import pytest
from langchain_core.messages import HumanMessage
from llama_index.core.base.llms.types import AudioBlock, ChatMessage, ImageBlock, MessageRole, TextBlock
from pydantic import ValidationError
from reliability_corpus import CASES, Case, wire_expect, wire_form
from reliability_support import MediaChat, MediaLLM, stub_answer

from smoothguard import GuardConfig, Media
from smoothguard.errors import MediaError
from smoothguard_langchain import ChatSmoothGuard
from smoothguard_llamaindex import SmoothGuardLLM

N = 3
CONFIG = GuardConfig(n_samples=N, seed=0)
LIMIT_S = 1.0
TRIED: Counter[str] = Counter()
CLEAN: Counter[str] = Counter()


@pytest.fixture(scope="module", autouse=True)
def _totals(figures):
    """At the end of the module: how many inputs each path tried and handled cleanly (its test passed)."""
    yield
    if TRIED:
        cells = ", ".join(f"{layer} {CLEAN[layer]}/{TRIED[layer]}" for layer in TRIED)
        figures(f"malformed-media corpus: {len(CASES)} inputs ({sum(c.expect == 'ok' for c in CASES)} valid); "
                f"handled cleanly per path: {cells}")


def _tried(layer: str) -> None:
    TRIED[layer] += 1


def _refused(case: Case, message: str) -> None:
    assert case.reason in message, f"{case.name}: the refusal does not say {case.reason!r}: {message}"


def _b64(raw: bytes | str) -> str:
    return base64.b64encode(raw if isinstance(raw, bytes) else raw.encode()).decode("ascii")


def _timed(call):
    start = time.perf_counter()
    try:
        return call(), None, time.perf_counter() - start
    except Exception as exc:  # judged by the caller
        return None, exc, time.perf_counter() - start


def _outcome(error: Exception | None, meta: dict | None) -> str:
    if isinstance(error, MediaError):
        return "MediaError"
    return f"ok guarded {meta['n_used']}/{N}" if meta else "FAIL"


def _judge(record, case: Case, layer: str, outcome: str, error: Exception | None, seconds: float) -> None:
    """Record the outcome, then fail on another exception, a slow case or the wrong outcome."""
    record(case, layer, outcome, seconds)
    if error is not None and not isinstance(error, MediaError):
        raise AssertionError(f"{case.name} via {layer}: {type(error).__name__}: {error}") from error
    assert seconds < LIMIT_S, f"{case.name} via {layer} took {seconds:.2f} s"


# -- Media ---------------------------------------------------------------------------------------------------


def _media_param(case: Case) -> object:
    marks = [pytest.mark.xfail(strict=True, reason=case.media_bug)] if case.media_bug else []
    return pytest.param(case, id=case.name, marks=marks)


@pytest.mark.parametrize("case", [_media_param(c) for c in CASES])
def test_media(case: Case, corpus_table) -> None:
    _tried("Media")
    before = case.value.tobytes() if isinstance(case.value, np.ndarray) and case.value.size < 1 << 20 else None

    def decode() -> Media:
        if case.kind == "image":
            return Media.image(case.value, max_pixels=CONFIG.max_image_pixels, max_bytes=CONFIG.max_media_bytes)
        return Media.audio(case.value, sample_rate=case.sample_rate)

    media, error, seconds = _timed(decode)
    outcome = ("MediaError" if isinstance(error, MediaError) else type(error).__name__ if error is not None
               else f"ok {media.data.shape}" if media else "FAIL")
    _judge(corpus_table, case, "Media", outcome, error, seconds)
    assert (media is not None) == (case.expect == "ok"), f"{case.name}: expected {case.expect}, got {outcome}"
    if error is not None:
        _refused(case, str(error))
    if media is not None and case.shape is not None:
        assert media.data.shape == case.shape
    if media is not None:
        assert np.isfinite(media.data).all() and media.data.dtype == np.float32
    if before is not None:
        assert case.value.tobytes() == before  # the caller's array is untouched
    CLEAN["Media"] += 1


# -- ChatSmoothGuard -------------------------------------------------------------------------------------------


def lc_block(case: Case) -> dict:
    form, value = wire_form(case)
    if case.kind == "image":
        if form == "url":
            return {"type": "image_url", "image_url": {"url": value}}
        return {"type": "image", "base64": _b64(value), "mime_type": "image/png"}
    if form == "url":
        return {"type": "audio", "url": value, "mime_type": "audio/wav"}
    return {"type": "input_audio", "input_audio": {"data": _b64(value), "format": "wav"}}


@pytest.fixture(scope="module")
def warm() -> None:
    """Import and warm every layer once, so the one-second limit measures the case, not the first call."""
    ChatSmoothGuard(model=MediaChat(), n_samples=N, seed=0).invoke([HumanMessage(content=[lc_block(CASES[0])])])
    SmoothGuardLLM(llm=MediaLLM(), guard_config=CONFIG).chat([ChatMessage(role=MessageRole.USER,
                                                                          blocks=[li_block(CASES[0])])])


@pytest.mark.parametrize("case", CASES, ids=str)
def test_chat_smoothguard(case: Case, corpus_table, warm) -> None:
    _tried("ChatSmoothGuard")
    inner = MediaChat()
    guard = ChatSmoothGuard(model=inner, n_samples=N, seed=0)
    messages = [HumanMessage(content=[{"type": "text", "text": "What is this?"}, lc_block(case)])]
    snapshot = copy.deepcopy(messages)
    reply, error, seconds = _timed(lambda: guard.invoke(messages))
    meta = reply.response_metadata["smoothguard"] if reply is not None else None
    outcome = _outcome(error, meta)
    _judge(corpus_table, case, "ChatSmoothGuard", outcome, error, seconds)
    assert messages == snapshot
    if wire_expect(case) == "error":
        assert isinstance(error, MediaError) and inner.calls == 0, f"{case.name}: {outcome}"
        _refused(case, str(error))
    else:
        assert meta is not None and meta["n_used"] == N and not meta["passthrough"] and inner.calls == N
    CLEAN["ChatSmoothGuard"] += 1


# -- SmoothGuardLLM ------------------------------------------------------------------------------------------


def li_block(case: Case) -> ImageBlock | AudioBlock:
    form, value = wire_form(case)
    if case.kind == "image":
        return ImageBlock(url=value) if form == "url" else ImageBlock(image=value)
    return AudioBlock(url=value) if form == "url" else AudioBlock(audio=value)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_smoothguard_llm(case: Case, corpus_table, warm) -> None:
    _tried("SmoothGuardLLM")
    inner = MediaLLM()
    llm = SmoothGuardLLM(llm=inner, guard_config=CONFIG)
    try:
        block = li_block(case)
    except ValidationError as exc:  # llama-index refuses to build the block: the request never exists
        corpus_table(case, "SmoothGuardLLM", "n/a (llama-index refused block)", 0.0)
        assert wire_expect(case) == "error", f"{case.name}: llama-index refused a valid medium: {exc}"
        CLEAN["SmoothGuardLLM"] += 1
        return
    messages = [ChatMessage(role=MessageRole.USER, blocks=[TextBlock(text="What is this?"), block])]
    snapshot = [m.model_dump() for m in messages]
    reply, error, seconds = _timed(lambda: llm.chat(messages))
    meta = reply.additional_kwargs["smoothguard"] if reply is not None else None
    outcome = _outcome(error, meta)
    _judge(corpus_table, case, "SmoothGuardLLM", outcome, error, seconds)
    assert [m.model_dump() for m in messages] == snapshot and messages[0].blocks[1] is block
    if wire_expect(case) == "error":
        assert isinstance(error, MediaError) and inner.calls == 0, f"{case.name}: {outcome}"
        _refused(case, str(error))
    else:
        assert meta is not None and meta["n_used"] == N and not meta["passthrough"] and inner.calls == N
    CLEAN["SmoothGuardLLM"] += 1


# -- the proxy -----------------------------------------------------------------------------------------------


def proxy_block(case: Case) -> dict:
    form, value = wire_form(case)
    if case.kind == "image":
        url = value if form == "url" else f"data:image/png;base64,{_b64(value)}"
        return {"type": "image_url", "image_url": {"url": url}}
    if form == "url":
        return {"type": "audio_url", "audio_url": {"url": value}}
    return {"type": "input_audio", "input_audio": {"data": _b64(value), "format": "wav"}}


@pytest.fixture(scope="module")
def proxy():
    """(an httpx client of the proxy, the OpenAI stub behind it)."""
    from fakes.openai_server import OpenAIStub
    from serve_support import ProxyServer

    from smoothguard.serve import create_app

    with OpenAIStub(answer=stub_answer()) as stub, \
            ProxyServer(create_app(stub.base_url, CONFIG)) as server, \
            httpx.Client(base_url=server.base_url, timeout=30) as client:
        body = {"model": "stub", "messages": [{"role": "user", "content": [proxy_block(CASES[0])]}]}
        assert client.post("/chat/completions", json=body).status_code == 200  # warm
        yield client, stub


@pytest.mark.parametrize("case", CASES, ids=str)
def test_proxy(case: Case, corpus_table, proxy) -> None:
    _tried("proxy")
    client, stub = proxy
    asked = len(stub.requests)
    body = {"model": "stub", "messages": [{"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                                                       proxy_block(case)]}]}
    raw = json.dumps(body).encode("ascii")  # escaped as \uXXXX: a lone surrogate is valid JSON, not valid UTF-8
    response, error, seconds = _timed(lambda: client.post("/chat/completions", content=raw,
                                                          headers={"content-type": "application/json"}))
    assert error is None, f"{case.name}: {error!r}"
    data = response.json()
    if response.status_code == 200:
        outcome = f"ok guarded {data['smoothguard']['n_used']}/{N}"
    else:
        outcome = f"{response.status_code} {data['error']['code']}"
    _judge(corpus_table, case, "proxy", outcome, None, seconds)
    if wire_expect(case) == "error":
        assert response.status_code == 400 and data["error"]["code"] == case.proxy_code, f"{case.name}: {outcome}"
        assert len(stub.requests) == asked  # nothing reached the model
        _refused(case, data["error"]["message"])
    else:
        assert response.status_code == 200, f"{case.name}: {outcome}"
        assert data["smoothguard"]["n_used"] == N and not data["smoothguard"]["passthrough"]
        assert len(stub.requests) == asked + N
    CLEAN["proxy"] += 1
