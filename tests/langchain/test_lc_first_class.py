"""ChatSmoothGuard keeps every convention a LangChain user relies on (issue 18): through the real framework classes
(create_agent, LangGraph, RunnableWithMessageHistory) and ChatOpenAI over real HTTP to a local scripted server."""

from __future__ import annotations

import asyncio
import threading
import time
import warnings
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain.agents.structured_output import ProviderStrategy, ToolStrategy
from langchain_core.callbacks import get_usage_metadata_callback
from langchain_core.chat_history import InMemoryChatMessageHistory
from langchain_core.load import dumps, loads
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import ConfigurableField
from langchain_core.runnables.history import RunnableWithMessageHistory
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from lc_fakes import FakeVLM, png_b64
from pydantic import BaseModel
from scripted_openai import ScriptedOpenAI

from smoothguard_langchain import ChatSmoothGuard

N = 3


class Animal(BaseModel):
    """The animal in the picture."""

    species: str
    legs: int


@tool
def lookup(species: str) -> str:
    """Look up facts about a species."""
    return f"{species}s are mammals."


def _ask(image_b64: str, text: str = "Which animal is this?") -> list[BaseMessage]:
    return [HumanMessage(content=[{"type": "text", "text": text},
                                  {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image_b64}"}}])]


def _openai(stub: ScriptedOpenAI, **kwargs: Any) -> ChatOpenAI:
    return ChatOpenAI(base_url=stub.base_url, api_key="test", model="stub-vlm", max_retries=0, **kwargs)


@pytest.fixture(scope="module")
def image() -> str:
    return png_b64(200)


@pytest.fixture(scope="module")
def stub():
    with ScriptedOpenAI() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(stub: ScriptedOpenAI):
    stub.requests.clear()


# -- 1. create_agent with every response-format strategy ----------------------------------------------------------


@pytest.mark.parametrize("strategy", ["auto", "tool", "provider"])
def test_create_agent_with_tools_and_each_response_format(stub, image, strategy):
    fmt = {"auto": Animal, "tool": ToolStrategy(Animal), "provider": ProviderStrategy(Animal)}[strategy]
    guard = ChatSmoothGuard(model=_openai(stub), n_samples=N, seed=0)
    agent = create_agent(model=guard, tools=[lookup], response_format=fmt)

    out = agent.invoke({"messages": _ask(image)})

    assert out["structured_response"] == Animal(species="cat", legs=3)
    assert any(m.type == "tool" and m.content == "cats are mammals." for m in out["messages"])  # the tool ran
    assert len(stub.requests) % N == 0 and len(stub.requests) >= 2 * N  # every model step was guarded
    guarded = [m for m in out["messages"] if isinstance(m, AIMessage) and "smoothguard" in m.response_metadata]
    assert guarded and all(m.response_metadata["smoothguard"]["n_used"] == N for m in guarded)
    last = stub.requests[-1].body
    if strategy == "provider":
        assert last["response_format"]["type"] == "json_schema"
    if strategy == "tool":
        assert "response_format" not in last and {t["function"]["name"] for t in last["tools"]} == {"lookup", "Animal"}


def test_create_agent_text_only_request_with_a_response_format(stub):
    """The crash of issue 18 item 1 happened on every call, even without an image."""
    agent = create_agent(model=ChatSmoothGuard(model=_openai(stub), n_samples=N), response_format=Animal)
    out = agent.invoke({"messages": [HumanMessage("Name an animal.")]})
    assert out["structured_response"] == Animal(species="cat", legs=3) and len(stub.requests) == 1  # pass-through


# -- 2. with_structured_output keeps the inner model's method and strict ------------------------------------------


@pytest.mark.parametrize(("kwargs", "expect"), [
    ({}, "json_schema"),
    ({"method": "json_schema", "strict": True}, "json_schema"),
    ({"method": "function_calling"}, "tools"),
    ({"method": "json_mode"}, "json_object"),
])
def test_with_structured_output_sends_what_the_inner_model_would(stub, image, kwargs, expect):
    llm = _openai(stub, temperature=0)
    if expect == "json_object":
        llm.with_structured_output(method="json_mode").invoke(_ask(image, "JSON"))
    else:
        llm.with_structured_output(Animal, **kwargs).invoke(_ask(image))
    plain = stub.requests[-1].body
    stub.requests.clear()

    guard = ChatSmoothGuard(model=llm, n_samples=N, seed=0)
    if expect == "json_object":
        out = guard.with_structured_output(method="json_mode").invoke(_ask(image, "JSON"))
        assert out == {"answer": "cat"}
    else:
        out = guard.with_structured_output(Animal, include_raw=True, **kwargs).invoke(_ask(image))
        assert out["parsed"] == Animal(species="cat", legs=3)
        assert out["raw"].response_metadata["smoothguard"]["n_used"] == N
    assert len(stub.requests) == N
    for request in stub.requests:
        body = request.body
        for key in ("response_format", "tools", "tool_choice", "parallel_tool_calls"):
            assert body.get(key) == plain.get(key), key  # the same request format, strictness included
    if expect == "tools":
        assert plain["tool_choice"]["function"]["name"] == "Animal" and "response_format" not in plain
    else:
        assert plain["response_format"]["type"] == expect and "tools" not in plain
    if kwargs.get("strict"):
        assert plain["response_format"]["json_schema"]["strict"] is True


# -- 4. configurable reaches a configurable inner model -----------------------------------------------------------


def test_configurable_is_forwarded_to_the_inner_model(stub, image):
    import httpx

    # its own async client: langchain-openai caches the default one, bound to the first event loop that used it
    llm = _openai(stub, http_async_client=httpx.AsyncClient()).configurable_fields(
        model_name=ConfigurableField(id="model_name"))
    guard = ChatSmoothGuard(model=llm, n_samples=N, seed=0)
    config = {"configurable": {"model_name": "other-vlm"}}

    guard.invoke(_ask(image), config=config)
    asyncio.run(guard.ainvoke(_ask(image), config=config))
    guard.invoke(_ask(image))

    models = [r.body["model"] for r in stub.requests]
    assert models == ["other-vlm"] * (2 * N) + ["stub-vlm"] * N


# -- 5. greedy decoding --------------------------------------------------------------------------------------------


def test_candidates_are_sent_at_temperature_zero_where_the_provider_takes_it(stub, image):
    ChatSmoothGuard(model=_openai(stub), n_samples=N, seed=0).invoke(_ask(image))  # no temperature on the model
    ChatSmoothGuard(model=_openai(stub, temperature=0.7), n_samples=N, seed=0).invoke(_ask(image))
    assert [r.body.get("temperature") for r in stub.requests] == [0] * (2 * N)

    stub.requests.clear()
    reasoning = ChatOpenAI(base_url=stub.base_url, api_key="test", model="gpt-5", max_retries=0)
    ChatSmoothGuard(model=reasoning, n_samples=N, seed=0).invoke(_ask(image))
    assert len(stub.requests) == N and all("temperature" not in r.body for r in stub.requests)  # gpt-5 takes none


def test_middleware_candidates_are_greedy_too(stub, image):
    from smoothguard_langchain import SmoothGuardMiddleware

    middleware = SmoothGuardMiddleware(n_samples=N, seed=0)
    assert middleware.warmup() is middleware
    agent = create_agent(model=_openai(stub), tools=[lookup], middleware=[middleware])
    agent.invoke({"messages": _ask(image)})
    assert len(stub.requests) == 2 * N and all(r.body.get("temperature") == 0 for r in stub.requests)


def test_a_model_without_temperature_is_warned_about_once(image):
    class NoTemperature(FakeVLM):  # a fresh class: the warning is once per model class
        pass

    guard = ChatSmoothGuard(model=NoTemperature(), n_samples=N, seed=0)
    with pytest.warns(UserWarning, match="cannot ask NoTemperature for greedy decoding"):
        guard.invoke(_ask(image))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        guard.invoke(_ask(image))


# -- 6. usage counted once -----------------------------------------------------------------------------------------


def test_usage_is_counted_once_per_provider_call(stub, image):
    guard = ChatSmoothGuard(model=_openai(stub), n_samples=5, seed=0)
    with get_usage_metadata_callback() as counter:
        reply = guard.invoke(_ask(image))
        guard.invoke(_ask(image))
    assert len(stub.requests) == 10
    used = {"input_tokens": 10 * 10, "output_tokens": 10 * len(reply.content.split())}
    counted = counter.usage_metadata["stub-vlm"]
    assert (counted["input_tokens"], counted["output_tokens"]) == (used["input_tokens"], used["output_tokens"])
    # the caller's message carries what this call cost: all five candidates
    assert reply.usage_metadata["input_tokens"] == 50 and reply.usage_metadata == reply.response_metadata[
        "smoothguard_usage"]


# -- 7. token counting ---------------------------------------------------------------------------------------------


def test_token_counting_is_the_inner_models(image):
    class Counting(FakeVLM):
        def get_num_tokens_from_messages(self, messages: list[BaseMessage], tools: Any = None) -> int:
            return 7 * len(messages) + (100 if tools else 0)

        def get_token_ids(self, text: str) -> list[int]:
            return list(range(len(text.split())))

    guard = ChatSmoothGuard(model=Counting(), n_samples=N)
    start = time.monotonic()
    assert guard.get_num_tokens_from_messages(_ask(image) * 2) == 14
    assert guard.get_num_tokens_from_messages(_ask(image), tools=[lookup]) == 107
    assert guard.get_num_tokens("three short words") == 3 and guard.get_token_ids("a b") == [0, 1]
    assert guard.bind_tools([lookup]).get_num_tokens("one two") == 2
    assert time.monotonic() - start < 1.0  # no tokenizer download attempted


# -- 8. warmup -----------------------------------------------------------------------------------------------------


def test_warmup_loads_the_embedder_quietly(capfd):
    from smoothguard.aggregate.embed import Embedder, get_embedder

    guard = ChatSmoothGuard(model=FakeVLM(), n_samples=N)
    assert guard.warmup() is guard
    assert get_embedder(guard.embedder, guard.embedder_device)._model is not None
    capfd.readouterr()
    Embedder(guard.embedder).load()  # a fresh load, as the first request would do it
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "%|" not in err


# -- 9. the proxy's vote in response headers -----------------------------------------------------------------------


def test_chatopenai_sees_the_proxys_vote_in_response_headers(stub, image):
    pytest.importorskip("uvicorn")
    import uvicorn
    from fakes.openai_server import _free_port

    from smoothguard import GuardConfig
    from smoothguard.serve import create_app

    port = _free_port()
    app = create_app(stub.base_url, GuardConfig(n_samples=N, seed=0), warmup=False)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline, "proxy did not start"
            time.sleep(0.01)
        client = ChatOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="test", model="stub-vlm",
                            max_retries=0, include_response_headers=True)
        reply = client.invoke(_ask(image))
        headers = reply.response_metadata["headers"]
        assert headers["x-smoothguard-agreement"] == "1.0000" and headers["x-smoothguard-flagged"] == "false"
        assert headers["x-smoothguard-calls"] == str(N) and len(stub.requests) == N
        chunks = list(client.stream(_ask(image)))
        streamed = next(c for c in chunks if "headers" in c.response_metadata).response_metadata["headers"]
        assert streamed["x-smoothguard-calls"] == str(N)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


# -- drop-in places ------------------------------------------------------------------------------------------------


def test_langgraph_node_with_stream_mode_messages_streams_only_the_voted_answer(image):
    from langgraph.graph import END, START, MessagesState, StateGraph

    inner = FakeVLM(latency=0.05)
    guard = ChatSmoothGuard(model=inner, n_samples=N, seed=0)

    def call_model(state: MessagesState) -> dict[str, Any]:
        return {"messages": [guard.invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("model", call_model)
    graph.add_edge(START, "model")
    graph.add_edge("model", END)
    app = graph.compile()

    streamed = list(app.stream({"messages": _ask(image)}, stream_mode="messages"))
    assert len(inner.inputs) == N
    texts = [chunk.content for chunk, meta in streamed]
    assert texts == ["The image is bright; its mean level is 0.8."]  # one chunk, the guard's, no candidate's
    assert all(meta["langgraph_node"] == "model" for _, meta in streamed)


async def test_astream_events_show_the_guard_run_not_the_candidates(image):
    guard = ChatSmoothGuard(model=FakeVLM(), n_samples=N, seed=0)
    events = [e async for e in guard.astream_events(_ask(image), version="v2")]
    starts = [e["name"] for e in events if e["event"] == "on_chat_model_start"]
    ends = [e for e in events if e["event"] == "on_chat_model_end"]
    assert starts == ["ChatSmoothGuard"] and len(ends) == 1  # no candidate run appears
    assert ends[0]["data"]["output"].content == "The image is bright; its mean level is 0.8."
    assert any(e["event"] == "on_custom_event" and e["name"] == "smoothguard_result" for e in events)


@pytest.mark.filterwarnings("ignore::langchain_core._api.deprecation.LangChainDeprecationWarning")  # still in use
def test_runnable_with_message_history_guards_every_turn(image):
    inner = FakeVLM()
    guard = ChatSmoothGuard(model=inner, n_samples=N, seed=0)
    prompt = ChatPromptTemplate.from_messages([("system", "You describe images."),
                                               MessagesPlaceholder("history"), MessagesPlaceholder("question")])
    store: dict[str, InMemoryChatMessageHistory] = {}
    chat = RunnableWithMessageHistory(prompt | guard, lambda sid: store.setdefault(sid, InMemoryChatMessageHistory()),
                                      input_messages_key="question", history_messages_key="history")
    config = {"configurable": {"session_id": "s1"}}

    first = chat.invoke({"question": _ask(image)}, config=config)
    second = chat.invoke({"question": [HumanMessage("And now?")]}, config=config)

    assert first.response_metadata["smoothguard"]["n_used"] == N
    history = store["s1"].messages
    assert [m.type for m in history] == ["human", "ai", "human", "ai"] and history[1].content == first.content
    # the second turn still carries the first turn's image in its history: it is guarded again
    assert second.response_metadata["smoothguard"]["n_used"] == N and len(inner.inputs) == 2 * N


# -- serialisation -------------------------------------------------------------------------------------------------


def test_dumps_loads_round_trip_with_a_serialisable_inner_model(stub, image, monkeypatch):
    guard = ChatSmoothGuard(model=_openai(stub, temperature=0), n_samples=N, seed=3, image_resize=(256, 256),
                            on_flag="refuse")
    text = dumps(guard)
    assert "test" not in text.replace("ChatSmoothGuard", "")  # the API key is a secret reference, not the value
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # loads is marked beta
        loaded = loads(text, valid_namespaces=["smoothguard_langchain"], allowed_objects=[ChatSmoothGuard, ChatOpenAI],
                       secrets_from_env=True)
    assert isinstance(loaded, ChatSmoothGuard) and loaded.guard_config == guard.guard_config
    assert loaded.model.openai_api_base == stub.base_url
    assert loaded.invoke(_ask(image)).response_metadata["smoothguard"]["n_used"] == N


# -- 10. SmoothGuardRunnable finds the media slots of its prompt templates ------------------------------------------


@pytest.mark.parametrize("slot", [
    {"type": "image_url", "image_url": "data:image/png;base64,{image}"},  # ImagePromptTemplate
    {"type": "image", "base64": "{image}", "mime_type": "image/png"},  # a dict block template
])
def test_runnable_smooths_the_media_slots_of_its_prompt_without_media_keys(image, slot):
    from smoothguard_langchain import SmoothGuardRunnable
    from smoothguard_langchain.inputs import template_media_keys

    inner = FakeVLM()
    prompt = ChatPromptTemplate.from_messages([("user", [{"type": "text", "text": "{question}"}, slot])])
    guarded = SmoothGuardRunnable(bound=prompt | inner, n_samples=N, seed=0)
    assert template_media_keys(guarded.bound) == {"image": "image"}

    reply = guarded.invoke({"question": "How bright is it?", "image": image})

    meta = reply.response_metadata["smoothguard"]
    assert not meta["passthrough"] and meta["n_used"] == N == len(inner.inputs)
    sent = {str(call.to_messages()[0].content[1]) for call in inner.inputs}
    assert len(sent) == N  # every candidate got its own noisy copy in the template's slot
    assert reply.content == "The image is bright; its mean level is 0.8."


def test_runnable_fetches_a_url_in_an_image_slot_under_the_remote_media_policy(image):
    from smoothguard.errors import MediaError
    from smoothguard_langchain import SmoothGuardRunnable

    inner = FakeVLM()
    prompt = ChatPromptTemplate.from_messages([("user", [{"type": "image_url", "image_url": {"url": "{link}"}}])])
    guarded = SmoothGuardRunnable(bound=prompt | inner, n_samples=N, remote_media="error")
    with pytest.raises(MediaError, match=r"input\['link'\].*remote_media='error'"):
        guarded.invoke({"link": "https://example.com/photo?id=3"})  # no file extension: was passed through
    assert inner.inputs == []
