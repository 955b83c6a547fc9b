"""ChatSmoothGuard around FakeVLM: fan-out, noise, formats, metadata, callbacks, tools, agents, errors."""

from __future__ import annotations

import asyncio
import base64
import copy
import dataclasses
import json
import time
import warnings

import numpy as np
import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.runnables import ConfigurableField
from langchain_core.tools import tool
from langchain_core.tracers.context import collect_runs
from langchain_core.utils.function_calling import convert_to_json_schema
from lc_fakes import FakeVLM, decode_b64_image, first_media
from pydantic import BaseModel

from smoothguard import GuardConfig, Media
from smoothguard.config import CLIP_STD
from smoothguard.errors import ConfigError, GenerationError, GuardFlagged, MediaError
from smoothguard_langchain import ChatSmoothGuard, SmoothGuardResults


def _ask(*blocks: dict, text: str = "What is in the image?") -> list:
    return [HumanMessage(content=[{"type": "text", "text": text}, *blocks])]


def _image_block(b64: str) -> dict:
    return {"type": "image", "base64": b64, "mime_type": "image/png"}


def _inner_blocks(inner: FakeVLM, kind: str) -> list[dict]:
    """The media block of every input the inner model received."""
    out = []
    for messages in inner.inputs:
        out += [b for b in messages[-1].content if isinstance(b, dict) and b.get("type") == kind]
    return out


def test_n_candidates_original_first_others_noisy_with_the_configured_std(image_b64, audio_b64):
    inner = FakeVLM()
    guard = ChatSmoothGuard(model=inner, n_samples=6, seed=0)
    audio = {"type": "audio", "base64": audio_b64, "mime_type": "audio/wav"}
    reply = guard.invoke(_ask(_image_block(image_b64), audio))

    assert len(inner.inputs) == 6
    images = _inner_blocks(inner, "image")
    clips = _inner_blocks(inner, "audio")
    assert len(images) == len(clips) == 6
    assert sum(b["base64"] == image_b64 for b in images) == 1  # candidate 0: the input itself
    assert sum(b["base64"] == audio_b64 for b in clips) == 1
    assert len({b["base64"] for b in images}) == 6 and len({b["base64"] for b in clips}) == 6
    assert all(b["mime_type"] == "image/png" for b in images) and all(b["mime_type"] == "audio/wav" for b in clips)

    original = decode_b64_image(image_b64)
    wave0 = Media.audio(base64.b64decode(audio_b64)).data
    for block in images:
        if block["base64"] != image_b64:
            std = (decode_b64_image(block["base64"]) - original).reshape(-1, 3).std(axis=0)
            np.testing.assert_allclose(std, 0.1 * np.array(CLIP_STD), rtol=0.12)  # sigma in CLIP-normalised units
    for block in clips:
        if block["base64"] != audio_b64:
            std = (Media.audio(base64.b64decode(block["base64"])).data - wave0).std()
            assert std == pytest.approx(0.01, rel=0.12)

    meta = reply.response_metadata["smoothguard"]
    assert reply.content.startswith("The image is dark") and meta["n_used"] == 6
    assert meta["samples"][0]["original"] and meta["agreement"] == 1.0 and not meta["passthrough"]
    assert json.dumps(meta) and "iVBOR" not in json.dumps(meta)  # JSON-serialisable, no media bytes
    assert reply.response_metadata["model_name"] == "fake-vlm"  # the representative's own metadata is kept
    assert reply.response_metadata["smoothguard_usage"]["input_tokens"] == 60  # 6 candidates x 10


@pytest.mark.parametrize(("name", "arrives_as"), [
    ("v1_image", "image"), ("openai_image", "image_url"), ("anthropic_image", "image"),
    ("v0_image", "image"), ("v1_audio", "audio"), ("openai_audio", "audio"),
])
def test_every_dialect_reaches_the_inner_model_perturbed(blocks, name, arrives_as):
    # langchain-core turns v0 and OpenAI input_audio blocks into v1 before any chat model sees them; the guard
    # writes back what it receives (SmoothGuardRunnable, which sees raw input, keeps all six: test_lc_runnable).
    inner = FakeVLM()
    messages = _ask(blocks[name])
    before = copy.deepcopy(messages)
    ChatSmoothGuard(model=inner, n_samples=3, seed=0).invoke(messages)
    received = [m[-1].content[1] for m in inner.inputs]
    assert {b["type"] for b in received} == {arrives_as}
    assert len({json.dumps(b, sort_keys=True) for b in received}) == 3  # three different inputs
    if name in ("v1_image", "openai_image", "anthropic_image"):
        assert messages[0].content[1] in received  # candidate 0 unchanged
        assert all(b.keys() == messages[0].content[1].keys() for b in received)
    assert all(first_media([m[-1]]) is not None for m in inner.inputs)  # every copy decodes
    assert messages == before


