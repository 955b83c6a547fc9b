"""No leaks: 1,000 guarded requests in one process; resident memory grows < 50 MB after warm-up, and no file
descriptors, threads or temporary files are left behind.

RSS is read from ``/proc/self/statm``, descriptors from ``/proc/self/fd``, OS threads from ``/proc/self/status``.
The requests go through the real guard and the real embedder (the fake models' candidates disagree in wording, so
every request embeds and clusters; repeated answers come from the embedder's cache), through both adapters (with
path-form images, which write temporary files), through the proxy, and (``slow``) through a tiny random-weight
Hugging Face model. The core run is in the default suite; the others (about 50 s together) are ``slow``.
"""

from __future__ import annotations

import asyncio
import gc
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
from langchain_core.messages import HumanMessage
from llama_index.core.base.llms.types import ChatMessage, ImageBlock, MessageRole, TextBlock
from reliability_support import IdBackend, MediaChat, MediaLLM, body_media, id_answer, id_image

from smoothguard import GuardConfig, SmoothGuard
from smoothguard_langchain import ChatSmoothGuard
from smoothguard_llamaindex import SmoothGuardLLM

REQUESTS = 1000
WARMUP = 100
MAX_GROWTH_MB = 50.0
N = 5
PNGS = [id_image(i).to_png_bytes() for i in range(256)]


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def os_threads() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Threads:"))


def temp_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("smoothguard-*")}


def measure(name: str, one: Callable[[int], None], figures, *, requests: int = REQUESTS) -> dict:
    """Warm up, then run ``one(i)`` for i in 0..requests-1 and compare RSS, fds, threads and temp dirs."""
    for i in range(WARMUP):
        one(i)
    gc.collect()
    before = {"rss": rss_mb(), "fds": fd_count(), "threads": threading.active_count(), "os": os_threads(),
              "tmp": temp_dirs()}
    start = time.perf_counter()
    for i in range(requests):
        one(i)
    seconds = time.perf_counter() - start
    gc.collect()
    time.sleep(0.05)  # let finished worker threads exit
    after = {"rss": rss_mb(), "fds": fd_count(), "threads": threading.active_count(), "os": os_threads(),
             "tmp": temp_dirs()}
    growth = after["rss"] - before["rss"]
    figures(f"leaks [{name}]: {requests} requests in {seconds:.1f} s; RSS {before['rss']:.0f} -> {after['rss']:.0f} MB "
            f"({growth:+.1f} MB); fds {before['fds']} -> {after['fds']}; threads {before['threads']} -> "
            f"{after['threads']} (OS {before['os']} -> {after['os']}); temp dirs {len(before['tmp'])} -> "
            f"{len(after['tmp'])}")
    assert growth < MAX_GROWTH_MB, f"{name}: RSS grew by {growth:.1f} MB"
    assert after["fds"] <= before["fds"], f"{name}: file descriptors left open"
    assert after["threads"] <= before["threads"] and after["os"] <= before["os"], f"{name}: threads left behind"
    assert after["tmp"] <= before["tmp"], f"{name}: temporary directories left behind"
    return {"before": before, "after": after, "seconds": seconds}


def test_core_guard_with_the_real_embedder(figures) -> None:
    backend = IdBackend()
    guard = SmoothGuard(n_samples=N, seed=0)

    def one(i: int) -> None:
        result = guard.ask(backend, "Which image is this?", images=[PNGS[i % 256]])
        assert result.answer.startswith(f"Image number {i % 256},") and result.n_used == N

    measure("core SmoothGuard.ask, fake backend", one, figures)


@pytest.mark.slow
def test_core_async(figures) -> None:
    backend = IdBackend()
    guard = SmoothGuard(n_samples=N, seed=0)

    async def batch(start: int) -> None:
        results = await asyncio.gather(*(guard.aask(backend, "Which?", images=[PNGS[(start + k) % 256]])
                                         for k in range(50)))
        assert all(r.n_used == N for r in results)

    def one(i: int) -> None:
        if i % 50 == 0:
            asyncio.run(batch(i))

    measure("core SmoothGuard.aask, 50 gathered per loop", one, figures)


@pytest.mark.slow
def test_adapters(figures, tmp_path) -> None:
    chat = ChatSmoothGuard(model=MediaChat(script=lambda n, m: id_answer(m)), n_samples=N, seed=0)
    llm = SmoothGuardLLM(llm=MediaLLM(script=lambda n, m: id_answer(m)), n_samples=N, seed=0)
    paths = []
    for i in range(16):
        paths.append(tmp_path / f"img{i}.png")
        paths[-1].write_bytes(PNGS[i])
    import base64

    def one(i: int) -> None:
        k = i % 16
        if i % 2:
            block = {"type": "image", "base64": base64.b64encode(PNGS[k]).decode(), "mime_type": "image/png"}
            reply = chat.invoke([HumanMessage(content=[{"type": "text", "text": "Which?"}, block])]).content
        else:  # path form: the candidates are written to a private temp dir, removed after the call
            message = ChatMessage(role=MessageRole.USER, blocks=[TextBlock(text="Which?"), ImageBlock(path=paths[k])])
            reply = llm.chat([message]).message.content
        assert reply.startswith(f"Image number {k},")

    measure("ChatSmoothGuard.invoke + SmoothGuardLLM.chat (path images)", one, figures)


@pytest.mark.slow
def test_proxy(figures) -> None:
    from smoothguard.serve import create_app

    async def upstream(request: httpx.Request) -> httpx.Response:
        import json

        text = id_answer(body_media(json.loads(request.content)))
        return httpx.Response(200, json={"choices": [{"index": 0, "finish_reason": "stop",
                                                      "message": {"role": "assistant", "content": text}}]})

    app = create_app("http://upstream/v1", GuardConfig(n_samples=N, seed=0), transport=httpx.MockTransport(upstream),
                     warmup=False)
    import base64

    def body(k: int) -> dict:
        url = "data:image/png;base64," + base64.b64encode(PNGS[k]).decode()
        content = [{"type": "image_url", "image_url": {"url": url}}]
        return {"model": "m", "messages": [{"role": "user", "content": content}]}

    async def batch(start: int) -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://proxy") as client:
            responses = await asyncio.gather(*(client.post("/v1/chat/completions", json=body((start + k) % 256))
                                               for k in range(50)))
        assert all(r.status_code == 200 for r in responses)

    def one(i: int) -> None:
        if i % 50 == 0:
            asyncio.run(batch(i))

    measure("proxy (ASGI), 50 concurrent per loop", one, figures)


@pytest.mark.slow
def test_tiny_hf_model(figures) -> None:
    """1,000 guarded requests on a tiny random-weight LLaVA through the Hugging Face backend."""
    from fakes.tiny_models import tiny_llava

    from smoothguard.backends import HFVisionLanguageModel

    model, processor = tiny_llava()
    backend = HFVisionLanguageModel(model, processor, max_new_tokens=4)
    guard = SmoothGuard(n_samples=3, seed=0)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(32)]

    def one(i: int) -> None:
        assert guard.ask(backend, "Describe the image.", images=[images[i % 32]]).n_used == 3

    measure("tiny LLaVA (HF backend), n_samples=3", one, figures)
