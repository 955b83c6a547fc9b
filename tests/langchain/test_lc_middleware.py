"""SmoothGuardMiddleware: guards a create_agent agent's model calls while the agent keeps its own model."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest
from langchain.agents import create_agent
from langchain.agents.structured_output import ToolStrategy
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import tool
from lc_fakes import FakeVLM, png_b64
from pydantic import BaseModel

from smoothguard.errors import ConfigError
from smoothguard_langchain import SmoothGuardMiddleware


@tool
def get_weather(location: str) -> str:
    """The weather at a location."""
    return f"It is sunny in {location}."


class _TriggeredVLM(FakeVLM):
    """Asks for the weather in 'Mordor' only on the exact original image (an "adversarial" trigger)."""

    trigger: str = ""

    def _reply(self, messages, stop, kwargs):
        result = super()._reply(messages, stop, kwargs)
        message = result.generations[0].message
        if message.tool_calls and messages[-1].content[1]["base64"] == self.trigger:
            call = {**message.tool_calls[0], "args": {"location": "Mordor"}}
            result.generations[0].message = message.model_copy(update={"tool_calls": [call]})
        return result


def _question(image: str) -> dict:
    block = {"type": "image", "base64": image, "mime_type": "image/png"}
    return {"messages": [HumanMessage(content=[{"type": "text", "text": "Weather in 'Paris'? See the map."},
                                               block])]}


def test_guards_every_model_call_of_an_agent_sync_and_async():
    image = png_b64(40)
    inner = _TriggeredVLM(trigger=image)
    agent = create_agent(model=inner, tools=[get_weather], middleware=[SmoothGuardMiddleware(n_samples=5, seed=0)])
    state = agent.invoke(_question(image))
    call, tool_reply, final = state["messages"][1:]
    assert call.tool_calls[0]["args"] == {"location": "Paris"}  # the triggered candidate 0 was outvoted
    assert tool_reply.content == "It is sunny in Paris." and isinstance(final, AIMessage)
    meta = call.response_metadata["smoothguard"]
    assert meta["n_used"] == 5 and "Mordor" in meta["samples"][0]["answer"]
    assert final.response_metadata["smoothguard"]["n_used"] == 5
    assert len(inner.inputs) == 10  # two model steps x 5 candidates, through the agent's own model
    assert len({m[0].content[1]["base64"] for m in inner.inputs}) == 5

    state = asyncio.run(agent.ainvoke(_question(image)))
    assert state["messages"][1].tool_calls[0]["args"] == {"location": "Paris"} and len(inner.inputs) == 20


@pytest.mark.parametrize("use_async", [False, True])
def test_time_budget_drops_a_slow_candidate_of_an_agent_step(use_async):
    image = png_b64(40)
    inner = FakeVLM(latency_fn=lambda order: 5.0 if order == 2 else 0.0)  # one candidate of the first step hangs
    agent = create_agent(model=inner, tools=[get_weather],
                         middleware=[SmoothGuardMiddleware(n_samples=5, seed=0, time_budget=1.5)])
    start = time.monotonic()
    state = asyncio.run(agent.ainvoke(_question(image))) if use_async else agent.invoke(_question(image))
    assert time.monotonic() - start < 4.5
    call = state["messages"][1]
    assert call.tool_calls[0]["args"] == {"location": "Paris"}
    errors = [s["error"] for s in call.response_metadata["smoothguard"]["samples"] if s["error"]]
    assert len(errors) == 1 and "time budget of 1.5 s" in errors[0]


def test_messages_stream_shows_only_the_chosen_messages():
    inner = FakeVLM()
    agent = create_agent(model=inner, tools=[get_weather], middleware=[SmoothGuardMiddleware(n_samples=4, seed=0)])
    streamed = [m for m, _ in agent.stream(_question(png_b64(40)), stream_mode="messages")
                if isinstance(m, AIMessage)]
    assert len(streamed) == 2 and all("smoothguard" in m.response_metadata for m in streamed)
    assert len(inner.inputs) == 8


def test_structured_response_is_voted_on():
    class Weather(BaseModel):
        """A weather report."""

        location: str

    inner = FakeVLM()
    agent = create_agent(model=inner, tools=[], response_format=ToolStrategy(Weather),
                         middleware=[SmoothGuardMiddleware(n_samples=3, seed=0)])
    state = agent.invoke(_question(png_b64(40)))
    assert state["structured_response"] == Weather(location="Paris") and len(inner.inputs) == 3
    assert state["messages"][1].response_metadata["smoothguard"]["agreement"] == 1.0


def test_text_only_calls_pass_through_and_settings_are_validated():
    inner = FakeVLM()
    agent = create_agent(model=inner, tools=[], middleware=[SmoothGuardMiddleware(n_samples=5)])
    state = agent.invoke({"messages": [HumanMessage("hello")]})
    assert len(inner.inputs) == 1 and state["messages"][-1].response_metadata["smoothguard"]["passthrough"]
    with pytest.raises(ConfigError, match="did you mean 'n_samples'"):
        SmoothGuardMiddleware(n_sample=3)


def test_package_imports_without_langchain_and_middleware_says_what_to_install():
    code = ("import sys; sys.modules['langchain'] = None\n"
            "import smoothguard_langchain as s\n"
            "assert s.ChatSmoothGuard and s.SmoothGuardRunnable\n"
            "try:\n    s.SmoothGuardMiddleware\nexcept ImportError as e:\n    print('ImportError:', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).parents[2])
    assert out.returncode == 0, out.stderr
    assert "pip install 'smoothguard[langchain]'" in out.stdout


def test_interrupts_from_candidates_propagate():
    from langchain.agents.middleware import ModelRequest
    from langgraph.errors import GraphInterrupt

    def handler(request):
        raise GraphInterrupt(())

    request = ModelRequest(model=FakeVLM(), messages=_question(png_b64(40))["messages"])
    with pytest.raises(GraphInterrupt):
        SmoothGuardMiddleware(n_samples=3).wrap_model_call(request, handler)

    async def ahandler(request):
        raise GraphInterrupt(())

    with pytest.raises(GraphInterrupt):
        asyncio.run(SmoothGuardMiddleware(n_samples=3).awrap_model_call(request, ahandler))