def test_text_only_request_is_one_pass_through_call():
    inner = FakeVLM()
    reply = ChatSmoothGuard(model=inner, n_samples=5).invoke("Hello there")
    assert len(inner.inputs) == 1 and reply.content == "Hello! You said: Hello there"
    meta = reply.response_metadata["smoothguard"]
    assert meta["passthrough"] and meta["n_used"] == 1 and "no image or audio" in meta["notes"][0]


def test_fan_out_is_concurrent_and_bounded(image_b64):
    messages = _ask(_image_block(image_b64))
    inner = FakeVLM(latency=0.2)
    guard = ChatSmoothGuard(model=inner, n_samples=5, seed=0)
    guard.invoke(messages)  # warm the embedder
    start = time.perf_counter()
    guard.invoke(messages)
    assert time.perf_counter() - start < 0.6 and inner.max_in_flight == 5

    start = time.perf_counter()
    asyncio.run(guard.ainvoke(messages))
    assert time.perf_counter() - start < 0.6

    bounded_inner = FakeVLM(latency=0.1)
    bounded = ChatSmoothGuard(model=bounded_inner, n_samples=5, seed=0, max_concurrency=2)
    bounded.invoke(messages)
    assert bounded_inner.max_in_flight == 2
    asyncio.run(bounded.ainvoke(messages))
    assert bounded_inner.max_in_flight == 2

    # the caller's own batch max_concurrency does not throttle the fan-out inside each request
    outer_inner = FakeVLM(latency=0.1)
    ChatSmoothGuard(model=outer_inner, n_samples=4, seed=0).batch([messages, messages], {"max_concurrency": 1})
    assert outer_inner.max_in_flight == 4


def test_adaptive_rounds_stop_early_and_keep_candidate_indices(image_b64):
    inner = FakeVLM()
    guard = ChatSmoothGuard(model=inner, n_samples=15, adaptive=True, adaptive_round=5, seed=0)
    with collect_runs() as runs:
        reply = guard.invoke(_ask(_image_block(image_b64)))
    meta = reply.response_metadata["smoothguard"]
    # two rounds of 5: 9 agreeing noisy answers settle it (4 cannot: smoothguard.consensus)
    assert meta["n_used"] == len(inner.inputs) == 10
    tags = sorted((t for c in runs.traced_runs[0].child_runs for t in c.tags if t.startswith("smoothguard:")),
                  key=lambda t: int(t.rsplit(":", 1)[1]))
    assert tags == [f"smoothguard:sample:{i}" for i in range(10)]


@pytest.mark.parametrize("use_async", [False, True])
def test_time_budget_leaves_a_slow_candidate_out_of_the_vote(image_b64, use_async):
    inner = FakeVLM(latency_fn=lambda order: 5.0 if order == 1 else 0.02)
    guard = ChatSmoothGuard(model=inner, n_samples=5, seed=0, time_budget=1.5)
    messages = _ask(_image_block(image_b64))
    start = time.monotonic()
    with collect_runs() as runs:
        reply = asyncio.run(guard.ainvoke(messages)) if use_async else guard.invoke(messages)
    elapsed = time.monotonic() - start
    meta = reply.response_metadata["smoothguard"]
    assert 1.4 < elapsed < 4.0  # the budget (1.5 s, room for a collector pause), not the 5 s candidate
    errors = [s["error"] for s in meta["samples"] if s["error"]]
    assert len(errors) == 1 and "no answer within the time budget of 1.5 s" in errors[0]
    assert meta["agreement"] == 1.0 and reply.content == FakeVLM().invoke(messages).content
    assert any("1 candidate(s) did not answer in time" in note for note in meta["notes"])
    tags = sorted(t for c in runs.traced_runs[0].child_runs for t in c.tags if t.startswith("smoothguard:sample:"))
    assert tags == [f"smoothguard:sample:{i}" for i in range(5)]  # one call per candidate, still child runs


