"""Concurrency: 200 guarded requests at once, each with its own image; every answer must be its own image's.

The fake models answer ``"Image number <n>, a <word> picture."``: ``n`` is read from the stripes of the image they
receive (see :func:`reliability_support.id_image`), ``word`` from the noise on one pixel, so the candidates of one
request disagree in wording and the shared embedder and clustering run for every request. Paths: the
ChatSmoothGuard ``abatch``, threads calling ``invoke``, ``SmoothGuardLLM.achat`` gathered, the proxy, and the
embedder itself from 8 threads at once.
"""

from __future__ import annotations

import asyncio
import base64
import re
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from langchain_core.messages import HumanMessage
from llama_index.core.base.llms.types import ChatMessage, ImageBlock, MessageRole, TextBlock
from reliability_support import MediaChat, MediaLLM, body_media, id_answer, id_image, read_id

from smoothguard import GuardConfig, SmoothGuard
from smoothguard.aggregate import get_embedder
from smoothguard_langchain import ChatSmoothGuard
from smoothguard_llamaindex import SmoothGuardLLM

REQUESTS = 200
N = 3
IMAGES = [id_image(i) for i in range(REQUESTS)]
PNGS = [image.to_png_bytes() for image in IMAGES]
NUMBER = re.compile(r"^Image number (\d+), a (bright|dim) picture\.$")


def script(number: int, media) -> str:
    return id_answer(media)


def _check(i: int, text: str, meta: dict) -> None:
    match = NUMBER.match(text)
    assert match, text
    assert int(match.group(1)) == i, f"request {i} got the answer of image {match.group(1)}"
    assert meta["n_used"] == N and not meta["passthrough"] and all(s["error"] is None for s in meta["samples"])


def _lc_input(i: int) -> list:
    block = {"type": "image", "base64": base64.b64encode(PNGS[i]).decode(), "mime_type": "image/png"}
    return [HumanMessage(content=[{"type": "text", "text": "Which image is this?"}, block])]


def test_ids_survive_the_noise() -> None:
    guard = SmoothGuard(n_samples=8, sigma=0.2, seed=1)
    for i in (0, 1, 127, 199, 255):
        assert all(read_id(v[0]) == i for v in guard.perturb([id_image(i)]))


async def test_chat_smoothguard_abatch() -> None:
    inner = MediaChat(script=script, latency=0.005)
    guard = ChatSmoothGuard(model=inner, n_samples=N, seed=0)
    replies = await guard.abatch([_lc_input(i) for i in range(REQUESTS)], config={"max_concurrency": REQUESTS})
    for i, reply in enumerate(replies):
        _check(i, reply.content, reply.response_metadata["smoothguard"])
    assert inner.calls == REQUESTS * N


def test_chat_smoothguard_invoke_from_threads() -> None:
    inner = MediaChat(script=script)
    guard = ChatSmoothGuard(model=inner, n_samples=N, seed=0)
    order = list(np.random.default_rng(0).permutation(REQUESTS))
    with ThreadPoolExecutor(max_workers=16) as pool:
        replies = dict(zip(order, pool.map(lambda i: guard.invoke(_lc_input(i)), order), strict=True))
    for i in range(REQUESTS):
        _check(i, replies[i].content, replies[i].response_metadata["smoothguard"])
    assert inner.calls == REQUESTS * N


async def test_smoothguard_llm_achat_gathered() -> None:
    inner = MediaLLM(script=script, latency=0.005)
    llm = SmoothGuardLLM(llm=inner, n_samples=N, seed=0)

    def messages(i: int) -> list[ChatMessage]:
        return [ChatMessage(role=MessageRole.USER, blocks=[TextBlock(text="Which image is this?"),
                                                           ImageBlock(image=PNGS[i])])]

    replies = await asyncio.gather(*(llm.achat(messages(i)) for i in range(REQUESTS)))
    for i, reply in enumerate(replies):
        _check(i, reply.message.content, reply.additional_kwargs["smoothguard"])
    assert inner.calls == REQUESTS * N


async def test_proxy_concurrent_requests() -> None:
    from smoothguard.serve import create_app

    async def upstream(request: httpx.Request) -> httpx.Response:
        import json

        await asyncio.sleep(0.002)
        text = id_answer(body_media(json.loads(request.content)))
        return httpx.Response(200, json={"choices": [{"index": 0, "finish_reason": "stop",
                                                      "message": {"role": "assistant", "content": text}}]})

    app = create_app("http://upstream/v1", GuardConfig(n_samples=N, seed=0), transport=httpx.MockTransport(upstream),
                     warmup=False)

    def body(i: int) -> dict:
        url = "data:image/png;base64," + base64.b64encode(PNGS[i]).decode()
        return {"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "Which image is this?"}, {"type": "image_url", "image_url": {"url": url}}]}]}

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://proxy",
                                 timeout=60) as client:
        responses = await asyncio.gather(*(client.post("/v1/chat/completions", json=body(i))
                                           for i in range(REQUESTS)))
    for i, response in enumerate(responses):
        data = response.json()
        assert response.status_code == 200, data
        _check(i, data["choices"][0]["message"]["content"], data["smoothguard"])


def test_shared_embedder_from_8_threads() -> None:
    """8 threads encode and aggregate at once through the one process-wide embedder: no error, same vectors."""
    embedder = get_embedder(GuardConfig().embedder)
    words = ["the", "cat", "sat", "on", "a", "red", "mat", "today"]
    texts = [[f"thread {t} sentence {k}: {w}" for k, w in enumerate(words)] for t in range(8)]
    barrier = threading.Barrier(8)
    results: dict[int, tuple] = {}
    errors: list[BaseException] = []
    guard = SmoothGuard(n_samples=N, seed=0)

    def answers(t: int) -> list[str]:
        return [f"Picture {t} shows a small cat on a red chair.", f"Picture {t} shows a small cat on a chair.",
                "I'm sorry, but I can't tell what is in this image."]

    def work(t: int) -> None:
        try:
            barrier.wait(timeout=30)
            vectors = [embedder.encode(texts[t]) for _ in range(3)]
            results[t] = (vectors, guard.aggregate(answers(t)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors and len(results) == 8
    embedder.clear_cache()
    for t, (vectors, verdict) in results.items():
        alone = embedder.encode(texts[t])
        assert all(np.allclose(v, alone, atol=1e-5) for v in vectors)
        assert verdict.labels == guard.aggregate(answers(t)).labels and "cat" in verdict.answer


@pytest.mark.parametrize("workers", [8])
def test_guard_instance_shared_by_threads(workers: int) -> None:
    """One SmoothGuard serves many threads: seeded requests give the same result alone or concurrently."""
    guard = SmoothGuard(n_samples=N, seed=3)

    def one(i: int):
        return guard.run([IMAGES[i]], lambda variants: [id_answer(v[0]) for v in variants])

    alone = [one(i) for i in range(40)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        together = list(pool.map(one, range(40)))
    for a, b in zip(alone, together, strict=True):
        assert (a.answer, a.answers, a.agreement) == (b.answer, b.answers, b.agreement)
