"""What SmoothGuardLLM and SmoothGuardMultiModalLLM share: the settings, the guard, the guarded call, warm-up.

One guarded call reads the payload (messages or image documents) once; the core's
:class:`~smoothguard.fanout.FanOut` rebuilds a copy of it per candidate (its ``prepare``), makes the calls and
votes; the picked response comes back and one :class:`~smoothguard_llamaindex.SmoothGuardEvent` is dispatched.

Both wrap an inner LlamaIndex model (``llm``) and hold one :class:`~smoothguard.GuardConfig` (``guard_config``);
keyword settings override it and unknown ones raise :class:`~smoothguard.errors.ConfigError`. Each subclass keeps
only its framework base (``FunctionCallingLLM`` / legacy ``MultiModalLLM``) and its own endpoints.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from llama_index.core.base.llms.types import ChatMessage, ChatResponse
from llama_index.core.bridge.pydantic import BaseModel, Field

from smoothguard import GuardConfig, GuardFlagged, GuardResult, Media, SmoothGuard
from smoothguard.audio_resample import rate_for_model
from smoothguard.errors import ConfigError
from smoothguard.fanout import FanOut
from smoothguard.image_resize import rule_for_model
from smoothguard_llamaindex.blocks import MessageMedia, Payload, image_fit
from smoothguard_llamaindex.decoding import greedy_kwargs
from smoothguard_llamaindex.events import dispatch_vote
from smoothguard_llamaindex.guarded import build_config, guard_for, with_metadata
from smoothguard_llamaindex.vote_text import chat_text

__all__ = ["GuardedLLMBase"]

R = TypeVar("R")


class GuardedLLMBase(BaseModel):
    """Mixin of the LlamaIndex guards (put it before the framework base class)."""

    guard_config: GuardConfig = Field(default_factory=GuardConfig, description="SmoothGuard settings.")
    if TYPE_CHECKING:
        llm: Any  # each guard declares the field with the class it wraps

    #: The LlamaIndex class the guard wraps, and what to say when ``llm`` is not one.
    _wraps: ClassVar[tuple[type, ...]] = ()
    _wrong_llm: ClassVar[str] = "llm must be a llama_index LLM, not {name}"

    def __init__(self, llm: Any = None, guard_config: GuardConfig | Mapping[str, Any] | None = None,
                 **kwargs: Any) -> None:
        config = self._settings(llm, guard_config, kwargs)
        super().__init__(llm=llm, guard_config=config, **kwargs)

    @classmethod
    def _settings(cls, llm: Any, guard_config: GuardConfig | Mapping[str, Any] | None,
                  kwargs: dict[str, Any]) -> GuardConfig:
        """Check ``llm``, take the guard settings out of ``kwargs`` and return the resulting :class:`GuardConfig`."""
        if llm is None:
            raise ConfigError(f"{cls.__name__} needs the model to guard: {cls.__name__}(llm=...)")
        if not isinstance(llm, cls._wraps):
            raise ConfigError(cls._wrong_llm.format(name=type(llm).__name__))
        own = set(cls.model_fields)
        return build_config(guard_config, {k: kwargs.pop(k) for k in list(kwargs) if k not in own})

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
            return str(self.llm.metadata.model_name)
        except Exception:
            return type(self.llm).__name__

    def _share_callbacks(self) -> bool:
        """Hook run before every guarded call (SmoothGuardLLM points the inner LLM at its callback manager); True
        when the inner LLM reports to this LLM's handlers."""
        return False

    def _guarded(self, payload: Payload | None, call: Callable[..., R], text: Callable[[R], str], endpoint: str,
                 kwargs: Mapping[str, Any]) -> tuple[R | None, GuardResult]:
        """Run ``call(rebuilt payload, **kwargs)`` once per candidate (the core fan-out's threads) and vote on
        ``text(response)``; ``payload`` None: a request without media, one ``call([], **kwargs)``. ``kwargs`` get
        ``temperature=0`` where the inner LLM takes it (:func:`~smoothguard_llamaindex.decoding.greedy_kwargs`).
        Returns the picked response (None when the refusal message replaced it) and the result."""
        self._share_callbacks()
        kwargs = greedy_kwargs(self.llm, kwargs)
        fan = FanOut(self.guard, call=lambda _, built: call(built, **kwargs), text=text,
                     prepare=None if payload is None else payload.build)
        with self._request(payload, endpoint) as (media, notes):
            result = fan.run(media, notes=notes, auto_resize=rule_for_model(self.llm),
                             auto_resample=rate_for_model(self.llm))
        return self._picked(fan, result, endpoint)

    async def _aguarded(self, read: Callable[[], Payload] | None, call: Callable[..., Awaitable[R]],
                        text: Callable[[R], str], endpoint: str,
                        kwargs: Mapping[str, Any]) -> tuple[R | None, GuardResult]:
        """Async :meth:`_guarded` (tasks); ``read()`` decodes the payload in a worker thread."""
        self._share_callbacks()
        kwargs = greedy_kwargs(self.llm, kwargs)
        payload = None if read is None else await asyncio.to_thread(read)
        fan = FanOut(self.guard, acall=lambda _, built: call(built, **kwargs), text=text,
                     prepare=None if payload is None else payload.build)
        with self._request(payload, endpoint) as (media, notes):
            result = await fan.arun(media, notes=notes, auto_resize=rule_for_model(self.llm),
                                    auto_resample=rate_for_model(self.llm))
        return self._picked(fan, result, endpoint)

    @contextmanager
    def _request(self, payload: Payload | None, endpoint: str) -> Iterator[tuple[list[Media], tuple[str, ...]]]:
        """The payload's media and notes; dispatches the event of a flagged result; closes the payload."""
        try:
            yield (payload.media, payload.notes) if payload is not None else ([], ())
        except GuardFlagged as flagged:
            dispatch_vote(flagged.result, model_name=self._inner_name(), endpoint=endpoint)
            raise
        finally:
            if payload is not None:
                payload.close()

    def _picked(self, fan: FanOut[R], result: GuardResult, endpoint: str) -> tuple[R | None, GuardResult]:
        dispatch_vote(result, model_name=self._inner_name(), endpoint=endpoint)
        return (None if result.refused else fan.chosen(result)), result

    def _messages(self, messages: Sequence[ChatMessage], where: Callable[[int, int], str] | None) -> MessageMedia:
        return MessageMedia(messages, self.guard_config, where=where, fit=image_fit(self.guard_config, self.llm))

    def _chat(self, messages: Sequence[ChatMessage], kwargs: dict[str, Any], endpoint: str,
              where: Callable[[int, int], str] | None = None) -> ChatResponse:
        """One guarded ``chat``: a candidate per noisy copy of the messages' media, the voted response back.
        ``where(i, j)`` names block j of message i in errors and notes."""
        payload = self._messages(messages, where)
        return with_metadata(*self._guarded(payload, self.llm.chat, chat_text, endpoint, kwargs))

    async def _achat(self, messages: Sequence[ChatMessage], kwargs: dict[str, Any], endpoint: str,
                     where: Callable[[int, int], str] | None = None) -> ChatResponse:
        """Async :meth:`_chat`."""
        response, result = await self._aguarded(lambda: self._messages(messages, where), self.llm.achat, chat_text,
                                                endpoint, kwargs)
        return with_metadata(response, result)
