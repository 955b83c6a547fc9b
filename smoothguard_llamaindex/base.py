"""What SmoothGuardLLM and SmoothGuardMultiModalLLM share: the settings, the guard, the guarded chat call, warm-up.

Both wrap an inner LlamaIndex model (``llm``) and hold one :class:`~smoothguard.GuardConfig` (``guard_config``);
keyword settings override it and unknown ones raise :class:`~smoothguard.errors.ConfigError`. Each subclass keeps
only its framework base (``FunctionCallingLLM`` / legacy ``MultiModalLLM``) and its own endpoints.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from llama_index.core.base.llms.types import ChatMessage, ChatResponse
from llama_index.core.bridge.pydantic import BaseModel, Field
from llama_index.core.callbacks import CallbackManager

from smoothguard import GuardConfig, SmoothGuard
from smoothguard_llamaindex.blocks import MessageMedia, image_fit
from smoothguard_llamaindex.decoding import greedy_kwargs
from smoothguard_llamaindex.fanout import chat_text
from smoothguard_llamaindex.guarded import aguarded_call, build_config, guard_for, guarded_call, with_metadata

__all__ = ["GuardedLLMBase", "reported_once"]


class GuardedLLMBase(BaseModel):
    """Mixin of the LlamaIndex guards (put it before the framework base class)."""

    guard_config: GuardConfig = Field(default_factory=GuardConfig, description="SmoothGuard settings.")

    #: The LlamaIndex class the guard wraps, and what to say when ``llm`` is not one.
    _wraps: ClassVar[tuple[type, ...]] = ()
    _wrong_llm: ClassVar[str] = "llm must be a llama_index LLM, not {name}"

    @classmethod
    def _settings(cls, llm: Any, guard_config: GuardConfig | Mapping[str, Any] | None,
                  kwargs: dict[str, Any]) -> GuardConfig:
        """Check ``llm``, take the guard settings out of ``kwargs`` and return the resulting :class:`GuardConfig`."""
        from smoothguard.errors import ConfigError

        if llm is None or not isinstance(llm, cls._wraps):
            raise ConfigError(cls._wrong_llm.format(name=type(llm).__name__))
        own = set(cls.model_fields)
        settings = {k: kwargs.pop(k) for k in list(kwargs) if k not in own}
        return build_config(guard_config, settings)

    @property
    def guard(self) -> SmoothGuard:
        """The :class:`~smoothguard.SmoothGuard` for ``guard_config`` (one per distinct config, shared)."""
        return guard_for(self.guard_config)

    def warmup(self) -> Any:
        """Load the embedder and the sentiment lexicon now (quietly), so the first guarded call does not pay for
        them (3-15 s on CPU). Returns ``self``."""
        self.guard.warmup()
        return self

    def _inner_name(self) -> str:
        try:
            return str(self.llm.metadata.model_name)  # type: ignore[attr-defined]
        except Exception:
            return type(self.llm).__name__  # type: ignore[attr-defined]

    def _before_call(self) -> None:
        """Hook run before every guarded call (SmoothGuardLLM shares its callback manager here)."""

    def _chat(self, messages: Sequence[ChatMessage], kwargs: dict[str, Any], endpoint: str) -> ChatResponse:
        """One guarded ``chat``: a candidate per noisy copy of the messages' media, the voted response back."""
        self._before_call()
        llm = self.llm  # type: ignore[attr-defined]
        kwargs = greedy_kwargs(llm, kwargs)
        payload = MessageMedia(messages, self.guard_config, fit=image_fit(self.guard_config, llm))
        response, result = guarded_call(self.guard, payload, lambda msgs: llm.chat(msgs, **kwargs), chat_text,
                                        model_name=self._inner_name(), endpoint=endpoint, model=llm)
        return with_metadata(response, result)

    async def _achat(self, messages: Sequence[ChatMessage], kwargs: dict[str, Any], endpoint: str) -> ChatResponse:
        """Async :meth:`_chat` (payloads decoded and rebuilt in worker threads)."""
        self._before_call()
        llm = self.llm  # type: ignore[attr-defined]
        kwargs = greedy_kwargs(llm, kwargs)
        payload = await asyncio.to_thread(MessageMedia, messages, self.guard_config,
                                          fit=image_fit(self.guard_config, llm))

        async def call(msgs: list[ChatMessage]) -> ChatResponse:
            return await llm.achat(msgs, **kwargs)

        response, result = await aguarded_call(self.guard, payload, call, chat_text,
                                               model_name=self._inner_name(), endpoint=endpoint, model=llm)
        return with_metadata(response, result)


class _Reporter:
    """What LlamaIndex's ``llm_*_callback`` decorators read from the LLM they wrap: the guard's payload and rate
    limiter, and its callback manager, or an empty one when the inner LLM reports every candidate call to that
    same manager (then a token counter would count the guard's own call once more)."""

    def __init__(self, guard: Any) -> None:
        self.guard = guard
        self.rate_limiter = guard.rate_limiter
        shared = guard._share_callbacks()
        self.callback_manager = CallbackManager([]) if shared else guard.callback_manager

    def to_payload(self) -> dict[str, Any]:
        return self.guard.to_payload()


def reported_once(decorator: Callable[[Callable[..., Any]], Callable[..., Any]]) -> Callable[..., Any]:
    """``decorator`` (``llm_chat_callback()`` / ``llm_completion_callback()``) applied so that each model call is
    reported to legacy callback handlers once: the guard's own LLM event is left out while the inner LLM reports
    the candidate calls to the same callback manager. Instrumentation events and spans are unchanged."""

    def wrap(f: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(f):
            async def areported(reporter: _Reporter, *args: Any, **kwargs: Any) -> Any:
                return await f(reporter.guard, *args, **kwargs)

            decorated = decorator(areported)

            @functools.wraps(f)
            async def aendpoint(self: Any, *args: Any, **kwargs: Any) -> Any:
                return await decorated(_Reporter(self), *args, **kwargs)

            return aendpoint

        def reported(reporter: _Reporter, *args: Any, **kwargs: Any) -> Any:
            return f(reporter.guard, *args, **kwargs)

        decorated_sync = decorator(reported)

        @functools.wraps(f)
        def endpoint(self: Any, *args: Any, **kwargs: Any) -> Any:
            return decorated_sync(_Reporter(self), *args, **kwargs)

        return endpoint

    return wrap
