"""SmoothGuardRunnable: any runnable, inside chains, every call style, exact dialects, runtime features."""

from __future__ import annotations

import asyncio
import copy
import json
import time

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import ConfigurableField, RunnableLambda
from langchain_core.tracers.context import collect_runs
from lc_fakes import FakeVLM, png_b64
from pydantic import BaseModel

from smoothguard.errors import ConfigError, GuardFlagged, MediaError
from smoothguard_langchain import SmoothGuardResults, SmoothGuardRunnable

PROMPT = ChatPromptTemplate.from_messages([
    ("system", "You describe images."),
    ("user", [{"type": "text", "text": "{question}"},
              {"type": "image_url", "image_url": "data:image/png;base64,{image}"}]),
])


def test_inside_prompt_guard_parser_with_every_call_style():
    inner = FakeVLM()
    chain = PROMPT | SmoothGuardRunnable(bound=inner, n_samples=3, seed=0) | StrOutputParser()
    dark = {"question": "How bright?", "image": png_b64(40)}
    bright = {"question": "How bright?", "image": png_b64(220)}
    results = SmoothGuardResults()
    assert chain.invoke(dark, config={"callbacks": [results]}).startswith("The image is dark")
    assert results.last["n_used"] == 3 and results.last["agreement"] == 1.0
    assert asyncio.run(chain.ainvoke(bright)).startswith("The image is bright")
    assert [a[:17] for a in chain.batch([dark, bright])] == ["The image is dark", "The image is brig"]
    assert [a[:17] for a in asyncio.run(chain.abatch([dark, bright]))] == ["The image is dark", "The image is brig"]
    assert "".join(chain.stream(dark)).startswith("The image is dark")

    async def collect():
        return [c async for c in chain.astream(bright)]

    assert "".join(asyncio.run(collect())).startswith("The image is bright")
    assert len(inner.inputs) == 3 * 8
    received = {m.messages[1].content[1]["image_url"]["url"] for m in inner.inputs[:3]}
    assert len(received) == 3 and f"data:image/png;base64,{dark['image']}" in received


def test_time_budget_leaves_a_slow_candidate_of_a_chain_out():
    inner = FakeVLM(latency_fn=lambda order: 5.0 if order == 0 else 0.0)
    chain = PROMPT | SmoothGuardRunnable(bound=inner, n_samples=4, seed=0, time_budget=1.5) | StrOutputParser()
    results = SmoothGuardResults()
    start = time.monotonic()
    answer = asyncio.run(chain.ainvoke({"question": "How bright?", "image": png_b64(220)},
                                       config={"callbacks": [results]}))
    assert time.monotonic() - start < 4.0 and answer.startswith("The image is bright")
    assert sum(bool(s["error"]) for s in results.last["samples"]) == 1 and results.last["n_used"] == 4


def test_guards_a_whole_chain_through_raw_media_keys():
    inner = FakeVLM()
    chain = PROMPT | inner | StrOutputParser()
    guarded = SmoothGuardRunnable(bound=chain, media_keys={"image": "image"}, n_samples=4, seed=0)
    value = {"question": "How bright?", "image": png_b64(40)}
    before = copy.deepcopy(value)
    assert guarded.invoke(value).startswith("The image is dark")
    assert value == before and len(inner.inputs) == 4
    assert len({m.messages[1].content[1]["image_url"]["url"] for m in inner.inputs}) == 4
    assert guarded.get_input_schema().model_json_schema()["required"] == ["image", "question"]
    with pytest.raises(MediaError, match=r"input\['image'\]"):
        guarded.invoke({"question": "?", "image": "not an image"})


@pytest.mark.parametrize("name", ["v1_image", "openai_image", "v0_image", "anthropic_image", "v1_audio",
                                  "openai_audio"])
def test_every_dialect_is_preserved_exactly(blocks, name):
    inner = FakeVLM()
    guard = SmoothGuardRunnable(bound=inner, n_samples=3, seed=0)
    messages = [HumanMessage(content=[{"type": "text", "text": "What is it?"}, blocks[name]])]
    before = copy.deepcopy(messages)
    reply = guard.invoke(messages)
    received = [m[0].content[1] for m in inner.inputs]
    assert messages[0].content[1] in received  # candidate 0: the original block
    assert len({json.dumps(b, sort_keys=True) for b in received}) == 3
    for block in received:  # same dialect: same type and the same keys, nested ones too
        assert block.keys() == messages[0].content[1].keys() and block["type"] == messages[0].content[1]["type"]
        for key in ("image_url", "input_audio", "source"):
            if key in block:
                assert block[key].keys() == messages[0].content[1][key].keys()
    assert messages == before and isinstance(reply, AIMessage) and "smoothguard" in reply.response_metadata


