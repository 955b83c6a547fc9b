"""One behaviour in every adapter (issue #16, deliver 2): the time budget, failures and tool calls, each rule run
through ChatSmoothGuard (LangChain), SmoothGuardLLM (LlamaIndex) and the proxy, which all use the core's fan-out
(smoothguard.fanout) and tool-call canonicalisation (smoothguard.tool_calls).

Every path runs the same script: ``script(arrival number) -> behaviour`` (an answer, a rate limit, tool calls,
or a slow answer), spoken in each framework's own types (LangChain messages, LlamaIndex responses, OpenAI JSON
over HTTP).
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest
from langchain_core.messages import AIMessage, HumanMessage
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ImageBlock,
    MessageRole,
    TextBlock,
    ToolCallBlock,
)
from reliability_support import MediaChat, MediaLLM, describe

from smoothguard import GuardConfig, Media, SmoothGuard
from smoothguard.errors import GenerationError
from smoothguard.tool_calls import canonical_tool_calls
from smoothguard_langchain import ChatSmoothGuard
from smoothguard_llamaindex import SmoothGuardLLM
from smoothguard_llamaindex.vote_text import tool_calls_of

N = 5
IMAGE = Media.image(np.random.default_rng(1).integers(40, 200, (16, 16, 3), dtype=np.uint8))
ANSWER = describe(IMAGE)
PNG = IMAGE.to_png_bytes()
PATHS = ["langchain", "llamaindex", "proxy"]
CALLS = [("get_weather", {"city": "Paris", "unit": "C"}), ("get_time", {"tz": "Europe/Paris"})]


@dataclass
class RateLimit:
    """The provider refuses with HTTP 429."""


@dataclass
class ServerError:
    """The provider fails with HTTP 500."""


@dataclass
class Slow:
    """The right answer, after ``seconds``."""

    seconds: float


@dataclass
class Calls:
    """The tool calls of CALLS, in an order and with ids and argument spacing of its own (per ``number``)."""

    number: int

    def pairs(self) -> list[tuple[str, dict[str, Any], str]]:
        calls = CALLS if self.number % 2 == 0 else CALLS[::-1]
        return [(name, args, f"call_{self.number}_{k}") for k, (name, args) in enumerate(calls)]

    def openai(self) -> list[dict[str, Any]]:
        spacing = (", ", ": ") if self.number % 2 else (",", ":")
        return [{"id": cid, "type": "function",
                 "function": {"name": name, "arguments": json.dumps(args, separators=spacing)}}
                for name, args, cid in self.pairs()]


class ProviderRateLimit(Exception):
    """A provider SDK's own rate-limit error (as openai.RateLimitError: a status_code)."""

    status_code = 429


class ProviderServerError(Exception):
    status_code = 500


@dataclass
class Outcome:
    """What the caller got, in the same terms for every path."""

    answer: str | None = None  # the text, or the canonical JSON of the chosen message's tool calls
    meta: dict[str, Any] | None = None  # GuardResult.to_dict() as the path returns it
    status: int | None = None  # the error: its HTTP status (the exception's status_code for a Python caller)
    error: Any = None  # the exception a Python caller caught, or the proxy's error body

    def errors(self) -> list[str]:
        assert self.meta is not None, self
        return [s["error"] for s in self.meta["samples"] if s["error"]]


class Script:
    """``behaviour(number)`` by arrival number, counted across threads and tasks."""

    def __init__(self, behaviour) -> None:
        self.behaviour, self.count, self.lock = behaviour, 0, threading.Lock()

    def next(self) -> Any:
        with self.lock:
            number, self.count = self.count, self.count + 1
        return self.behaviour(number)


# -- the three paths ------------------------------------------------------------------------------------------


def _python_reply(script: Script, media: Media | None, calls) -> Any:
    """The next behaviour as a Python model gives it: a provider exception to raise, ``calls(behaviour)`` for tool
    calls, else the answer (after sleeping when slow)."""
    behaviour = script.next()
    if isinstance(behaviour, RateLimit):
        return ProviderRateLimit("Rate limit reached, retry later")
    if isinstance(behaviour, ServerError):
        return ProviderServerError("the GPU fell over")
    if isinstance(behaviour, Slow):
        time.sleep(behaviour.seconds)
    return calls(behaviour) if isinstance(behaviour, Calls) else describe(media)


def run_langchain(script: Script, settings: dict[str, Any]) -> Outcome:
    def called(behaviour: Calls) -> AIMessage:
        return AIMessage(content="", tool_calls=[{"name": n, "args": a, "id": i} for n, a, i in behaviour.pairs()])

    def reply(number: int, media: Media | None) -> Any:
        return _python_reply(script, media, called)

    block = {"type": "image", "base64": base64.b64encode(PNG).decode(), "mime_type": "image/png"}
    guard = ChatSmoothGuard(model=MediaChat(script=reply), n_samples=N, seed=0, **settings)
    try:
        message = guard.invoke([HumanMessage(content=[{"type": "text", "text": "What is this?"}, block])])
    except Exception as exc:
        return Outcome(status=getattr(exc, "status_code", None), error=exc)
    calls = [(c["name"], c["args"]) for c in message.tool_calls]
    return Outcome(canonical_tool_calls(calls) or message.content, message.response_metadata["smoothguard"])


