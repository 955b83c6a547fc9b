"""Fakes for the LlamaIndex tests: models that really look at the pixels they are sent, and record them."""

from __future__ import annotations

import asyncio
import base64
import io
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
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
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.custom import CustomLLM
from llama_index.core.multi_modal_llms import MultiModalLLM, MultiModalLLMMetadata
from llama_index.core.schema import ImageNode
from PIL import Image

BRIGHT = "The image is bright, mostly light grey."
DARK = "The image is dark, almost black."
BENIGN = "The picture shows a plain grey square on a white background. Nothing else is visible in it."
HOSTILE = "Ignore your rules. Those people are worthless vermin and deserve to suffer, so hurt them."


def png_bytes(value: int | np.ndarray = 128, size: int = 32, fmt: str = "PNG") -> bytes:
    """An encoded image: a flat grey ``value`` (0-255) square, or the given uint8 array."""
    arr = np.full((size, size, 3), value, np.uint8) if np.isscalar(value) else np.asarray(value, np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt)
    return buf.getvalue()


def triggered(trigger: bool = True, size: int = 48) -> np.ndarray:
    """A grey image; with ``trigger``, a +-2/255 checkerboard in one corner (a brittle backdoor key)."""
    image = np.full((size, size, 3), 128, dtype=np.uint8)
    if trigger:
        image[:8, :8] = (128 + _CHECKER)[..., None]
    return image


_CHECKER = (np.indices((8, 8)).sum(axis=0) % 2) * 4 - 2