def test_messages_placeholder_dict_input_and_child_runs():
    image = {"type": "image", "base64": png_b64(40), "mime_type": "image/png"}
    prompt = ChatPromptTemplate.from_messages([MessagesPlaceholder("history")])
    guard = SmoothGuardRunnable(bound=prompt | FakeVLM(), n_samples=3, seed=0)
    with collect_runs() as runs:
        reply = guard.invoke({"history": [HumanMessage(content=[{"type": "text", "text": "Bright?"}, image])]})
    assert reply.content.startswith("The image is dark")
    (root,) = runs.traced_runs
    assert root.name == "SmoothGuardRunnable" and len(root.child_runs) == 3
    assert all(c.name == "RunnableSequence" and c.child_runs[1].run_type == "llm" for c in root.child_runs)
    assert sorted(t for c in root.child_runs for t in c.tags if t.startswith("smoothguard:")) == [
        "smoothguard:sample:0", "smoothguard:sample:1", "smoothguard:sample:2"]


def test_configurable_fields_retry_and_fallbacks():
    messages = [HumanMessage(content=[{"type": "image", "base64": png_b64(40), "mime_type": "image/png"}])]
    inner = FakeVLM()
    guard = SmoothGuardRunnable(bound=inner, n_samples=5, seed=0).configurable_fields(
        n_samples=ConfigurableField(id="sg_n"))
    guard.with_config(configurable={"sg_n": 2}).invoke(messages)
    assert len(inner.inputs) == 2

    attempts = iter(range(10))
    flaky = FakeVLM(fail_fn=lambda m: next(attempts) < 3)  # the first request fails entirely
    retried = SmoothGuardRunnable(bound=flaky, n_samples=3, seed=0, max_concurrency=1).with_retry(
        stop_after_attempt=2, wait_exponential_jitter=False)
    assert retried.invoke(messages).content.startswith("The image is dark")

    broken = SmoothGuardRunnable(bound=FakeVLM(fail_fn=lambda m: True), n_samples=3)
    backup = RunnableLambda(lambda x: AIMessage(content="backup"))
    assert broken.with_fallbacks([backup]).invoke(messages).content == "backup"


def test_structured_outputs_are_voted_on_as_json_and_refusals():
    class Animal(BaseModel):
        """An animal."""

        species: str

    messages = [HumanMessage(content=[{"type": "text", "text": "Which 'cat'?"},
                                      {"type": "image", "base64": png_b64(40), "mime_type": "image/png"}])]
    inner = FakeVLM()
    guard = SmoothGuardRunnable(bound=inner.with_structured_output(Animal), n_samples=3, seed=0)
    results = SmoothGuardResults()
    assert guard.invoke(messages, config={"callbacks": [results]}) == Animal(species="cat")
    assert json.loads(results.last["answer"]) == {"species": "cat"} and len(inner.inputs) == 3

    answers = iter(["A cat sits on a mat.", "Markets closed lower on Friday."] * 5)
    split = {"n_samples": 4, "seed": 0, "min_agreement": 0.9, "max_concurrency": 1, "on_flag": "refuse",
             "refusal_message": "No."}
    text_chain = SmoothGuardRunnable(bound=FakeVLM(answer_fn=lambda m: next(answers)) | StrOutputParser(), **split)
    assert text_chain.invoke(messages) == "No."
    dict_chain = SmoothGuardRunnable(bound=FakeVLM(answer_fn=lambda m: next(answers)) | (lambda m: {"t": m.text}),
                                     **split)
    with pytest.raises(GuardFlagged):
        dict_chain.invoke(messages)


def test_settings_are_validated():
    with pytest.raises(ConfigError, match="n_samples"):
        SmoothGuardRunnable(bound=FakeVLM(), n_samples=0)
    with pytest.raises(ConfigError, match="did you mean 'sigma'"):
        SmoothGuardRunnable(bound=FakeVLM(), sigmma=0.1)