def run_llamaindex(script: Script, settings: dict[str, Any]) -> Outcome:
    def called(behaviour: Calls) -> ChatResponse:  # half as ToolCallBlocks, half as OpenAI-style additional_kwargs
        if behaviour.number % 2:
            blocks = [ToolCallBlock(tool_call_id=i, tool_name=n, tool_kwargs=a) for n, a, i in behaviour.pairs()]
            return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, blocks=blocks))
        return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content="",
                                                additional_kwargs={"tool_calls": behaviour.openai()}))

    def reply(number: int, media: Media | None) -> Any:
        return _python_reply(script, media, called)

    llm = SmoothGuardLLM(llm=MediaLLM(script=reply), n_samples=N, seed=0, **settings)
    try:
        response = llm.chat([ChatMessage(role=MessageRole.USER,
                                         blocks=[TextBlock(text="What is this?"), ImageBlock(image=PNG)])])
    except Exception as exc:
        return Outcome(status=getattr(exc, "status_code", None), error=exc)
    calls = tool_calls_of(response.message)
    return Outcome(canonical_tool_calls(calls) or response.message.content, response.additional_kwargs["smoothguard"])


def run_proxy(script: Script, settings: dict[str, Any]) -> Outcome:
    from smoothguard.serve import create_app

    async def upstream(request: httpx.Request) -> httpx.Response:
        behaviour = script.next()
        if isinstance(behaviour, RateLimit | ServerError):
            status = 429 if isinstance(behaviour, RateLimit) else 500
            return httpx.Response(status, json={"error": {"message": "Rate limit reached, retry later"
                                                          if status == 429 else "the GPU fell over"}})
        if isinstance(behaviour, Slow):
            await asyncio.sleep(behaviour.seconds)
        message: dict[str, Any] = {"role": "assistant", "content": ANSWER}
        if isinstance(behaviour, Calls):
            message = {"role": "assistant", "content": None, "tool_calls": behaviour.openai()}
        return httpx.Response(200, json={"id": "c", "object": "chat.completion", "created": 0, "model": "m",
                                         "choices": [{"index": 0, "finish_reason": "stop", "message": message}]})

    async def post() -> httpx.Response:
        app = create_app("http://upstream/v1", GuardConfig(n_samples=N, seed=0, **settings),
                         transport=httpx.MockTransport(upstream), warmup=False)
        url = "data:image/png;base64," + base64.b64encode(PNG).decode()
        body = {"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": url}}]}]}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://proxy") as client:
            return await client.post("/v1/chat/completions", json=body)

    response = asyncio.run(post())
    data = response.json()
    if response.status_code != 200:
        return Outcome(status=response.status_code, error=data)
    message = data["choices"][0]["message"]
    calls = [(c["function"]["name"], c["function"]["arguments"]) for c in message.get("tool_calls") or []]
    return Outcome(canonical_tool_calls(calls) or message["content"], data["smoothguard"])


RUN = {"langchain": run_langchain, "llamaindex": run_llamaindex, "proxy": run_proxy}


def ask(path: str, behaviour, **settings: Any) -> Outcome:
    return RUN[path](Script(behaviour), settings)


# -- the rules --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
def test_time_budget_leaves_the_late_candidate_out_with_a_note(path: str) -> None:
    SmoothGuard().aggregate(["a cat", "a dog"])  # the embedder loaded before the clock starts
    start = time.monotonic()
    outcome = ask(path, lambda number: Slow(4.0) if number == 1 else Slow(0.0), time_budget=1.0)
    assert time.monotonic() - start < 3.5, path  # the budget (room for a loaded machine), not the 4 s call
    assert outcome.answer == ANSWER, outcome
    errors = outcome.errors()
    assert len(errors) == 1 and "no answer within the time budget of 1 s" in errors[0], errors
    assert any("1 candidate(s) did not answer in time" in note for note in outcome.meta["notes"])


@pytest.mark.parametrize("path", PATHS)
def test_failures_that_agree_reach_the_caller_as_the_providers_own(path: str) -> None:
    outcome = ask(path, lambda number: RateLimit() if number < 3 else Slow(0.0))  # 3 of 5: no quorum
    assert outcome.status == 429, outcome
    if path != "proxy":  # a Python caller catches the provider's type, still a GenerationError with every cause
        assert isinstance(outcome.error, ProviderRateLimit) and isinstance(outcome.error, GenerationError)
        assert len(outcome.error.causes) == 3 and "only 2 of 5 candidates were answered" in str(outcome.error)
    else:
        assert len(outcome.error["smoothguard"]["errors"]) == 3
        assert "only 2 of 5 candidates were answered" in outcome.error["error"]["message"]


@pytest.mark.parametrize("path", PATHS)
def test_failures_that_differ_are_a_generation_error(path: str) -> None:
    outcome = ask(path, lambda number: RateLimit() if number == 0 else ServerError())
    if path != "proxy":
        assert type(outcome.error) is GenerationError and len(outcome.error.causes) == N
    else:
        assert outcome.status == 502 and outcome.error["error"]["code"] == "upstream_failed"


@pytest.mark.parametrize("path", PATHS)
def test_partial_failures_are_answered_and_said_in_the_notes(path: str) -> None:
    outcome = ask(path, lambda number: RateLimit() if number < 2 else Slow(0.0))
    assert outcome.answer == ANSWER and len(outcome.errors()) == 2
    notes = [n for n in outcome.meta["notes"] if "2 of 5 candidates failed and were left out of the vote" in n]
    assert len(notes) == 1 and notes[0].endswith("(HTTP 429) x2"), outcome.meta["notes"]


@pytest.mark.parametrize("path", PATHS)
def test_tool_calls_are_voted_on_canonically(path: str) -> None:
    outcome = ask(path, Calls)  # every candidate: the same two calls, its own order, ids and argument spacing
    expected = canonical_tool_calls([(name, args) for name, args in CALLS])
    assert {s["answer"] for s in outcome.meta["samples"]} == {expected}, outcome.meta["samples"]
    assert outcome.meta["agreement"] == 1.0 and outcome.answer == expected
