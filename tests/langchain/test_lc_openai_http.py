"""Real HTTP: ChatOpenAI (langchain-openai) against the local OpenAI-compatible stub, wrapped in ChatSmoothGuard."""

from __future__ import annotations

import asyncio

import numpy as np
from fakes.openai_server import OpenAIStub, answer_with_testbed, png_data_url
from langchain_core.messages import HumanMessage
from langchain_openai import ChatOpenAI
from lc_fakes import png_b64

from smoothguard_langchain import ChatSmoothGuard


def _request(image_b64: str) -> list[HumanMessage]:
    return [HumanMessage(content=[{"type": "text", "text": "How bright is this image?"},
                                  {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image_b64}"}}])]


def _urls(stub: OpenAIStub) -> list[str]:
    return [b["image_url"]["url"] for r in stub.requests for m in r.body["messages"] if isinstance(m["content"], list)
            for b in m["content"] if b.get("type") == "image_url"]


def test_chatopenai_candidates_arrive_concurrently_each_with_its_own_image():
    image = png_b64(200)
    with OpenAIStub(latency=0.3) as stub:
        llm = ChatOpenAI(base_url=stub.base_url, api_key="test", model="stub-vlm", max_retries=0, temperature=0)
        guard = ChatSmoothGuard(model=llm, n_samples=5, seed=0)
        reply = guard.invoke(_request(image))

        assert len(stub.requests) == 5 and stub.max_in_flight() == 5  # all five in flight together
        urls = _urls(stub)
        assert len(set(urls)) == 5 and f"data:image/png;base64,{image}" in urls  # candidate 0 is the input
        assert all(u.startswith("data:image/png;base64,") for u in urls)
        levels = [r.image.mean() for r in stub.requests]
        assert np.ptp(levels) < 0.02 and not all(np.array_equal(stub.requests[0].image, r.image)
                                                 for r in stub.requests[1:])
        assert reply.content == "The image is bright; its mean level is 0.8."
        meta = reply.response_metadata["smoothguard"]
        assert meta["n_used"] == 5 and meta["agreement"] == 1.0 and reply.response_metadata["model_name"] == "stub-vlm"
        assert reply.response_metadata["smoothguard_usage"]["total_tokens"] == 5 * (10 + 9)

        stub.requests.clear()
        reply = asyncio.run(guard.ainvoke(_request(png_b64(30))))
        assert reply.content.startswith("The image is dark") and stub.max_in_flight() == 5

        stub.requests.clear()
        chunks = list(guard.stream(_request(image)))
        assert len(chunks) == 1 and chunks[0].content.startswith("The image is bright")
        assert len(stub.requests) == 5


def test_chatopenai_guarding_the_testbed_model(testbed_main, testbed_questions, one_torch_thread):
    """ChatOpenAI against a local server that serves the shipped testbed VLM, wrapped in ChatSmoothGuard: the
    right answers come back, from N requests that each carry their own noisy copy."""
    with OpenAIStub(answer=answer_with_testbed(testbed_main), model="testbed") as stub:
        llm = ChatOpenAI(base_url=stub.base_url, api_key="test", model="testbed", max_retries=0, temperature=0)
        guard = ChatSmoothGuard(model=llm, n_samples=5, sigma=0.1, seed=0)
        for example in testbed_questions:
            stub.requests.clear()
            url = png_data_url(example.image)
            message = HumanMessage(content=[{"type": "text", "text": example.question},
                                            {"type": "image_url", "image_url": {"url": url}}])
            reply = guard.invoke([message])
            assert reply.content == example.answer, example.question
            urls = _urls(stub)
            assert len(urls) == 5 and url in urls and len(set(urls)) == 5
            meta = reply.response_metadata["smoothguard"]
            assert meta["n_used"] == 5 and meta["agreement"] >= 0.8
            assert reply.response_metadata["model_name"] == "testbed"