def test_time_budget_without_a_quorum_raises_with_the_timeouts(image_b64):
    guard = ChatSmoothGuard(model=FakeVLM(latency=3.0), n_samples=3, seed=0, time_budget=0.3, max_concurrency=2)
    start = time.monotonic()
    with pytest.raises(GenerationError, match="only 0 of 3 candidates were answered") as caught:
        guard.invoke(_ask(_image_block(image_b64)))
    assert time.monotonic() - start < 2.5
    assert all(isinstance(cause, TimeoutError) for _, cause in caught.value.causes)
    text_only = ChatSmoothGuard(model=FakeVLM(latency=0.6), time_budget=0.1)  # a pass-through call has no budget
    assert text_only.invoke("Hello?").content


def test_failed_candidates_are_left_out_and_too_many_failures_raise(image_b64):
    messages = _ask(_image_block(image_b64))
    calls = iter(range(100))
    flaky = FakeVLM(fail_fn=lambda m: next(calls) % 3 == 0)  # 2 of 6 fail
    reply = ChatSmoothGuard(model=flaky, n_samples=6, seed=0, max_concurrency=1).invoke(messages)
    meta = reply.response_metadata["smoothguard"]
    assert sum(s["error"] is not None for s in meta["samples"]) == 2 and meta["agreement"] == 1.0
    assert "RuntimeError: FakeVLM failed on purpose" in next(s["error"] for s in meta["samples"] if s["error"])

    with pytest.raises(GenerationError, match="only 0 of 3"):
        ChatSmoothGuard(model=FakeVLM(fail_fn=lambda m: True), n_samples=3).invoke(messages)
    with pytest.raises(RuntimeError, match="on purpose"):  # pass-through: the model's own exception
        ChatSmoothGuard(model=FakeVLM(fail_fn=lambda m: True), n_samples=3).invoke("hi")


class _TriggeredVLM(FakeVLM):
    """Calls `transfer` with a hostile account only on the exact original image (an "adversarial" trigger)."""

    trigger: str = ""

    def _reply(self, messages, stop, kwargs):
        result = super()._reply(messages, stop, kwargs)
        message = result.generations[0].message
        if message.tool_calls:
            block = messages[-1].content[1]
            account = "attacker" if block["base64"] == self.trigger else "alice"
            call = {**message.tool_calls[0], "args": {"account": account}}
            result.generations[0].message = message.model_copy(update={"tool_calls": [call]})
        return result


@tool
def transfer(account: str) -> str:
    """Send money to an account."""
    return "done"


def test_tool_calls_are_voted_on_by_their_json(image_b64):
    inner = _TriggeredVLM(trigger=image_b64)
    guard = ChatSmoothGuard(model=inner, n_samples=5, seed=0).bind_tools([transfer], tool_choice="transfer")
    reply = guard.invoke(_ask(_image_block(image_b64), text="Pay the invoice in the image"))
    assert reply.tool_calls[0]["name"] == "transfer" and reply.tool_calls[0]["args"] == {"account": "alice"}
    meta = reply.response_metadata["smoothguard"]
    answers = [s["answer"] for s in meta["samples"]]
    assert json.loads(answers[0]) == [{"arguments": {"account": "attacker"}, "name": "transfer"}]
    assert sum('"alice"' in a for a in answers) == 4
    assert len(meta["clusters"]) == 2 or any("structured answers" in n for n in meta["notes"])

    chunks = list(guard.stream(_ask(_image_block(image_b64), text="Pay the invoice")))
    assert len(chunks) == 1 and chunks[0].chunk_position == "last"
    assert chunks[0].tool_calls[0]["args"] == {"account": "alice"}


