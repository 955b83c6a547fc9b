"""SmoothGuardLLM: a LlamaIndex ``FunctionCallingLLM`` that answers through SmoothGuard.

>>> from smoothguard_llamaindex import SmoothGuardLLM
>>> llm = SmoothGuardLLM(llm=my_vision_llm, sigma=0.1, n_samples=11, max_concurrency=4)
>>> index.as_query_engine(llm=llm, multimodal=True).query("What is in the picture?")
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.callbacks import CallbackManager
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import LLM, ToolSelection
from llama_index.core.multi_modal_llms import MultiModalLLM

from smoothguard import GuardConfig
from smoothguard.errors import ConfigError
from smoothguard_llamaindex.base import GuardedLLMBase, reported_once
from smoothguard_llamaindex.blocks import MessageMedia, image_documents_to_blocks, image_fit, user_message
from smoothguard_llamaindex.decoding import greedy_kwargs
from smoothguard_llamaindex.fanout import chat_text
from smoothguard_llamaindex.guarded import METADATA_KEY, aguarded_call, guarded_call, with_metadata

__all__ = ["SmoothGuardLLM"]

# LLM settings taken from the wrapped model unless given, so the guard formats prompts as the model would.
_MIRRORED = ("system_prompt", "messages_to_prompt", "completion_to_prompt", "output_parser",
             "pydantic_program_mode", "query_wrapper_prompt")


class SmoothGuardLLM(GuardedLLMBase, FunctionCallingLLM):
    """Wraps any LlamaIndex ``LLM``: each call with images/audio is answered ``n_samples`` times on noisy
    copies of its media (the original first), and the answer of the winning cluster is returned.

    Construction: ``SmoothGuardLLM(llm=inner, guard_config=GuardConfig(...), **settings)``. Every
    :class:`~smoothguard.GuardConfig` setting (``sigma``, ``n_samples``, ``seed``, ``max_concurrency``,
    ``on_flag``, ``remote_media``, ...) is accepted as a keyword and overrides ``guard_config``; an unknown
    keyword raises :class:`~smoothguard.errors.ConfigError` naming the closest setting. The settings in use
    are ``llm.guard_config``. LLM keywords (``callback_manager``, ``system_prompt``, ...) go to the LLM;
    ``system_prompt``, ``messages_to_prompt``, ``completion_to_prompt``, ``output_parser``,
    ``pydantic_program_mode`` default to the inner model's.

    Behaviour:

    * ``ImageBlock``/``AudioBlock`` content (inline bytes, file-like, path, ``data:`` URL, http(s) URL per
      ``remote_media``) is perturbed and written back in the same form; text is never changed. Audio must
      be WAV. A fetched http(s) image goes inline in every call, the original too (so the model sees what
      the guard saw);
      ``passthrough`` leaves URLs unsmoothed and says so in ``notes``. A call without media is passed
      through: one inner call.
    * The inner calls run concurrently (threads for sync endpoints, ``asyncio.gather`` for async ones),
      at most ``max_concurrency`` at once; each inner call is an instrumentation span under the guard's.
      A failing candidate is recorded and left out of the vote (``GenerationError`` below the quorum).
    * The response is the winning candidate's own response (its ``raw``, tool calls, ...) with
      ``GuardResult.to_dict()`` in ``additional_kwargs["smoothguard"]``; one :class:`SmoothGuardEvent`
      per call carries the vote summary.
    * Streaming endpoints are not token streams: the vote needs every answer, so they yield the chosen
      answer as a single chunk (full ``delta``) once the vote is done.
    * ``metadata`` mirrors the inner model (``model_name`` becomes ``smoothguard[<name>]``;
      ``context_window`` can be overridden, as engines split multi-image prompts on its estimate).
    * Tool calling (``chat_with_tools``, ``FunctionAgent``) delegates to the inner ``FunctionCallingLLM``;
      candidates vote on their tool calls (name + arguments).
    * The caller's messages, blocks and documents are never modified.
    * Engines set ``callback_manager`` on the LLM they hold (the guard); with ``share_callback_manager``
      the inner LLM reports to it too, unless it has handlers of its own. Each model call is then reported
      once: legacy handlers (``TokenCountingHandler``) see the N candidate calls and no extra event for the
      guard itself; instrumentation (spans, ``LLMChatStartEvent``) still shows the guard's call around them.
    * ``warmup()`` loads the embedder ahead of traffic (else the first guarded call pays 3-15 s on CPU).
    """

    llm: LLM = Field(description="The wrapped LLM; every candidate is one call to it.")
    context_window: int | None = Field(
        default=None, gt=0, description="Overrides the inner model's context_window in `metadata` (tokens).")
    share_callback_manager: bool = Field(
        default=True, description="Let the inner LLM report to this LLM's callback manager (token counters "
                                  "then see every inner call), unless the inner LLM has handlers of its own.")

    _shared_callbacks: CallbackManager | None = PrivateAttr(default=None)

    _wraps = (LLM,)

    def __init__(self, llm: LLM | None = None, guard_config: GuardConfig | Mapping[str, Any] | None = None,
                 **kwargs: Any) -> None:
        if llm is None:
            raise ConfigError("SmoothGuardLLM needs the LLM to guard: SmoothGuardLLM(llm=...)")
        if isinstance(llm, MultiModalLLM):
            raise ConfigError(f"{type(llm).__name__} is a legacy MultiModalLLM: wrap it with SmoothGuardMultiModalLLM")
        config = self._settings(llm, guard_config, kwargs)
        for name in _MIRRORED:
            if kwargs.get(name) is None and getattr(llm, name, None) is not None:
                kwargs[name] = getattr(llm, name)
        super().__init__(llm=llm, guard_config=config, **kwargs)

    @classmethod
    def class_name(cls) -> str:
        return "SmoothGuardLLM"

    @property
    def metadata(self) -> LLMMetadata:
        """The inner model's metadata, renamed ``smoothguard[<model_name>]``; function calling only when the
        inner model is a ``FunctionCallingLLM``."""
        inner = self.llm.metadata
        update: dict[str, Any] = {"model_name": f"smoothguard[{inner.model_name}]"}
        if self.context_window is not None:
            update["context_window"] = self.context_window
        if not isinstance(self.llm, FunctionCallingLLM):
            update["is_function_calling_model"] = False
        return inner.model_copy(update=update)

    # -- chat -----------------------------------------------------------------------------------------------

    @reported_once(llm_chat_callback())
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Guarded chat: one inner ``chat`` per candidate (concurrent threads), the voted response back."""
        return self._chat(messages, kwargs, "chat")

    @reported_once(llm_chat_callback())
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Guarded async chat: inner ``achat`` calls gathered, at most ``max_concurrency`` at once."""
        return await self._achat(messages, kwargs, "achat")

    @reported_once(llm_chat_callback())
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        """Votes first (blocking), then yields the chosen response as one chunk with the full ``delta``."""
        response = self._chat(messages, kwargs, "stream_chat")
        return _one_chat_chunk(response)

    @reported_once(llm_chat_callback())
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        """Votes first, then yields the chosen response as one chunk with the full ``delta``."""
        response = await self._achat(messages, kwargs, "astream_chat")
        return _aone_chat_chunk(response)

    # -- complete -------------------------------------------------------------------------------------------

    @reported_once(llm_completion_callback())
    def complete(self, prompt: str, formatted: bool = False, image_documents: Sequence[Any] | None = None,
                 **kwargs: Any) -> CompletionResponse:
        """Guarded completion. With ``image_documents`` (ImageNode/ImageDocument/ImageBlock), the inner model
        is asked through ``chat`` with one user message: the images, then ``prompt``. Without media: one
        inner ``complete`` (pass-through). The legacy order ``complete(prompt, image_documents)`` works too."""
        return self._complete(prompt, formatted, image_documents, kwargs, "complete")

    @reported_once(llm_completion_callback())
    async def acomplete(self, prompt: str, formatted: bool = False, image_documents: Sequence[Any] | None = None,
                        **kwargs: Any) -> CompletionResponse:
        """Async :meth:`complete`."""
        return await self._acomplete(prompt, formatted, image_documents, kwargs, "acomplete")

    @reported_once(llm_completion_callback())
    def stream_complete(self, prompt: str, formatted: bool = False, image_documents: Sequence[Any] | None = None,
                        **kwargs: Any) -> CompletionResponseGen:
        """Votes first, then yields the chosen completion as one chunk with the full ``delta``."""
        response = self._complete(prompt, formatted, image_documents, kwargs, "stream_complete")
        return _one_completion_chunk(response)

    @reported_once(llm_completion_callback())
    async def astream_complete(self, prompt: str, formatted: bool = False,
                               image_documents: Sequence[Any] | None = None,
                               **kwargs: Any) -> CompletionResponseAsyncGen:
        """Votes first, then yields the chosen completion as one chunk with the full ``delta``."""
        response = await self._acomplete(prompt, formatted, image_documents, kwargs, "astream_complete")
        return _aone_completion_chunk(response)

    # -- tools ----------------------------------------------------------------------------------------------

    def _prepare_chat_with_tools(self, tools: Sequence[Any], user_msg: str | ChatMessage | None = None,
                                 chat_history: list[ChatMessage] | None = None, verbose: bool = False,
                                 allow_parallel_tool_calls: bool = False, tool_required: bool = False,
                                 **kwargs: Any) -> dict[str, Any]:
        """Delegates to the inner model: the guard sends whatever tool schema it would send."""
        return self._tool_llm()._prepare_chat_with_tools_compat(
            tools, user_msg=user_msg, chat_history=chat_history, verbose=verbose,
            allow_parallel_tool_calls=allow_parallel_tool_calls, tool_required=tool_required, **kwargs)

    def _validate_chat_with_tools_response(self, response: ChatResponse, tools: Sequence[Any],
                                           allow_parallel_tool_calls: bool = False, **kwargs: Any) -> ChatResponse:
        return self._tool_llm()._validate_chat_with_tools_response(
            response, tools, allow_parallel_tool_calls=allow_parallel_tool_calls, **kwargs)

    def get_tool_calls_from_response(self, response: ChatResponse, error_on_no_tool_call: bool = True,
                                     **kwargs: Any) -> list[ToolSelection]:
        """Delegates to the inner model (the response is the winning candidate's own)."""
        return self._tool_llm().get_tool_calls_from_response(
            response, error_on_no_tool_call=error_on_no_tool_call, **kwargs)

    def _tool_llm(self) -> FunctionCallingLLM:
        if not isinstance(self.llm, FunctionCallingLLM):
            raise NotImplementedError(f"the wrapped {type(self.llm).__name__} is not a FunctionCallingLLM, so the "
                                      "guard cannot call tools either")
        return self.llm

    # -- the guarded calls ----------------------------------------------------------------------------------

    def _complete(self, prompt: str, formatted: bool, image_documents: Sequence[Any] | None,
                  kwargs: dict[str, Any], endpoint: str) -> CompletionResponse:
        formatted, image_documents = _legacy_order(formatted, image_documents)
        kwargs = greedy_kwargs(self.llm, kwargs)
        if image_documents:
            message = user_message(prompt, image_documents_to_blocks(image_documents))
            self._share_callbacks()
            payload = MessageMedia([message], self.guard_config, where=lambda i, j: f"image_documents[{j}]",
                                   fit=image_fit(self.guard_config, self.llm))
            chat, result = guarded_call(self.guard, payload, lambda msgs: self.llm.chat(msgs, **kwargs), chat_text,
                                        model_name=self._inner_name(), endpoint=endpoint, model=self.llm)
            return _as_completion(chat, result)
        self._share_callbacks()
        response, result = guarded_call(
            self.guard, None, lambda _: self.llm.complete(prompt, formatted=formatted, **kwargs), _completion_text,
            model_name=self._inner_name(), endpoint=endpoint, model=self.llm)
        return with_metadata(response, result, CompletionResponse)

    async def _acomplete(self, prompt: str, formatted: bool, image_documents: Sequence[Any] | None,
                         kwargs: dict[str, Any], endpoint: str) -> CompletionResponse:
        formatted, image_documents = _legacy_order(formatted, image_documents)
        kwargs = greedy_kwargs(self.llm, kwargs)
        if image_documents:
            message = user_message(prompt, image_documents_to_blocks(image_documents))
            self._share_callbacks()
            payload = await asyncio.to_thread(MessageMedia, [message], self.guard_config,
                                              where=lambda i, j: f"image_documents[{j}]",
                                              fit=image_fit(self.guard_config, self.llm))

            async def chat_call(msgs: list[ChatMessage]) -> ChatResponse:
                return await self.llm.achat(msgs, **kwargs)

            chat, result = await aguarded_call(self.guard, payload, chat_call, chat_text,
                                               model_name=self._inner_name(), endpoint=endpoint, model=self.llm)
            return _as_completion(chat, result)
        self._share_callbacks()

        async def call(_: Any) -> CompletionResponse:
            return await self.llm.acomplete(prompt, formatted=formatted, **kwargs)

        response, result = await aguarded_call(self.guard, None, call, _completion_text,
                                               model_name=self._inner_name(), endpoint=endpoint, model=self.llm)
        return with_metadata(response, result, CompletionResponse)

    def _before_call(self) -> None:
        self._share_callbacks()

    def _share_callbacks(self) -> bool:
        """Point the inner LLM at this LLM's callback manager (engines set it on the guard only), unless the
        inner LLM was given handlers of its own. True when the inner LLM reports to this LLM's handlers."""
        ours = self.callback_manager
        if not isinstance(ours, CallbackManager) or not self.share_callback_manager or not ours.handlers:
            return False
        theirs = self.llm.callback_manager
        if theirs is ours:
            return True
        if theirs is None or not theirs.handlers or theirs is self._shared_callbacks:
            self.llm.callback_manager = ours
            self._shared_callbacks = ours
            return True
        return False


# -- helpers ------------------------------------------------------------------------------------------------


def _legacy_order(formatted: Any, image_documents: Sequence[Any] | None) -> tuple[bool, Sequence[Any] | None]:
    """Accept the legacy MultiModalLLM order ``complete(prompt, image_documents)``: a list given as the second
    positional argument is the image documents, not ``formatted``."""
    if image_documents is None and isinstance(formatted, list | tuple):
        return False, formatted
    return bool(formatted), image_documents


def _completion_text(response: CompletionResponse) -> str:
    return response.text


def _as_completion(chat: ChatResponse | None, result: Any) -> CompletionResponse:
    if chat is None:
        return with_metadata(None, result, CompletionResponse)
    return CompletionResponse(text=chat.message.content or "", raw=chat.raw, logprobs=chat.logprobs,
                              additional_kwargs={**chat.additional_kwargs, METADATA_KEY: result.to_dict()})


def _one_chat_chunk(response: ChatResponse) -> ChatResponseGen:
    yield response.model_copy(update={"delta": response.message.content or ""})


async def _aone_chat_chunk(response: ChatResponse) -> ChatResponseAsyncGen:
    yield response.model_copy(update={"delta": response.message.content or ""})


def _one_completion_chunk(response: CompletionResponse) -> CompletionResponseGen:
    yield response.model_copy(update={"delta": response.text})


async def _aone_completion_chunk(response: CompletionResponse) -> CompletionResponseAsyncGen:
    yield response.model_copy(update={"delta": response.text})
