"""SmoothGuardLLM: a LlamaIndex ``FunctionCallingLLM`` that answers through SmoothGuard.

>>> from smoothguard_llamaindex import SmoothGuardLLM
>>> llm = SmoothGuardLLM(llm=my_vision_llm, sigma=0.1, n_samples=11, max_concurrency=4)
>>> index.as_query_engine(llm=llm, multimodal=True).query("What is in the picture?")
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
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
    MessageRole,
    TextBlock,
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.callbacks import CallbackManager
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import LLM, ToolSelection
from llama_index.core.multi_modal_llms import MultiModalLLM

from smoothguard import GuardConfig
from smoothguard.errors import ConfigError
from smoothguard_llamaindex.base import GuardedLLMBase
from smoothguard_llamaindex.blocks import image_documents_to_blocks
from smoothguard_llamaindex.guarded import aone_chunk, one_chunk, with_metadata
from smoothguard_llamaindex.vote_text import completion_text

__all__ = ["SmoothGuardLLM"]

# LLM settings taken from the wrapped model unless given, so the guard formats prompts as the model would.
_MIRRORED = ("system_prompt", "messages_to_prompt", "completion_to_prompt", "output_parser",
             "pydantic_program_mode", "query_wrapper_prompt")


class _Reporter:
    """What LlamaIndex's ``llm_*_callback`` decorators read from the LLM they wrap: the guard's payload and rate
    limiter, and its callback manager, or an empty one when the inner LLM reports every candidate call to that
    same manager (then a token counter would count the guard's own call once more)."""

    def __init__(self, guard: SmoothGuardLLM) -> None:
        self.guard = guard
        self.rate_limiter = guard.rate_limiter
        self.callback_manager = CallbackManager([]) if guard._share_callbacks() else guard.callback_manager

    def to_payload(self) -> dict[str, Any]:
        return self.guard.to_payload()


def _reported_once(decorator: Callable[[Callable[..., Any]], Callable[..., Any]]) -> Callable[..., Any]:
    """``decorator`` (``llm_chat_callback()`` / ``llm_completion_callback()``) applied so that each model call is
    reported to legacy callback handlers once: the guard's own LLM event is left out while the inner LLM reports
    the candidate calls to the same callback manager. Instrumentation events and spans are unchanged."""

    def wrap(f: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(f):
            @decorator
            async def areported(reporter: _Reporter, *args: Any, **kwargs: Any) -> Any:
                return await f(reporter.guard, *args, **kwargs)

            @functools.wraps(f)
            async def aendpoint(self: SmoothGuardLLM, *args: Any, **kwargs: Any) -> Any:
                return await areported(_Reporter(self), *args, **kwargs)

            return aendpoint

        @decorator
        def reported(reporter: _Reporter, *args: Any, **kwargs: Any) -> Any:
            return f(reporter.guard, *args, **kwargs)

        @functools.wraps(f)
        def endpoint(self: SmoothGuardLLM, *args: Any, **kwargs: Any) -> Any:
            return reported(_Reporter(self), *args, **kwargs)

        return endpoint

    return wrap


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

    * ``ImageBlock``/``AudioBlock`` content is perturbed and written back in the caller's form (inline bytes,
      file-like, path, ``data:`` URL; http(s) per ``remote_media``: see :mod:`smoothguard_llamaindex.blocks`);
      text is never changed. A call without media is passed through: one inner call.
    * The inner calls run concurrently (threads for sync endpoints, tasks for async ones), at most
      ``max_concurrency`` at once; each inner call is an instrumentation span under the guard's.
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
    * Engines set ``callback_manager`` on the LLM they hold (the guard); with ``share_callback_manager``
      the inner LLM reports to it too, unless it has handlers of its own. Each model call is then reported
      once: legacy handlers (``TokenCountingHandler``) see the N candidate calls and no extra event for the
      guard itself; instrumentation (spans, ``LLMChatStartEvent``) still shows the guard's call around them.
    """

    llm: LLM = Field(description="The wrapped LLM; every candidate is one call to it.")
    context_window: int | None = Field(
        default=None, gt=0, description="Overrides the inner model's context_window in `metadata` (tokens).")
    share_callback_manager: bool = Field(
        default=True, description="Let the inner LLM report to this LLM's callback manager (token counters "
                                  "then see every inner call), unless the inner LLM has handlers of its own.")

    _shared_callbacks: CallbackManager | None = PrivateAttr(default=None)

    _wraps = (LLM,)

    @classmethod
    def _settings(cls, llm: Any, guard_config: GuardConfig | Mapping[str, Any] | None,
                  kwargs: dict[str, Any]) -> GuardConfig:
        if isinstance(llm, MultiModalLLM):
            raise ConfigError(f"{type(llm).__name__} is a legacy MultiModalLLM: wrap it with SmoothGuardMultiModalLLM")
        config = super()._settings(llm, guard_config, kwargs)
        for name in _MIRRORED:
            if kwargs.get(name) is None and getattr(llm, name, None) is not None:
                kwargs[name] = getattr(llm, name)
        return config

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

    @_reported_once(llm_chat_callback())
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Guarded chat: one inner ``chat`` per candidate (concurrent threads), the voted response back."""
        return self._chat(messages, kwargs, "chat")

    @_reported_once(llm_chat_callback())
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Guarded async chat: inner ``achat`` calls gathered, at most ``max_concurrency`` at once."""
        return await self._achat(messages, kwargs, "achat")

    @_reported_once(llm_chat_callback())
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        """Votes first (blocking), then yields the chosen response as one chunk with the full ``delta``."""
        return one_chunk(self._chat(messages, kwargs, "stream_chat"))

    @_reported_once(llm_chat_callback())
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        """Votes first, then yields the chosen response as one chunk with the full ``delta``."""
        return aone_chunk(await self._achat(messages, kwargs, "astream_chat"))

    # -- complete -------------------------------------------------------------------------------------------

    @_reported_once(llm_completion_callback())
    def complete(self, prompt: str, formatted: bool = False, image_documents: Sequence[Any] | None = None,
                 **kwargs: Any) -> CompletionResponse:
        """Guarded completion. With ``image_documents`` (ImageNode/ImageDocument/ImageBlock), the inner model
        is asked through ``chat`` with one user message: the images, then ``prompt``. Without media: one
        inner ``complete`` (pass-through). The legacy order ``complete(prompt, image_documents)`` works too."""
        return self._complete(prompt, formatted, image_documents, kwargs, "complete")

    @_reported_once(llm_completion_callback())
    async def acomplete(self, prompt: str, formatted: bool = False, image_documents: Sequence[Any] | None = None,
                        **kwargs: Any) -> CompletionResponse:
        """Async :meth:`complete`."""
        return await self._acomplete(prompt, formatted, image_documents, kwargs, "acomplete")

    @_reported_once(llm_completion_callback())
    def stream_complete(self, prompt: str, formatted: bool = False, image_documents: Sequence[Any] | None = None,
                        **kwargs: Any) -> CompletionResponseGen:
        """Votes first, then yields the chosen completion as one chunk with the full ``delta``."""
        return one_chunk(self._complete(prompt, formatted, image_documents, kwargs, "stream_complete"))

    @_reported_once(llm_completion_callback())
    async def astream_complete(self, prompt: str, formatted: bool = False,
                               image_documents: Sequence[Any] | None = None,
                               **kwargs: Any) -> CompletionResponseAsyncGen:
        """Votes first, then yields the chosen completion as one chunk with the full ``delta``."""
        return aone_chunk(await self._acomplete(prompt, formatted, image_documents, kwargs, "astream_complete"))

    def _complete(self, prompt: str, formatted: Any, image_documents: Sequence[Any] | None,
                  kwargs: dict[str, Any], endpoint: str) -> CompletionResponse:
        formatted, message = _image_request(prompt, formatted, image_documents)
        if message is not None:
            return _as_completion(self._chat([message], kwargs, endpoint, where=_document_place))
        response, result = self._guarded(None, lambda _, **kw: self.llm.complete(prompt, formatted=formatted, **kw),
                                         completion_text, endpoint, kwargs)
        return with_metadata(response, result, CompletionResponse)

    async def _acomplete(self, prompt: str, formatted: Any, image_documents: Sequence[Any] | None,
                         kwargs: dict[str, Any], endpoint: str) -> CompletionResponse:
        formatted, message = _image_request(prompt, formatted, image_documents)
        if message is not None:
            return _as_completion(await self._achat([message], kwargs, endpoint, where=_document_place))
        response, result = await self._aguarded(
            None, lambda _, **kw: self.llm.acomplete(prompt, formatted=formatted, **kw), completion_text, endpoint,
            kwargs)
        return with_metadata(response, result, CompletionResponse)

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

    # -- callbacks ------------------------------------------------------------------------------------------

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


def _image_request(prompt: str, formatted: Any,
                   image_documents: Sequence[Any] | None) -> tuple[bool, ChatMessage | None]:
    """``formatted``, and the one user message asking ``prompt`` about ``image_documents`` (None without any).
    The legacy MultiModalLLM order ``complete(prompt, image_documents)`` is accepted: a list given as the second
    positional argument is the image documents, not ``formatted``."""
    if image_documents is None and isinstance(formatted, list | tuple):
        formatted, image_documents = False, formatted
    if not image_documents:
        return bool(formatted), None
    blocks = [*image_documents_to_blocks(image_documents), TextBlock(text=prompt)]
    return bool(formatted), ChatMessage(role=MessageRole.USER, blocks=blocks)


def _document_place(i: int, j: int) -> str:
    """How errors and notes name the j-th image document (block j of the one user message)."""
    return f"image_documents[{j}]"


def _as_completion(chat: ChatResponse) -> CompletionResponse:
    return CompletionResponse(text=chat.message.content or "", raw=chat.raw, logprobs=chat.logprobs,
                              additional_kwargs=chat.additional_kwargs)