def test_structured_output_through_bound_tools(image_b64):
    class Animal(BaseModel):
        """An animal."""

        species: str

    class Starts(BaseCallbackHandler):
        def __init__(self) -> None:
            self.seen: list[tuple] = []

        def on_chat_model_start(self, serialized, messages, *, run_id, parent_run_id=None, options=None, **kw):
            self.seen.append((run_id, parent_run_id, options))

    inner = FakeVLM()
    structured = ChatSmoothGuard(model=inner, n_samples=3, seed=0).with_structured_output(Animal)
    messages = _ask(_image_block(image_b64), text="Which 'cat' is it?")
    starts = Starts()
    assert structured.invoke(messages, config={"callbacks": [starts]}) == Animal(species="cat")
    # what langchain-tests' test_structured_output checks, minus its "exactly one start" (the candidates are
    # child runs): the guard's own start carries the schema, and every other start is one of its children
    runs = {s[0] for s in starts.seen}
    ((guard_run, _, options),) = [s for s in starts.seen if s[1] not in runs]  # the sequence's child
    assert options["ls_structured_output_format"]["schema"] == convert_to_json_schema(Animal)
    assert [s[1] for s in starts.seen if s[0] != guard_run] == [guard_run] * 3
    assert asyncio.run(structured.ainvoke(messages)) == Animal(species="cat")
    assert list(structured.stream(messages)) == [Animal(species="cat")]
    raw = ChatSmoothGuard(model=FakeVLM(), n_samples=3).with_structured_output(Animal, include_raw=True)
    out = raw.invoke(messages)
    assert out["parsed"] == Animal(species="cat") and "smoothguard" in out["raw"].response_metadata
    assert len(inner.inputs) == 9


def test_inner_calls_are_child_runs_with_tags_and_a_result_event(image_b64):
    guard = ChatSmoothGuard(model=FakeVLM(), n_samples=4, seed=0)
    results = SmoothGuardResults()
    with collect_runs() as runs:
        guard.invoke(_ask(_image_block(image_b64)), config={"callbacks": [results], "tags": ["mine"]})
    (root,) = runs.traced_runs
    assert root.name == "ChatSmoothGuard" and root.run_type == "llm"
    assert len(root.child_runs) == 4 and all(c.run_type == "llm" for c in root.child_runs)
    tags = sorted(t for c in root.child_runs for t in c.tags if t.startswith("smoothguard:sample:"))
    assert tags == [f"smoothguard:sample:{i}" for i in range(4)]
    assert all("mine" in c.tags and "nostream" in c.tags for c in root.child_runs)
    assert results.last["n_used"] == 4 and results.items[0][0] == root.id

    async def events():
        return [e async for e in guard.astream_events(_ask(_image_block(image_b64)), version="v2")]

    # stream consumers see the guard and its answer, never an unvoted candidate's events or tokens
    events_seen = asyncio.run(events())
    assert {e["name"] for e in events_seen if e["event"].startswith("on_chat_model")} == {"ChatSmoothGuard"}
    assert [e["event"] for e in events_seen].count("on_custom_event") == 1


def test_stream_is_one_final_chunk_with_metadata(image_b64):
    guard = ChatSmoothGuard(model=FakeVLM(), n_samples=3, seed=0)
    chunks = list(guard.stream(_ask(_image_block(image_b64))))
    assert len(chunks) == 1 and chunks[0].chunk_position == "last"
    assert chunks[0].response_metadata["smoothguard"]["n_used"] == 3

    async def collect():
        return [c async for c in guard.astream(_ask(_image_block(image_b64)))]

    (chunk,) = asyncio.run(collect())
    assert chunk.text.startswith("The image is dark")


def test_flag_policies(image_b64):
    answers = iter(["The image shows a cat.", "Stock prices fell sharply today."] * 10)
    split = {"model": FakeVLM(answer_fn=lambda m: next(answers)), "n_samples": 4, "seed": 0,
             "min_agreement": 0.9, "max_concurrency": 1}
    reply = ChatSmoothGuard(**split, on_flag="refuse", refusal_message="No reliable answer.").invoke(
        _ask(_image_block(image_b64)))
    assert reply.content == "No reliable answer." and reply.response_metadata["smoothguard"]["refused"]
    with pytest.raises(GuardFlagged) as info:
        ChatSmoothGuard(**split, on_flag="raise").invoke(_ask(_image_block(image_b64)))
    assert info.value.result.flagged


