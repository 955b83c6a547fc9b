"""Issue 18 item 5 for LlamaIndex: every candidate goes out at temperature 0 where the provider takes it, through
the real ``OpenAI`` / ``OpenAILike`` classes over HTTP to the local OpenAI-compatible stub."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage, ImageBlock, MessageRole, TextBlock
from llama_index.core.bridge.pydantic import Field
from llama_index.core.schema import ImageDocument

pytest.importorskip("llama_index.llms.openai")
pytest.importorskip("llama_index.llms.openai_like")
pytest.importorskip("uvicorn")
from fakes.openai_server import OpenAIStub
from llama_index.llms.openai import OpenAI
from llama_index.llms.openai_like import OpenAILike
from llamaindex_fakes import LegacyPixelMM, PixelLLM, png_bytes

from smoothguard_llamaindex import SmoothGuardLLM, SmoothGuardMultiModalLLM

N = 3
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def stub():
    with OpenAIStub() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(stub):
    stub.requests.clear()


def _ask(text: str = "Bright or dark?") -> list[ChatMessage]:
    return [ChatMessage(role=MessageRole.USER, blocks=[TextBlock(text=text), ImageBlock(image=png_bytes(200))])]


def _openai(stub, model: str = "gpt-4o-mini", **kwargs: Any) -> OpenAI:
    return OpenAI(model=model, api_base=stub.base_url, api_key="test", max_retries=0, **kwargs)


def _like(stub, **kwargs: Any) -> OpenAILike:
    return OpenAILike(model="stub-vlm", api_base=stub.base_url, api_key="test", is_chat_model=True,
                      context_window=32_000, max_retries=0, **kwargs)


def _temperatures(stub) -> list[Any]:
    return [r.body.get("temperature", "absent") for r in stub.requests]


def test_openai_candidates_go_out_at_temperature_zero(stub):
    guard = SmoothGuardLLM(llm=_openai(stub, temperature=0.7), n_samples=N, seed=0)
    response = guard.chat(_ask())
    assert response.additional_kwargs["smoothguard"]["n_used"] == N
    assert _temperatures(stub) == [0] * N
    assert all(r.image is not None for r in stub.requests)  # the candidates carried their (noisy) image
    assert guard.llm.temperature == 0.7  # the caller's model is not changed


async def test_openai_like_every_endpoint_is_greedy(stub):
    guard = SmoothGuardLLM(llm=_like(stub, temperature=0.9), n_samples=N, seed=0)
    await guard.achat(_ask())
    guard.complete("Bright or dark?", image_documents=[ImageDocument(image=png_bytes(200))])
    await guard.acomplete("Bright or dark?", image_documents=[ImageDocument(image=png_bytes(200))])
    list(guard.stream_chat(_ask()))
    guard.complete("No image here.")  # a text-only call is one pass-through call, greedy too
    assert _temperatures(stub) == [0] * (4 * N + 1)


def test_a_temperature_the_caller_passes_wins(stub):
    guard = SmoothGuardLLM(llm=_like(stub, temperature=0.9), n_samples=N, seed=0)
    guard.chat(_ask(), temperature=0.3)
    assert _temperatures(stub) == [0.3] * N
    stub.requests.clear()
    pinned = _like(stub, additional_kwargs={"temperature": 0.5})  # sent over call keywords by OpenAI itself
    SmoothGuardLLM(llm=pinned, n_samples=N, seed=0).chat(_ask())
    assert _temperatures(stub) == [0.5] * N


def test_a_reasoning_model_is_sent_no_temperature_zero_and_warned_about_once(stub):
    guard = SmoothGuardLLM(llm=_openai(stub, model="o3-mini"), n_samples=N, seed=0)
    with pytest.warns(UserWarning, match="no temperature 0 for 'o3-mini'"):
        guard.chat(_ask())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        guard.chat(_ask())
    assert len(stub.requests) == 2 * N and 0 not in _temperatures(stub)  # the class's own 1.0 goes out

    stub.requests.clear()
    SmoothGuardLLM(llm=_openai(stub, "gpt-5-chat-latest"), n_samples=N, seed=0).chat(_ask())  # takes 0
    assert _temperatures(stub) == [0] * N


def test_an_llm_without_temperature_is_used_as_it_is_with_one_warning():
    class NoTemperature(PixelLLM):  # a fresh class: the warning is once per model class
        pass

    inner = NoTemperature()
    guard = SmoothGuardLLM(llm=inner, n_samples=N, seed=0)
    with pytest.warns(UserWarning, match="cannot ask NoTemperature for greedy decoding"):
        guard.chat(_ask())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        guard.chat(_ask())


def test_legacy_multimodal_candidates_get_temperature_zero():
    class TemperatureMM(LegacyPixelMM):
        temperature: float = 0.8
        seen: list[Any] = Field(default_factory=list)

        def complete(self, prompt: str, image_documents: Any, **kwargs: Any) -> Any:
            self.seen.append(kwargs.get("temperature", "absent"))
            return super().complete(prompt, image_documents, **kwargs)

        async def acomplete(self, prompt: str, image_documents: Any, **kwargs: Any) -> Any:
            return self.complete(prompt, image_documents, **kwargs)

    inner = TemperatureMM()
    guard = SmoothGuardMultiModalLLM(llm=inner, n_samples=N, seed=0)
    guard.complete("Bright or dark?", [ImageDocument(image=png_bytes(200))])
    guard.complete("Bright or dark?", [ImageDocument(image=png_bytes(200))], temperature=0.2)
    assert inner.seen == [0] * N + [0.2] * N
