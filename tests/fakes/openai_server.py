"""A deterministic OpenAI-compatible chat server on 127.0.0.1, for real-HTTP tests.

It answers ``POST /v1/chat/completions`` (plain and ``stream: true``) and ``GET /v1/models``. The default
answer reads the pixels of the request's first image, so the noise SmoothGuard adds is observable;
``OpenAIStub(answer=answer_with_testbed(load_testbed()))`` serves the shipped testbed VLM instead:

    with OpenAIStub(latency=0.05) as stub:
        ChatOpenAI(base_url=stub.base_url, api_key="test", model="stub")
        ...
        stub.requests      # every request body received, with arrival/finish times and headers
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

__all__ = [
    "OpenAIStub",
    "RecordedRequest",
    "answer_with_testbed",
    "describe_brightness",
    "first_image",
    "png_data_url",
    "question_text",
]


@dataclass
class RecordedRequest:
    body: dict[str, Any]
    headers: dict[str, str]
    arrived: float
    finished: float = 0.0
    image: np.ndarray | None = field(default=None, repr=False)  # (H, W, 3) float in [0, 1], first image


def first_image(body: dict[str, Any]) -> np.ndarray | None:
    """The first ``image_url`` data-URL image in the request's messages, as (H, W, 3) floats in [0, 1]."""
    for message in body.get("messages", []):
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for block in content:
            if isinstance(block, dict) and block.get("type") == "image_url":
                url = block["image_url"]["url"] if isinstance(block["image_url"], dict) else block["image_url"]
                if url.startswith("data:"):
                    raw = base64.b64decode(url.split(",", 1)[1])
                    return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"), dtype=np.float32) / 255.0
    return None


def png_data_url(image: Image.Image) -> str:
    """``image`` as a PNG data URL (what :func:`first_image` reads back)."""
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return f"data:image/png;base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


def describe_brightness(body: dict[str, Any], image: np.ndarray | None) -> str:
    """The default answer: a sentence about the mean brightness of the first image (or a text reply)."""
    if image is None:
        return "There is no image in this request."
    level = float(image.mean())
    return f"The image is {'bright' if level > 0.5 else 'dark'}; its mean level is {round(level, 1)}."


def question_text(body: dict[str, Any]) -> str:
    """The text of the request's last user message (its text blocks joined by spaces)."""
    for message in reversed(body.get("messages", [])):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            return " ".join(b["text"] for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


def answer_with_testbed(backend: Any) -> Callable[[dict[str, Any], np.ndarray | None], Any]:
    """An ``answer`` callback that serves a testbed model (an ``HFVisionLanguageModel``): the last user text is
    the question, the first image the picture; one greedy generate per request, one at a time."""
    from smoothguard import Media

    lock = threading.Lock()

    def answer(body: dict[str, Any], image: np.ndarray | None) -> Any:
        if image is None:
            return ValueError("the testbed model answers questions about an image; send one")
        with lock:
            return backend.generate(question_text(body), [[Media.image(image)]])[0]

    return answer


class OpenAIStub:
    """Runs the server in a background thread (uvicorn) for the duration of a ``with`` block.

    answer(body, image) -> str | Exception: the reply text, or an exception to answer HTTP 500 instead (or the
    exception's ``status_code``, e.g. 429).
    latency: seconds each completion waits before answering (concurrent requests overlap), or a function of the
    request's arrival order (0 for the first request received) giving each its own latency.
    """

    def __init__(self, answer: Callable[[dict[str, Any], np.ndarray | None], Any] = describe_brightness,
                 latency: float | Callable[[int], float] = 0.0, model: str = "stub-vlm") -> None:
        self.answer = answer
        self.latency = latency
        self.model = model
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.port = _free_port()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def max_in_flight(self) -> int:
        """The most requests that were being served at the same moment."""
        events = sorted([(r.arrived, 1) for r in self.requests] + [(r.finished, -1) for r in self.requests])
        now = best = 0
        for _, step in events:
            now += step
            best = max(best, now)
        return best

    def __enter__(self) -> OpenAIStub:
        import uvicorn

        config = uvicorn.Config(self._app(), host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the OpenAI stub did not start within 10 s")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    async def _arrive(self, request: Any) -> tuple[RecordedRequest, int]:
        """Record a completion request and wait out its latency; (its record, its arrival order from 0)."""
        record = RecordedRequest(body=await request.json(), headers=dict(request.headers), arrived=time.monotonic())
        with self._lock:
            self.requests.append(record)
            order = len(self.requests) - 1
        record.image = first_image(record.body)
        latency = self.latency(order) if callable(self.latency) else self.latency
        if latency:
            await asyncio.sleep(latency)
        return record, order

    def _app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse, StreamingResponse
        from starlette.routing import Route

        async def completions(request: Request) -> Any:
            record, _ = await self._arrive(request)
            reply = self.answer(record.body, record.image)
            record.finished = time.monotonic()
            if isinstance(reply, Exception):
                return JSONResponse({"error": {"message": str(reply), "type": "server_error"}},
                                    status_code=getattr(reply, "status_code", 500))
            created = int(time.time())
            if record.body.get("stream"):
                return StreamingResponse(self._chunks(reply, created), media_type="text/event-stream")
            return JSONResponse({
                "id": f"chatcmpl-{len(self.requests)}", "object": "chat.completion", "created": created,
                "model": self.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": len(reply.split()),
                          "total_tokens": 10 + len(reply.split())},
            })

        async def models(request: Request) -> Any:
            return JSONResponse({"object": "list", "data": [{"id": self.model, "object": "model", "owned_by": "test"}]})

        return Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"]),
                                 Route("/v1/models", models, methods=["GET"])])

    def _chunks(self, reply: str, created: int) -> Any:
        async def stream() -> Any:
            for i, piece in enumerate([reply[: len(reply) // 2], reply[len(reply) // 2:], None]):
                delta = {"role": "assistant", "content": piece} if i == 0 else ({"content": piece} if piece else {})
                chunk = {"id": "chatcmpl-stream", "object": "chat.completion.chunk", "created": created,
                         "model": self.model,
                         "choices": [{"index": 0, "delta": delta, "finish_reason": None if piece else "stop"}]}
                yield f"data: {json.dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"

        return stream()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