def test_settings_are_the_guard_config_validated_at_construction():
    for field in dataclasses.fields(GuardConfig):
        assert ChatSmoothGuard.model_fields[field.name].default == field.default, field.name
    guard = ChatSmoothGuard(model=FakeVLM(), sigma=0.2, n_samples=3, channel_std=[0.2, 0.2, 0.2])
    assert guard.guard_config == GuardConfig(sigma=0.2, n_samples=3, channel_std=(0.2, 0.2, 0.2))
    with pytest.raises(ConfigError, match="sigma"):
        ChatSmoothGuard(model=FakeVLM(), sigma=-1)
    with pytest.raises(ConfigError, match="on_flag"):
        ChatSmoothGuard(model=FakeVLM(), on_flag="ignore")
    with pytest.raises(ConfigError, match="did you mean 'n_samples'"):
        ChatSmoothGuard(model=FakeVLM(), n_sample=3)
    with pytest.raises(ConfigError, match="needs model="):
        ChatSmoothGuard(n_samples=3)
    with pytest.warns(UserWarning, match="ignores 'temperature'"):
        ChatSmoothGuard(model=FakeVLM(), temperature=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ChatSmoothGuard(model=FakeVLM(), streaming=True)


def test_configurable_fields_and_ls_params(image_b64):
    inner = FakeVLM()
    guard = ChatSmoothGuard(model=inner, n_samples=5, seed=0).configurable_fields(
        n_samples=ConfigurableField(id="sg_n"))
    guard.with_config(configurable={"sg_n": 2}).invoke(_ask(_image_block(image_b64)))
    assert len(inner.inputs) == 2
    assert ChatSmoothGuard(model=FakeVLM(profile={"image_inputs": True})).profile == {"image_inputs": True}
    params = ChatSmoothGuard(model=inner)._get_ls_params(stop=["x"])
    assert params == {"ls_provider": "smoothguard", "ls_model_type": "chat", "ls_model_name": "fake-vlm",
                      "ls_stop": ["x"]}


def test_seed_makes_requests_reproducible(image_b64):
    a, b = FakeVLM(), FakeVLM()
    ChatSmoothGuard(model=a, n_samples=3, seed=7).invoke(_ask(_image_block(image_b64)))
    ChatSmoothGuard(model=b, n_samples=3, seed=7).invoke(_ask(_image_block(image_b64)))
    assert sorted(x[-1].content[1]["base64"] for x in a.inputs) == sorted(x[-1].content[1]["base64"]
                                                                          for x in b.inputs)


def test_bad_media_and_remote_policies_through_the_model(media_server):
    guard = ChatSmoothGuard(model=FakeVLM(), n_samples=3)
    with pytest.raises(MediaError, match=r"messages\[0\]\.content\[1\] \(v1 image block\).*not valid base64"):
        guard.invoke(_ask({"type": "image", "base64": "@@@", "mime_type": "image/png"}))
    url = f"{media_server}/img.png"
    inner = FakeVLM()
    reply = ChatSmoothGuard(model=inner, n_samples=3, remote_media="passthrough").invoke(
        _ask({"type": "image_url", "image_url": {"url": url}}))
    meta = reply.response_metadata["smoothguard"]
    assert meta["passthrough"] and any("passed through unsmoothed" in n for n in meta["notes"])
    fetched = FakeVLM()
    reply = ChatSmoothGuard(model=fetched, n_samples=3, seed=0, allow_private_fetch=True).invoke(
        _ask({"type": "image_url", "image_url": {"url": url}}))
    assert reply.content.startswith("The image is bright") and len(fetched.inputs) == 3


def test_works_as_the_model_of_create_agent(image_b64):
    from langchain.agents import create_agent

    @tool
    def get_weather(location: str) -> str:
        """The weather at a location."""
        return f"It is sunny in {location}."

    inner = FakeVLM()
    agent = create_agent(model=ChatSmoothGuard(model=inner, n_samples=3, seed=0), tools=[get_weather])
    state = agent.invoke({"messages": _ask(_image_block(image_b64), text="Weather in 'Paris'? See the map.")})
    calls, tool_reply, final = state["messages"][1:]
    assert calls.tool_calls[0]["args"] == {"location": "Paris"} and tool_reply.content == "It is sunny in Paris."
    assert isinstance(final, AIMessage) and final.content == "The tool returned It is sunny in Paris.."
    assert len(inner.inputs) == 6  # 3 candidates for each of the two model steps
    assert final.response_metadata["smoothguard"]["n_used"] == 3
