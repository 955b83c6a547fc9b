"""Provider errors keep their type behind the guard (issue #18, item 3): ChatOpenAI over real HTTP to a local server
that answers 429 for a share of the calls."""

from __future__ import annotations

import asyncio
import itertools
import threading

import openai
import pytest
from fakes.openai_server import OpenAIStub, describe_brightness
from langchain_core.messages import HumanMessage
from langchain_openai import ChatOpenAI
from lc_fakes import png_b64

from smoothguard.errors import GenerationError
from smoothguard_langchain import ChatSmoothGuard


class TooManyRequests(Exception):
    status_code = 429


def _rate_limited(failing):
    """The stub's answer: HTTP 429 for the requests whose arrival number is in ``failing(number)``."""
    count, lock = itertools.count(), threading.Lock()

    def answer(body, image):
        with lock:
            number = next(count)
        return TooManyRequests("Rate limit reached, retry later") if failing(number) else describe_brightness(body,
                                                                                                            image)

    return answer


def _request() -> list[HumanMessage]:
    url = f"data:image/png;base64,{png_b64(200)}"
    return [HumanMessage(content=[{"type": "text", "text": "How bright is this image?"},
                                  {"type": "image_url", "image_url": {"url": url}}])]


def _guard(stub: OpenAIStub, n: int = 11) -> ChatSmoothGuard:
    llm = ChatOpenAI(base_url=stub.base_url, api_key="test", model="stub-vlm", max_retries=0, temperature=0)
    return ChatSmoothGuard(model=llm, n_samples=n, seed=0)


@pytest.mark.parametrize("use_async", [False, True])
def test_a_share_of_429s_is_answered_and_said_in_the_notes(use_async):
    with OpenAIStub(answer=_rate_limited(lambda number: number % 3 == 1)) as stub:  # 4 of 11: ~30%
        guard = _guard(stub)
        reply = asyncio.run(guard.ainvoke(_request())) if use_async else guard.invoke(_request())
    meta = reply.response_metadata["smoothguard"]
    assert reply.content.startswith("The image is bright") and len(stub.requests) == 11
    assert sum(s["error"] is not None for s in meta["samples"]) == 4
    # langchain-openai raises OpenAIRateLimitError, an openai.RateLimitError and a langchain-core ModelRateLimitError
    assert "4 of 11 candidates failed and were left out of the vote: OpenAIRateLimitError (HTTP 429) x4" \
        in meta["notes"], meta["notes"]


def test_all_429s_raise_openais_rate_limit_error_so_with_retry_and_with_fallbacks_fire():
    with OpenAIStub(answer=_rate_limited(lambda number: number < 5)) as stub:  # the first attempt's 5 calls
        guard = _guard(stub, n=5)
        with pytest.raises(openai.RateLimitError) as caught:
            guard.invoke(_request())
        error = caught.value
        assert isinstance(error, GenerationError) and error.status_code == 429 and len(error.causes) == 5
        assert all(isinstance(cause, openai.RateLimitError) for _, cause in error.causes)
        assert "only 0 of 5 candidates were answered" in str(error)

    with OpenAIStub(answer=_rate_limited(lambda number: number < 5)) as stub:
        retried = _guard(stub, n=5).with_retry(retry_if_exception_type=(openai.RateLimitError,),
                                                 stop_after_attempt=2, wait_exponential_jitter=False)
        assert retried.invoke(_request()).content.startswith("The image is bright")
        assert len(stub.requests) == 10  # one failed attempt, one answered

    with OpenAIStub(answer=_rate_limited(lambda number: True)) as limited, OpenAIStub() as spare:
        chain = _guard(limited, n=5).with_fallbacks([_guard(spare, n=5)],
                                                    exceptions_to_handle=(openai.RateLimitError,))
        assert asyncio.run(chain.ainvoke(_request())).content.startswith("The image is bright")
        assert len(spare.requests) == 5


def test_mixed_failures_stay_a_generation_error():
    def answer(body, image):  # one 429, the rest 500
        return TooManyRequests("slow down") if body["messages"][0]["content"][1]["image_url"]["url"] == first \
            else RuntimeError("the GPU fell over")

    first = _request()[0].content[1]["image_url"]["url"]  # candidate 0 carries the original image
    with OpenAIStub(answer=answer) as stub, pytest.raises(GenerationError) as caught:
        _guard(stub, n=3).invoke(_request())
    kinds = {type(cause).__mro__[1] for _, cause in caught.value.causes}
    assert kinds == {openai.RateLimitError, openai.InternalServerError}
    assert not isinstance(caught.value, openai.APIError)
