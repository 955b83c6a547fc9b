"""Test doubles for the LangChain integration: a scripted multimodal chat model that records what it receives.

FakeVLM really reads its input: the answer describes the first image's mean brightness (or the first audio
clip's loudness), tools bound with ``bind_tools`` are called with arguments taken from the question, ``stop``
cuts the answer, ``model=`` overrides the reported model name, and usage metadata is reported. ``invoke`` /
``ainvoke`` record the raw input (before langchain-core normalises blocks) and track how many calls overlap.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import threading
import time
import uuid
import wave
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.utils.function_calling import convert_to_openai_tool
from PIL import Image
from pydantic import PrivateAttr

from smoothguard import Media


class FakeVLM(BaseChatModel):
    """Scripted vision/audio chat model (see module docstring). ``latency`` in seconds per call, or
    ``latency_fn(k)`` for the k-th call to start (from 0)."""

    latency: float = 0.0
    latency_fn: Callable[[int], float] | None = None
    model_name: str = "fake-vlm"
    answer_fn: Callable[[list[BaseMessage]], str] | None = None
    fail_fn: Callable[[list[BaseMessage]], bool] | None = None

    _inputs: list[Any] = PrivateAttr(default_factory=list)
    _lock: Any = PrivateAttr(default_factory=threading.Lock)
    _now: int = PrivateAttr(default=0)
    _peak: int = PrivateAttr(default=0)
    _started: int = PrivateAttr(default=0)

    @property
    def _llm_type(self) -> str:
        return "fake-vlm"

    @property
    def inputs(self) -> list[Any]:
        """Every input passed to invoke/ainvoke, in arrival order."""
        return list(self._inputs)

    @property
    def max_in_flight(self) -> int:
        return self._peak

    def invoke(self, input: Any, config: Any = None, **kwargs: Any) -> Any:
        with self._lock:
            self._inputs.append(input)
        return super().invoke(input, config, **kwargs)

    async def ainvoke(self, input: Any, config: Any = None, **kwargs: Any) -> Any:
        with self._lock:
            self._inputs.append(input)
        return await super().ainvoke(input, config, **kwargs)

    @contextmanager
    def _flight(self):
        with self._lock:
            self._now += 1
            self._peak = max(self._peak, self._now)
            order, self._started = self._started, self._started + 1
        try:
            yield self.latency_fn(order) if self.latency_fn is not None else self.latency
        finally:
            with self._lock:
                self._now -= 1

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        with self._flight() as latency:
            if latency:
                time.sleep(latency)
        return self._reply(messages, stop, kwargs)

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                         **kwargs: Any) -> ChatResult:
        with self._flight() as latency:
            if latency:
                await asyncio.sleep(latency)
        return self._reply(messages, stop, kwargs)

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: Any = None, **kwargs: Any) -> Any:
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], tool_choice=tool_choice, **kwargs)

    def _reply(self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]) -> ChatResult:
        if self.fail_fn is not None and self.fail_fn(messages):
            raise RuntimeError("FakeVLM failed on purpose")
        meta = {"model_name": kwargs.get("model") or self.model_name}
        tools = kwargs.get("tools") or []
        choice = kwargs.get("tool_choice")
        if tools and choice != "none" and not isinstance(messages[-1], ToolMessage):
            call = _tool_call(tools, choice, _question(messages))
            message = AIMessage(content="", tool_calls=[call], response_metadata=meta,
                                usage_metadata=_usage(json.dumps(call["args"])))
        else:
            text = self.answer_fn(messages) if self.answer_fn else describe(messages)
            for s in stop or []:
                text = text.split(s)[0] or text
            message = AIMessage(content=text, response_metadata=meta, usage_metadata=_usage(text))
        return ChatResult(generations=[ChatGeneration(message=message)])


def _usage(text: str) -> dict[str, int]:
    out = max(1, len(text.split()))
    return {"input_tokens": 10, "output_tokens": out, "total_tokens": 10 + out}


def _question(messages: list[BaseMessage]) -> str:
    for m in reversed(messages):
        if isinstance(m, HumanMessage):
            return m.text
    return ""


def _tool_call(tools: list[dict[str, Any]], choice: Any, text: str) -> dict[str, Any]:
    names = [t["function"]["name"] for t in tools]
    if isinstance(choice, dict):
        choice = choice.get("function", {}).get("name")
    name = choice if isinstance(choice, str) and choice in names else next((n for n in names if n in text), names[0])
    params = next(t for t in tools if t["function"]["name"] == name)["function"].get("parameters", {})
    quoted = re.findall(r"'([^']+)'|\"([^\"]+)\"", text)
    string = next((a or b for a, b in quoted), "text")
    number = re.search(r"-?\d+", text)
    values = {"integer": int(number.group()) if number else 1, "number": float(number.group()) if number else 1.0,
              "string": string, "boolean": True, "array": [], "object": {}}
    args = {key: values.get(spec.get("type", "string"), string)
            for key, spec in params.get("properties", {}).items()}
    return {"name": name, "args": args, "id": f"call_{uuid.uuid4().hex[:12]}", "type": "tool_call"}


def first_media(messages: list[Any]) -> Media | None:
    """The first image or audio clip in ``messages`` (any dialect langchain-core knows), decoded."""
    for m in messages:
        content = m.content if isinstance(m, BaseMessage) else None
        if not isinstance(content, list):
            continue
        for block in m.content_blocks:
            if block.get("type") == "image" and block.get("base64"):
                return Media.image(base64.b64decode(block["base64"]))
            if block.get("type") == "image" and str(block.get("url", "")).startswith("data:"):
                return Media.image(block["url"])
            if block.get("type") == "audio" and block.get("base64"):
                return Media.audio(base64.b64decode(block["base64"]))
        for block in content:
            if isinstance(block, dict) and block.get("type") == "image_url":
                url = block["image_url"]["url"] if isinstance(block["image_url"], dict) else block["image_url"]
                if url.startswith("data:"):
                    return Media.image(url)
    return None


def describe(messages: list[BaseMessage]) -> str:
    """The default answer: about the first image's brightness or the first clip's loudness, else a greeting."""
    if isinstance(messages[-1], ToolMessage):
        return f"The tool returned {messages[-1].text}."
    media = first_media(messages)
    if media is None:
        return f"Hello! You said: {_question(messages) or 'nothing'}"
    if media.kind == "image":
        level = float(media.data.mean())
        return f"The image is {'bright' if level > 0.5 else 'dark'}; its mean level is {round(level, 1)}."
    rms = float(np.sqrt(np.mean(np.square(media.data))))
    return f"The clip is {'loud' if rms > 0.1 else 'quiet'}."


# -- media helpers ----------------------------------------------------------------------------------------------


def png_b64(level: int = 128, size: int = 32, seed: int | None = None) -> str:
    """A ``size`` x ``size`` grey PNG (uint8 ``level``; with ``seed``, a random texture) as base64."""
    if seed is None:
        pixels = np.full((size, size, 3), level, dtype=np.uint8)
    else:
        pixels = np.random.default_rng(seed).integers(60, 200, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def wav_b64(amplitude: float = 0.3, seconds: float = 0.1, rate: int = 16000) -> str:
    """A mono 16-bit WAV sine (440 Hz) as base64."""
    t = np.arange(int(seconds * rate)) / rate
    samples = (amplitude * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return base64.b64encode(buf.getvalue()).decode("ascii")


def decode_b64_image(b64: str) -> np.ndarray:
    """(H, W, 3) float pixels in [0, 1] of base64 image bytes."""
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"), dtype=np.float64) / 255