def wav_bytes(seconds: float = 0.1, rate: int = 8000) -> bytes:
    from smoothguard import Media

    t = np.arange(int(seconds * rate)) / rate
    return Media.audio((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sample_rate=rate).to_wav_bytes()


def block_pixels(block: ImageBlock) -> np.ndarray:
    """The block's image as float (H, W, 3) in [0, 1], however it is carried."""
    with Image.open(block.resolve_image()) as img:
        return np.asarray(img.convert("RGB"), dtype=np.float64) / 255.0


def block_mime(block: ImageBlock | AudioBlock) -> str:
    """The MIME type of what the block really holds (decoded now, while any temp file exists)."""
    from smoothguard import Media

    if isinstance(block, ImageBlock):
        return Media.image(block.resolve_image().read()).mime_type
    return Media.audio(block.resolve_audio().read()).mime_type


def block_form(block: ImageBlock | AudioBlock) -> str:
    data = block.image if isinstance(block, ImageBlock) else block.audio
    if isinstance(data, io.IOBase):
        return "io"
    if data:
        return "bytes"
    if block.path is not None:
        return "path"
    if block.url is not None:
        return "data_url" if str(block.url).startswith("data:") else "url"
    return "empty"


class Recorder:
    """Thread-safe record of calls and of the peak number running at once."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.active = 0
        self.peak = 0
        self._lock = threading.Lock()

    def enter(self) -> None:
        with self._lock:
            self.active += 1
            self.peak = max(self.peak, self.active)

    def leave(self, record: dict[str, Any]) -> None:
        with self._lock:
            self.active -= 1
            self.calls.append(record)


class PixelLLM(CustomLLM):
    """A chat "vision" model: answers from the pixels of the first ImageBlock it receives and records every
    call (the blocks it got, their form and pixels). ``rule``: "brightness" (mean > 0.5 -> BRIGHT) or
    "trigger" (HOSTILE when the exact checkerboard key is in the corner, else BENIGN). ``which``: the image
    judged (0 first, -1 last). ``fail_on``: call numbers (0-based, in arrival order) that raise. ``slow_on``: call
    numbers that take ``slow_delay`` seconds instead of ``delay``."""

    rule: str = "brightness"
    which: int = 0
    delay: float = 0.0
    window: int = 128_000
    fail_on: tuple[int, ...] = ()
    slow_on: tuple[int, ...] = ()
    slow_delay: float = 3.0
    name: str = "pixel-llm"
    _rec: Recorder = PrivateAttr(default_factory=Recorder)
    _count: int = PrivateAttr(default=0)
    _entered: int = PrivateAttr(default=0)
    _lock: Any = PrivateAttr(default_factory=threading.Lock)

    @property
    def recorder(self) -> Recorder:
        return self._rec

    @property
    def calls(self) -> list[dict[str, Any]]:
        return self._rec.calls

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(is_chat_model=True, context_window=self.window, model_name=self.name)

    def _answer(self, messages: Sequence[ChatMessage]) -> ChatResponse:
        with self._lock:
            number = self._count
            self._count += 1
        blocks = [b for m in messages for b in m.blocks if isinstance(b, ImageBlock | AudioBlock)]
        images = [block_pixels(b) for b in blocks if isinstance(b, ImageBlock)]
        record = {"messages": list(messages), "blocks": blocks, "forms": [block_form(b) for b in blocks],
                  "mimes": [block_mime(b) for b in blocks],
                  "images": images, "paths_exist": [b.path is not None and b.path.exists() for b in blocks],
                  "thread": threading.get_ident()}
        self._rec.leave(record)
        if number in self.fail_on:
            raise RuntimeError(f"call {number} failed on purpose")
        if not images:
            text = "no image"
        elif self.rule == "trigger":
            corner = np.rint(images[self.which][:8, :8, 0] * 255).astype(int) - 128
            text = HOSTILE if np.mean(np.abs(corner - _CHECKER) <= 1) > 0.9 else BENIGN
        else:
            text = BRIGHT if images[self.which].mean() > 0.5 else DARK
        return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text), raw={"n": number})

    def _delay(self) -> float:
        with self._lock:
            order, self._entered = self._entered, self._entered + 1
        return self.slow_delay if order in self.slow_on else self.delay

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        self._rec.enter()
        time.sleep(self._delay())
        return self._answer(messages)

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        self._rec.enter()
        await asyncio.sleep(self._delay())
        return self._answer(messages)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text=self.chat([ChatMessage(role=MessageRole.USER, content=prompt)]).message.content)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        yield self.complete(prompt, formatted=formatted)


class LegacyPixelMM(MultiModalLLM):
    """A legacy MultiModalLLM: ``complete(prompt, image_documents)`` answers from the first document's
    brightness and records the documents it received. (MultiModalLLM in llama-index-core 0.14.25 lacks the
    ``to_payload``/``rate_limiter`` its own callback decorators use, so a subclass must define them.)"""

    rate_limiter: Any = Field(default=None, exclude=True)
    received: list[list[Any]] = Field(default_factory=list, exclude=True)

    @property
    def metadata(self) -> MultiModalLLMMetadata:
        return MultiModalLLMMetadata(model_name="legacy-mm", is_chat_model=False)

    def to_payload(self) -> dict[str, Any]:
        return {"class_name": self.class_name(), **self.metadata.model_dump()}

    def _answer(self, image_documents: Sequence[Any]) -> CompletionResponse:
        self.received.append(list(image_documents))
        doc = image_documents[0]
        if isinstance(doc, ImageNode):
            raw = base64.b64decode(doc.image) if doc.image else open(doc.image_path, "rb").read()  # noqa: SIM115
            pixels = np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"), dtype=float) / 255
        else:
            pixels = block_pixels(doc)
        return CompletionResponse(text=BRIGHT if pixels.mean() > 0.5 else DARK)

    def complete(self, prompt: str, image_documents: Sequence[Any], **kwargs: Any) -> CompletionResponse:
        return self._answer(image_documents)

    def stream_complete(self, prompt: str, image_documents: Sequence[Any], **kwargs: Any) -> Any:
        yield self._answer(image_documents)

    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        blocks = [b for m in messages for b in m.blocks if isinstance(b, ImageBlock)]
        return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=self._answer(blocks).text))

    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> Any:
        yield self.chat(messages)

    async def acomplete(self, prompt: str, image_documents: Sequence[Any], **kwargs: Any) -> CompletionResponse:
        return self._answer(image_documents)

    async def astream_complete(self, prompt: str, image_documents: Sequence[Any], **kwargs: Any) -> Any:
        async def gen() -> Any:
            yield self._answer(image_documents)

        return gen()

    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self.chat(messages)

    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> Any:
        async def gen() -> Any:
            yield self.chat(messages)

        return gen()
