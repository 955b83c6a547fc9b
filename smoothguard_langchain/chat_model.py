"""ChatSmoothGuard: a chat model that guards any other chat model with SmoothGuard.

>>> guard = ChatSmoothGuard(model=ChatOpenAI(model="gpt-4o-mini", temperature=0), n_samples=11, sigma=0.1)
>>> reply = guard.invoke([HumanMessage(content=[{"type": "text", "text": "What is shown?"},
...                                             {"type": "image", "base64": b64, "mime_type": "image/png"}])])
>>> reply.content, reply.response_metadata["smoothguard"]["agreement"]

One request becomes ``n_samples`` inner calls, fanned out concurrently through the inner model's ``batch`` /
``abatch`` (at most ``max_concurrency`` at a time); each is a child run of the guard's run. The answers are
embedded, clustered and voted on, and the representative candidate's own ``AIMessage`` is returned, with
``response_metadata["smoothguard"] = GuardResult.to_dict()`` and the summed token usage of all candidates
under ``response_metadata["smoothguard_usage"]``. A request without image or audio is one pass-through call.

Streaming yields the chosen answer as **one final chunk** (and one ``on_llm_new_token`` event): the vote needs
every candidate's full answer, so there are no earlier tokens to stream. Candidate runs are tagged ``nostream``
and are run without stream consumers: ``astream_events``, ``astream_log`` and LangGraph's
``stream_mode="messages"`` see the guard's run and its chosen answer only, never an unvoted candidate's tokens.
Tracers and ordinary callback handlers see every candidate as a child run tagged ``smoothguard:sample:<i>``.

Tool calls: ``bind_tools`` binds the tools on the inner model, and candidates that call tools are compared by
the JSON of their calls. ``with_structured_output(schema, method=..., strict=...)`` is the inner model's own
(a ``json_schema`` response format for ``ChatOpenAI`` by default), with the guard in place of the model.

Conventions kept: candidates go out at temperature 0 where the inner model has a ``temperature`` setting and
its provider accepts 0 (otherwise a warning says the decoding cannot be made greedy); ``config={"configurable":
...}`` reaches a configurable inner model; token usage is reported once per call to the provider (callback
handlers count the candidate runs, the guard's own run carries none), while the message ``invoke`` returns
carries the total of all candidates as ``usage_metadata``; ``get_num_tokens*`` are the inner model's (one
call's count); ``warmup()`` loads the embedder ahead of traffic; and the guard serialises with
``langchain_core.load.dumps`` / ``loads`` when its inner model does (``valid_namespaces=["smoothguard_langchain"]``).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult, LLMResult
from langchain_core.runnables import Runnable, RunnableConfig
from pydantic import Field

from smoothguard import GuardResult
from smoothguard.errors import ConfigError, MediaError
from smoothguard.fanout import FanOut
from smoothguard_langchain.blocks import find_media, image_fit
from smoothguard_langchain.callbacks import child_manager
from smoothguard_langchain.candidates import annotate_message, arun_batch, chat_model, run_batch
from smoothguard_langchain.decoding import greedy_temperature
from smoothguard_langchain.settings import CONFIG_FIELDS, GuardSettings

__all__ = ["ChatSmoothGuard"]

#: The ``configurable`` of the config given to the guard's own ``invoke``/``ainvoke`` (langchain-core does not
#: pass it to ``_generate``), forwarded to every candidate call.
_CONFIGURABLE: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "smoothguard_configurable", default=None)


class ChatSmoothGuard(GuardSettings, BaseChatModel):
    """A chat model answering like ``model``, defended by SmoothGuard (noisy copies + clustering + vote).

    Fields: ``model`` (the chat model to guard, or a runnable built from one, e.g. ``llm.bind(...)``), ``stop``
    (default stop sequences for the inner calls), and every :class:`smoothguard.GuardConfig` setting (same names,
    defaults and meaning; invalid values raise :class:`~smoothguard.errors.ConfigError` here). Provider settings
    such as ``temperature`` or ``max_tokens`` belong on the inner model; passed here they are ignored with a
    warning.
    """

    model: Runnable[Any, Any] = Field(description="The chat model (or chat-model runnable) to guard.")
    stop: list[str] | None = Field(None, description="Default stop sequences passed to every inner call.")

    _tolerated: ClassVar[frozenset[str]] = frozenset(
        {"temperature", "max_tokens", "timeout", "max_retries", "api_key", "base_url"})
    _ignored: ClassVar[frozenset[str]] = frozenset({"streaming"})  # the answer is always one chunk

    def __init__(self, **data: Any) -> None:
        model = data.get("model")
        if model is None:
            raise ConfigError("ChatSmoothGuard needs model=<the chat model to guard>, e.g. ChatOpenAI(...)")
        if not isinstance(model, Runnable):
            raise ConfigError(f"model must be a LangChain chat model or runnable, got {type(model).__name__}")
        super().__init__(**data)

    # -- identity -----------------------------------------------------------------------------------------

    @property
    def _llm_type(self) -> str:
        return "smoothguard"

    @property
    def _inner(self) -> Any:
        """The inner chat model (:func:`~smoothguard_langchain.candidates.chat_model`), else ``model`` itself."""
        return chat_model(self.model) or self.model

    @property
    def model_name(self) -> str:
        """The inner model's name (``model_name``, ``model`` or ``model_id``; else its class name): what code that
        reads a chat model's name (``create_agent``'s structured-output strategy, tracers) expects."""
        inner = self._inner
        for attr in ("model_name", "model", "model_id"):
            value = getattr(inner, attr, None)
            if isinstance(value, str) and value:
                return value
        return inner.get_name()

    @classmethod
    def is_lc_serializable(cls) -> bool:
        """True: ``dumps``/``loads`` round-trip the guard when its inner model serialises too."""
        return True

    def to_json(self) -> Any:
        """langchain-core's serialised form, without the guard settings left at their defaults."""
        data = super().to_json()
        kwargs = data.get("kwargs") if isinstance(data, dict) else None
        if isinstance(kwargs, dict):
            fields = type(self).model_fields
            data["kwargs"] = {k: v for k, v in kwargs.items()
                              if not (k in CONFIG_FIELDS and v == fields[k].default) and not (k == "stop" and not v)}
        return data

    def _resolve_model_profile(self) -> Any:
        """The inner model's profile (capabilities such as image inputs or tool calling): the guard has them too."""
        return getattr(self._inner, "profile", None)

    @property
    def _identifying_params(self) -> dict[str, Any]:
        inner = self._inner
        params = getattr(inner, "_identifying_params", None)
        return {"model": inner.get_name(), "model_params": dict(params) if isinstance(params, dict) else None,
                **self.guard_config.to_dict()}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        """The inner model's tracing params with ``ls_provider="smoothguard"`` (so cost is counted on the
        candidate runs, not twice)."""
        inner = self._inner
        params: LangSmithParams
        if isinstance(inner, BaseChatModel):
            params = inner._get_ls_params(stop=stop, **kwargs)
        else:
            params = LangSmithParams(ls_model_type="chat")
            if stop:
                params["ls_stop"] = stop
        params["ls_provider"] = "smoothguard"
        params["ls_model_type"] = "chat"
        if isinstance(kwargs.get("model"), str):
            params["ls_model_name"] = kwargs["model"]
        elif not isinstance(params.get("ls_model_name"), str):
            params["ls_model_name"] = inner.get_name()
        return params

    # -- generation ---------------------------------------------------------------------------------------

    def invoke(self, input: LanguageModelInput, config: RunnableConfig | None = None, *,
               stop: list[str] | None = None, **kwargs: Any) -> AIMessage:
        """langchain-core's ``invoke``, with ``config["configurable"]`` forwarded to the candidates and the total
        usage of all candidates on the returned message (callback handlers already counted the candidates)."""
        with _forwarding(config):
            return _with_total_usage(super().invoke(input, config, stop=stop, **kwargs))

    async def ainvoke(self, input: LanguageModelInput, config: RunnableConfig | None = None, *,
                      stop: list[str] | None = None, **kwargs: Any) -> AIMessage:
        """Async :meth:`invoke`."""
        with _forwarding(config):
            return _with_total_usage(await super().ainvoke(input, config, stop=stop, **kwargs))

    def generate(self, messages: list[list[BaseMessage]], *args: Any, **kwargs: Any) -> LLMResult:
        """langchain-core's ``generate``, after checking that langchain-core can read every content block."""
        _check_blocks(messages)
        return super().generate(messages, *args, **kwargs)

    async def agenerate(self, messages: list[list[BaseMessage]], *args: Any, **kwargs: Any) -> LLMResult:
        """Async :meth:`generate`."""
        _check_blocks(messages)
        return await super().agenerate(messages, *args, **kwargs)

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        guard = self._guard()
        found = find_media(messages, guard.config, fit=image_fit(guard.config, self.model))
        result, fan = run_batch(guard, found, self.model, run_manager,
                                lambda index: self._child_config(run_manager, index, False),
                                self._call_kwargs(stop, kwargs))
        chat_result = self._result(result, fan)
        if run_manager is not None:  # the answer as one token event, for streaming consumers
            chunk = _as_chunk(chat_result.generations[0].message)
            run_manager.on_llm_new_token(chunk.text, chunk=chunk)
        return chat_result

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        guard = self._guard()
        found = await asyncio.to_thread(find_media, messages, guard.config,  # decoding / fetching
                                        fit=image_fit(guard.config, self.model))
        result, fan = await arun_batch(guard, found, self.model, run_manager,
                                       lambda index: self._child_config(run_manager, index, True),
                                       self._call_kwargs(stop, kwargs))
        chat_result = self._result(result, fan)
        if run_manager is not None:
            chunk = _as_chunk(chat_result.generations[0].message)
            await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
        return chat_result

    def _should_stream(self, *, async_api: bool, run_manager: Any = None, **kwargs: Any) -> bool:
        """Never: the vote needs every whole answer. (This also keeps every call on ``_generate``, which gets the
        run manager, so candidates are child runs even when a streaming handler is attached.)"""
        return False

    def stream(self, input: LanguageModelInput, config: RunnableConfig | None = None, *,
               stop: list[str] | None = None, **kwargs: Any) -> Iterator[AIMessageChunk]:
        """The voted answer as one final ``AIMessageChunk`` (``chunk_position="last"``)."""
        yield _as_chunk(self.invoke(input, config, stop=stop, **kwargs)).message

    async def astream(self, input: LanguageModelInput, config: RunnableConfig | None = None, *,
                      stop: list[str] | None = None, **kwargs: Any) -> AsyncIterator[AIMessageChunk]:
        """Async :meth:`stream`: one final chunk."""
        yield _as_chunk(await self.ainvoke(input, config, stop=stop, **kwargs)).message

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        """One final chunk (used by ``stream_events(version="v3")``)."""
        yield _as_chunk(self._generate(messages, stop=stop, run_manager=run_manager, **kwargs).generations[0].message)

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        """Async :meth:`_stream`."""
        result = await self._agenerate(messages, stop=stop, run_manager=run_manager, **kwargs)
        yield _as_chunk(result.generations[0].message)

    # -- tools --------------------------------------------------------------------------------------------

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: Any = None,
                   **kwargs: Any) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind ``tools`` on the inner model; the result is still guarded (its vote compares tool calls)."""
        if not hasattr(self.model, "bind_tools"):
            raise NotImplementedError(f"the wrapped {self._inner.get_name()} does not support tool calling")
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        guarded = self.model_copy(update={"model": self.model.bind_tools(tools, **kwargs)})
        ls_format = kwargs.get("ls_structured_output_format")  # the tracing hint, on the guard's run too
        return guarded.bind(ls_structured_output_format=ls_format) if ls_format is not None else guarded.bind()

    def with_structured_output(self, schema: dict[str, Any] | type | None = None, *, include_raw: bool = False,
                               **kwargs: Any) -> Runnable[LanguageModelInput, Any]:
        """The inner model's own ``with_structured_output(schema, method=..., strict=..., include_raw=...)``, with
        the guard in place of the model: the request format is the provider's (e.g. ``ChatOpenAI``'s
        ``json_schema`` response format), and the candidates vote on their raw answers (JSON text or tool calls).
        Falls back to langchain-core's tool-calling implementation when the inner model is not a chat model."""
        inner = self.model
        if isinstance(inner, BaseChatModel):
            structured = inner.with_structured_output(schema, include_raw=include_raw, **kwargs)
            swapped = _swap_model(structured, inner, self._guarding)
            if swapped is not structured:
                return swapped
        return super().with_structured_output(schema, include_raw=include_raw, **kwargs)

    def _guarding(self, runnable: Runnable[Any, Any]) -> Runnable[Any, Any]:
        """This guard around ``runnable`` (the inner model or a binding of it), keeping a binding's structured-output
        tracing hint on the guard's run too."""
        guarded = self.model_copy(update={"model": runnable})
        hint = getattr(runnable, "kwargs", {}).get("ls_structured_output_format")
        return guarded.bind(ls_structured_output_format=hint) if hint is not None else guarded

    # -- token counting (the inner model's: one call's count) -----------------------------------------------

    def get_token_ids(self, text: str) -> list[int]:
        """The inner model's tokenisation of ``text``."""
        return self._counting_model().get_token_ids(text)

    def get_num_tokens(self, text: str) -> int:
        """Tokens in ``text`` for the inner model (one call; the guard makes ``n_samples`` such calls)."""
        return self._counting_model().get_num_tokens(text)

    def get_num_tokens_from_messages(self, messages: list[BaseMessage], tools: Sequence[Any] | None = None) -> int:
        """Tokens of ``messages`` (and ``tools``) for the inner model, as one call sends them."""
        model = self._counting_model()
        if tools is None:
            return model.get_num_tokens_from_messages(messages)
        return model.get_num_tokens_from_messages(messages, tools=tools)

    def _counting_model(self) -> Any:
        inner = chat_model(self.model)
        if inner is None:
            raise NotImplementedError(f"the guarded {self.model.get_name()} is not a chat model, so the guard "
                                      "cannot count its tokens; count them on the model itself")
        return inner

    # -- helpers ------------------------------------------------------------------------------------------

    def _call_kwargs(self, stop: list[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        stop = stop if stop is not None else self.stop
        out = {**kwargs, "stop": stop} if stop else dict(kwargs)
        if "temperature" not in out and greedy_temperature(chat_model(self.model)):
            out["temperature"] = 0
        return out

    def _child_config(self, run_manager: Any, index: int, is_async: bool) -> dict[str, Any]:
        config: dict[str, Any] = {"callbacks": child_manager(run_manager, index, is_async=is_async),
                                  "max_concurrency": self.max_concurrency or self.n_samples}
        configurable = _CONFIGURABLE.get()
        if configurable:
            config["configurable"] = configurable
        return config

    def _result(self, result: GuardResult, fan: FanOut[Any]) -> ChatResult:
        if result.refused:
            message: BaseMessage = AIMessage(content=result.answer)
        else:
            message = _as_ai_message(fan.chosen(result))
        message = annotate_message(message, result, fan.outputs.values())
        # The guard's run reports no usage of its own: the candidate runs already did (counted once each).
        if isinstance(message, AIMessage) and message.usage_metadata is not None:
            message = message.model_copy(update={"usage_metadata": None})
        return ChatResult(generations=[ChatGeneration(message=message)])


@contextmanager
def _forwarding(config: RunnableConfig | None) -> Iterator[None]:
    """Within the block, ``config["configurable"]`` goes to every candidate call (:data:`_CONFIGURABLE`)."""
    token = _CONFIGURABLE.set(dict((config or {}).get("configurable") or {}) or None)
    try:
        yield
    finally:
        _CONFIGURABLE.reset(token)


def _with_total_usage(message: Any) -> Any:
    """``message`` carrying the summed usage of every candidate (``response_metadata["smoothguard_usage"]``) as its
    ``usage_metadata``: what the guarded call cost, on the message the caller gets back."""
    total = (getattr(message, "response_metadata", None) or {}).get("smoothguard_usage")
    if isinstance(message, AIMessage) and total and message.usage_metadata is None:
        return message.model_copy(update={"usage_metadata": dict(total)})
    return message


def _swap_model(node: Any, inner: Any, wrap: Any, depth: int = 0) -> Any:
    """``node`` (a runnable built around ``inner``) with ``inner``, and every binding directly over it, replaced by
    ``wrap(that runnable)``; the same object when nothing was replaced."""
    from langchain_core.runnables import RunnableBinding
    from pydantic import BaseModel

    if node is inner or (isinstance(node, RunnableBinding) and node.bound is inner):
        return wrap(node)
    if depth > 16 or not isinstance(node, BaseModel):
        return node

    def swap(value: Any) -> Any:
        if isinstance(value, Runnable):
            return _swap_model(value, inner, wrap, depth + 1)
        if isinstance(value, list | tuple):
            items = [swap(v) for v in value]
            return value if all(a is b for a, b in zip(items, value, strict=True)) else type(value)(items)
        if isinstance(value, dict):
            new = {k: swap(v) for k, v in value.items()}
            return value if all(new[k] is value[k] for k in value) else new
        return value

    changes = {}
    for name in type(node).model_fields:
        value = getattr(node, name, None)
        swapped = swap(value)
        if swapped is not value:
            changes[name] = swapped
    return node.model_copy(update=changes) if changes else node


def _check_blocks(batch: Sequence[Sequence[BaseMessage]]) -> None:
    """Raise :class:`MediaError` for a message langchain-core's own input handling rejects (an ``input_audio`` block
    with empty data, a base64 image block without ``mime_type``): ``generate`` formats and normalises the messages
    before ``_generate``, so its bare ``ValueError`` would escape before the guard could name the block."""
    try:
        from langchain_core.language_models._utils import _normalize_messages
        from langchain_core.language_models.chat_models import _format_for_tracing
    except ImportError:  # another langchain-core: nothing to pre-check
        return
    for messages in batch:
        for i, message in enumerate(messages):
            try:
                _format_for_tracing([message])
                _normalize_messages([message])
            except Exception as exc:
                raise MediaError(f"messages[{i}]: langchain-core cannot read one of its content blocks "
                                 f"({type(exc).__name__}: {exc}); check its image/audio data") from None


def _as_ai_message(output: Any) -> AIMessage:
    if isinstance(output, AIMessage):
        return output
    if isinstance(output, BaseMessage):
        return AIMessage(content=output.content, response_metadata=dict(output.response_metadata))
    return AIMessage(content=output if isinstance(output, str) else str(output))


def _as_chunk(message: BaseMessage) -> ChatGenerationChunk:
    """One final ``AIMessageChunk`` carrying everything of ``message`` (tool calls as chunks)."""
    calls = [tool_call_chunk(name=c["name"], args=json.dumps(c["args"], ensure_ascii=False), id=c.get("id"),
                             index=i) for i, c in enumerate(getattr(message, "tool_calls", []) or [])]
    offset = len(calls)
    calls += [tool_call_chunk(name=c.get("name"), args=c.get("args"), id=c.get("id"), index=offset + i)
              for i, c in enumerate(getattr(message, "invalid_tool_calls", []) or [])]
    chunk = AIMessageChunk(
        content=message.content, id=message.id, name=message.name,
        additional_kwargs=dict(message.additional_kwargs), response_metadata=dict(message.response_metadata),
        usage_metadata=getattr(message, "usage_metadata", None), tool_call_chunks=calls, chunk_position="last")
    return ChatGenerationChunk(message=chunk)
