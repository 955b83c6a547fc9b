"""Test doubles for the reliability suite: models that read the media they are sent, and scripted failures.

* :class:`MediaChat` (LangChain) and :class:`MediaLLM` (LlamaIndex) decode the first image or clip of what
  they receive and answer ``script(call_number, media)``: a string, a message, or an exception to raise.
* :func:`stub_answer` is an :class:`~fakes.openai_server.OpenAIStub` answer function doing the same for the proxy.
* :func:`id_image` / :func:`read_id` write a request number into an image robustly enough to survive the
  guard's noise, so a concurrent test can check that every answer belongs to its own image.
"""

from __future__ import annotations

import asyncio
import base64
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from llama_index.core.base.llms.types import (
    AudioBlock,
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    CompletionResponseGen,
    ImageBlock,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.custom import CustomLLM
from pydantic import PrivateAttr as LcPrivateAttr

from smoothguard import Media

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))  # serve_support: ProxyServer

Script = Callable[[int, Media | None], Any]

ID_BITS = 8
_SIDE = 32


def describe(media: Media | None) -> str:
    """The default answer: the medium's shape, which noise never changes."""
    if media is None:
        return "There is no image or audio."
    if media.kind == "image":
        return f"An image of {media.width}x{media.height} pixels."
    return f"A clip of {media.data.shape[0]} frames at {media.sample_rate} Hz."


