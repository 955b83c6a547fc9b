"""SmoothGuardMultiModalLLM: the guard around a legacy LlamaIndex ``MultiModalLLM``.

Legacy models take ``complete(prompt, image_documents)``; the current path is an ``LLM`` with
``ImageBlock`` content, for which use :class:`~smoothguard_llamaindex.SmoothGuardLLM`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
)
from llama_index.core.bridge.pydantic import Field
from llama_index.core.multi_modal_llms import MultiModalLLM, MultiModalLLMMetadata

from smoothguard_llamaindex.base import GuardedLLMBase
from smoothguard_llamaindex.blocks import DocumentMedia, image_fit
from smoothguard_llamaindex.guarded import aone_chunk, one_chunk, with_metadata
from smoothguard_llamaindex.vote_text import completion_text

__all__ = ["SmoothGuardMultiModalLLM"]


class SmoothGuardMultiModalLLM(GuardedLLMBase, MultiModalLLM):
    """Wraps a legacy ``MultiModalLLM``: ``complete(prompt, image_documents)``, ``chat(messages)`` and their
    stream/async siblings are answered ``n_samples`` times on noisy copies of the images (the original first)
    and the answer of the winning cluster is returned.

    ``SmoothGuardMultiModalLLM(llm=inner, guard_config=None, **settings)``: settings as for
    :class:`~smoothguard_llamaindex.SmoothGuardLLM` (every :class:`~smoothguard.GuardConfig` field). Image
    documents (``ImageNode``/``ImageDocument``/``ImageBlock``) keep their form (:mod:`smoothguard_llamaindex.blocks`).
    ``MultiModalLLM`` itself applies the LlamaIndex callback decorators to every endpoint. Streaming endpoints
    yield the chosen answer as one chunk once the vote is done.
    """

    llm: MultiModalLLM = Field(description="The wrapped multimodal LLM; every candidate is one call to it.")
    rate_limiter: Any | None = Field(default=None, exclude=True,
                                     description="Rate limiter applied once per guarded call.")

    _wraps = (MultiModalLLM,)
    _wrong_llm = ("SmoothGuardMultiModalLLM wraps a llama_index MultiModalLLM (llm=...); for an LLM with "
                  "ImageBlock content use SmoothGuardLLM, got {name}")

    @classmethod
    def class_name(cls) -> str:
        return "SmoothGuardMultiModalLLM"

    @property
    def metadata(self) -> MultiModalLLMMetadata:
        """The inner model's metadata with ``model_name`` ``smoothguard[<name>]``."""
        inner = self.llm.metadata
        return inner.model_copy(update={"model_name": f"smoothguard[{inner.model_name}]"})

    def to_payload(self) -> dict[str, Any]:
        """Non-sensitive description for instrumentation events (class name and metadata)."""
        return {"class_name": self.class_name(), **self.metadata.model_dump()}

    # -- endpoints (MultiModalLLM.__init_subclass__ applies the callback decorators) ---------------------------

    def complete(self, prompt: str, image_documents: Sequence[Any], **kwargs: Any) -> CompletionResponse:
        """Guarded completion: one inner ``complete(prompt, noisy documents)`` per candidate."""
        return self._complete(prompt, image_documents, kwargs, "complete")

    def stream_complete(self, prompt: str, image_documents: Sequence[Any], **kwargs: Any) -> CompletionResponseGen:
        """Votes first, then yields the chosen completion as one chunk (full ``delta``)."""
        return one_chunk(self._complete(prompt, image_documents, kwargs, "stream_complete"))

    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Guarded chat over the ImageBlocks/AudioBlocks of ``messages``."""
        return self._chat(messages, kwargs, "chat")

    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        """Votes first, then yields the chosen response as one chunk (full ``delta``)."""
        return one_chunk(self._chat(messages, kwargs, "stream_chat"))

    async def acomplete(self, prompt: str, image_documents: Sequence[Any], **kwargs: Any) -> CompletionResponse:
        """Async guarded completion (inner ``acomplete`` calls gathered, bounded by ``max_concurrency``)."""
        return await self._acomplete(prompt, image_documents, kwargs, "acomplete")

    async def astream_complete(self, prompt: str, image_documents: Sequence[Any],
                               **kwargs: Any) -> CompletionResponseAsyncGen:
        """Votes first, then yields the chosen completion as one chunk (full ``delta``)."""
        return aone_chunk(await self._acomplete(prompt, image_documents, kwargs, "astream_complete"))

    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Async guarded chat."""
        return await self._achat(messages, kwargs, "achat")

    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        """Votes first, then yields the chosen response as one chunk (full ``delta``)."""
        return aone_chunk(await self._achat(messages, kwargs, "astream_chat"))

    def _documents(self, documents: Sequence[Any]) -> DocumentMedia:
        return DocumentMedia(documents or [], self.guard_config, fit=image_fit(self.guard_config, self.llm))

    def _complete(self, prompt: str, documents: Sequence[Any], kwargs: dict[str, Any],
                  endpoint: str) -> CompletionResponse:
        response, result = self._guarded(self._documents(documents),
                                         lambda docs, **kw: self.llm.complete(prompt, docs, **kw), completion_text,
                                         endpoint, kwargs)
        return with_metadata(response, result, CompletionResponse)

    async def _acomplete(self, prompt: str, documents: Sequence[Any], kwargs: dict[str, Any],
                         endpoint: str) -> CompletionResponse:
        response, result = await self._aguarded(lambda: self._documents(documents),
                                                lambda docs, **kw: self.llm.acomplete(prompt, docs, **kw),
                                                completion_text, endpoint, kwargs)
        return with_metadata(response, result, CompletionResponse)