def id_image(number: int) -> Media:
    """A 32x32 image carrying ``number`` (< 256) as 8 horizontal stripes of 0.25 (bit 0) or 0.75 (bit 1)."""
    rows = np.repeat([(number >> bit) & 1 for bit in range(ID_BITS)], _SIDE // ID_BITS)
    pixels = np.broadcast_to((0.25 + 0.5 * rows)[:, None, None], (_SIDE, _SIDE, 3))
    return Media.image(np.ascontiguousarray(pixels, dtype=np.float32))


def read_id(media: Media) -> int:
    """The number :func:`id_image` wrote (each stripe's mean decides its bit, far above the noise)."""
    stripes = media.data.reshape(ID_BITS, -1).mean(axis=1)
    return int(sum(1 << bit for bit, level in enumerate(stripes) if level > 0.5))


def id_answer(media: Media) -> str:
    """``"Image number <n>, a <word> picture."``: ``n`` from :func:`read_id`, ``word`` from the noise on one pixel
    (the original, exactly 0.25 there, is "dim"), so one request's candidates disagree in wording."""
    word = "bright" if media.data[0, 0, 0] > 0.25 else "dim"
    return f"Image number {read_id(media)}, a {word} picture."


class IdBackend:
    """A Backend (``generate(prompt, variants)``) answering :func:`id_answer` for each variant's first image."""

    def __init__(self) -> None:
        self.calls = 0

    def generate(self, prompt: str, variants: Sequence[Sequence[Media]]) -> list[str]:
        self.calls += len(variants)
        return [id_answer(v[0]) for v in variants]

    async def agenerate(self, prompt: str, variants: Sequence[Sequence[Media]]) -> list[str]:
        return self.generate(prompt, variants)


# -- LangChain --------------------------------------------------------------------------------------------------


def _decode(kind: str, value: Any) -> Media:
    if isinstance(value, str) and value.startswith("data:"):
        return Media.image(value) if kind == "image" else Media.audio(value)
    raw = base64.b64decode(value)
    return Media.image(raw) if kind == "image" else Media.audio(raw)


def lc_first_media(messages: Sequence[BaseMessage]) -> Media | None:
    """The first image or clip in LangChain messages (v1, v0, OpenAI and Anthropic blocks)."""
    for message in messages:
        content = message.content
        if not isinstance(content, list):
            continue
        for block in content:
            if not isinstance(block, dict):
                continue
            kind = block.get("type")
            if kind == "image_url":
                inner = block["image_url"]
                return _decode("image", inner["url"] if isinstance(inner, dict) else inner)
            if kind == "input_audio":
                return _decode("audio", block["input_audio"]["data"])
            if kind in ("image", "audio"):
                source = block.get("source")
                if isinstance(source, dict):
                    return _decode(kind, source["data"])
                value = block.get("base64") or block.get("data") or block.get("url")
                return _decode(kind, value)
    return None


class MediaChat(BaseChatModel):
    """A chat model answering ``script(call number, first medium)`` (default: :func:`describe`)."""

    script: Script | None = None
    latency: float = 0.0

    _count: int = LcPrivateAttr(default=0)
    _lock: Any = LcPrivateAttr(default_factory=threading.Lock)
    _received: list = LcPrivateAttr(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "media-chat"

    @property
    def calls(self) -> int:
        return self._count

    @property
    def received(self) -> list[list[BaseMessage]]:
        """The messages of every call, in arrival order."""
        return list(self._received)

    def _next(self, messages: list[BaseMessage]) -> int:
        with self._lock:
            self._count += 1
            self._received.append(messages)
            return self._count - 1

    def _reply(self, messages: list[BaseMessage]) -> ChatResult:
        number = self._next(messages)
        media = lc_first_media(messages)
        out = self.script(number, media) if self.script is not None else describe(media)
        if isinstance(out, BaseException):
            raise out
        message = out if isinstance(out, BaseMessage) else AIMessage(content=out)
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        return self._reply(messages)

    async def _agenerate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                         **kwargs: Any) -> ChatResult:
        if self.latency:
            await asyncio.sleep(self.latency)
        return self._reply(messages)


# -- LlamaIndex -------------------------------------------------------------------------------------------------


def li_first_media(messages: Sequence[ChatMessage]) -> Media | None:
    """The first medium of the messages, as the model reads it; None when there is none, or when it is a remote URL
    the model cannot reach (one passed through unsmoothed: the fuzzed URLs point nowhere, and a model that cannot
    fetch them still answers)."""
    for message in messages:
        for block in message.blocks:
            if isinstance(block, ImageBlock | AudioBlock):
                remote = block.url is not None and str(block.url)[:5].lower() != "data:" and not (
                    block.image if isinstance(block, ImageBlock) else block.audio) and block.path is None
                try:
                    if isinstance(block, ImageBlock):
                        return Media.image(block.resolve_image().read())
                    return Media.audio(block.resolve_audio().read())
                except OSError:  # requests' errors are OSErrors: an unreachable URL
                    if remote:
                        return None
                    raise
    return None


class MediaLLM(CustomLLM):
    """A LlamaIndex chat model answering ``script(call number, first medium)`` (default: :func:`describe`).
    A script may return a ``ChatResponse`` (e.g. one without text) instead of a string."""

    script: Any = None
    latency: float = 0.0
    _count: int = PrivateAttr(default=0)
    _lock: Any = PrivateAttr(default_factory=threading.Lock)
    _received: list = PrivateAttr(default_factory=list)

    @property
    def calls(self) -> int:
        return self._count

    @property
    def received(self) -> list[list[ChatMessage]]:
        """The messages of every call, in arrival order."""
        return list(self._received)

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(is_chat_model=True, model_name="media-llm")

    def _answer(self, messages: Sequence[ChatMessage]) -> ChatResponse:
        with self._lock:
            number = self._count
            self._count += 1
            self._received.append(list(messages))
        media = li_first_media(messages)
        out = self.script(number, media) if self.script is not None else describe(media)
        if isinstance(out, BaseException):
            raise out
        if isinstance(out, ChatResponse):
            return out
        return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=out))

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._answer(messages)

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        if self.latency:
            await asyncio.sleep(self.latency)
        return self._answer(messages)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text=describe(None))

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        yield self.complete(prompt)


# -- the proxy's upstream ---------------------------------------------------------------------------------------


def body_media(body: dict[str, Any]) -> Media | None:
    """The first image or clip of an OpenAI chat request body."""
    for message in body.get("messages", []):
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for block in content:
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "image_url":
                inner = block["image_url"]
                return Media.image(inner["url"] if isinstance(inner, dict) else inner)
            if kind == "audio_url":
                return Media.audio(block["audio_url"]["url"])
            if kind == "input_audio":
                return Media.audio(base64.b64decode(block["input_audio"]["data"]))
    return None


def stub_answer(script: Callable[[Media | None], Any] = describe) -> Callable[[dict[str, Any], Any], Any]:
    """An ``OpenAIStub`` answer function: ``script(first medium of the body)``."""

    def answer(body: dict[str, Any], image: Any) -> Any:
        return script(body_media(body))

    return answer
