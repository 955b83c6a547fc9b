"""One guarded call, end to end: extract the media, fan out, vote, annotate, dispatch the event.

Shared by :class:`~smoothguard_llamaindex.SmoothGuardLLM` and
:class:`~smoothguard_llamaindex.SmoothGuardMultiModalLLM`. The payload (messages or image documents) is
read once; each candidate gets its own rebuilt copy; the response the vote picks is returned with
``GuardResult.to_dict()`` under ``additional_kwargs["smoothguard"]``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar

from llama_index.core.base.llms.types import ChatMessage, ChatResponse, CompletionResponse, MessageRole

from smoothguard import GuardConfig, GuardFlagged, GuardResult, Media, SmoothGuard
from smoothguard.errors import ConfigError
from smoothguard.fanout import FanOut
from smoothguard.image_resize import rule_for_model
from smoothguard_llamaindex.events import dispatch_vote

__all__ = ["METADATA_KEY", "Payload", "aguarded_call", "build_config", "guard_for", "guarded_call", "with_metadata"]

#: Key of ``GuardResult.to_dict()`` in a response's ``additional_kwargs``.
METADATA_KEY = "smoothguard"

R = TypeVar("R")


class Payload(Protocol):
    """Media found in a request, and the request rebuilt around other media (see :mod:`.blocks`)."""

    @property
    def media(self) -> list[Media]: ...

    @property
    def notes(self) -> tuple[str, ...]: ...

    def build(self, variant: list[Media], tag: int | str = 0) -> Any: ...

    def close(self) -> None: ...


@functools.lru_cache(maxsize=64)
def guard_for(config: GuardConfig) -> SmoothGuard:
    """The :class:`SmoothGuard` for ``config`` (guards hold no per-request state, so one per config is shared)."""
    return SmoothGuard(config)


def build_config(guard_config: GuardConfig | Mapping[str, Any] | None, settings: Mapping[str, Any]) -> GuardConfig:
    """``guard_config`` (a GuardConfig, a dict of settings, or None for the defaults) with ``settings`` applied.

    Raises :class:`ConfigError` for an invalid value or an unknown setting (with the closest known name).
    """
    if guard_config is None:
        return GuardConfig.from_kwargs(**settings)
    if isinstance(guard_config, GuardConfig):
        return guard_config.replace(**settings) if settings else guard_config
    if isinstance(guard_config, Mapping):
        return GuardConfig.from_kwargs(**{**guard_config, **settings})
    raise ConfigError(f"guard_config must be a GuardConfig, a dict of settings or None, "
                      f"not {type(guard_config).__name__}")


def guarded_call(guard: SmoothGuard, payload: Payload | None, call: Callable[[Any], R], text: Callable[[R], str],
                 *, model_name: str, endpoint: str, model: Any = None) -> tuple[R | None, GuardResult]:
    """Run ``call(rebuilt payload)`` once per candidate (threads) and vote on ``text(response)``.

    ``model``: the wrapped LLM, which decides what ``image_resize="auto"`` means.
    Returns the picked response (None when the answer was replaced by the refusal message) and the result.
    ``payload`` None means a request without media: one call, ``call(None)``.
    """
    try:
        def one(index: int, variant: list[Media]) -> R:
            return call(payload.build(variant, index) if payload is not None else None)

        try:
            responses = FanOut(guard, call=one, text=text)
            result = responses.run(payload.media if payload else [], auto_resize=rule_for_model(model))
        except GuardFlagged as flagged:
            _flagged(flagged, payload, model_name, endpoint)
        result = _annotate(result, payload, model_name, endpoint)
        return (None if result.refused else responses.chosen(result)), result
    finally:
        if payload is not None:
            payload.close()


async def aguarded_call(guard: SmoothGuard, payload: Payload | None, call: Callable[[Any], Awaitable[R]],
                        text: Callable[[R], str], *, model_name: str, endpoint: str,
                        model: Any = None) -> tuple[R | None, GuardResult]:
    """:func:`guarded_call` for an async ``call``; payloads are rebuilt (encoded) in worker threads."""
    try:
        async def one(index: int, variant: list[Media]) -> R:
            built = await asyncio.to_thread(payload.build, variant, index) if payload is not None else None
            return await call(built)

        try:
            responses = FanOut(guard, acall=one, text=text)
            result = await responses.arun(payload.media if payload else [], auto_resize=rule_for_model(model))
        except GuardFlagged as flagged:
            _flagged(flagged, payload, model_name, endpoint)
        result = _annotate(result, payload, model_name, endpoint)
        return (None if result.refused else responses.chosen(result)), result
    finally:
        if payload is not None:
            payload.close()


def with_metadata(response: ChatResponse | CompletionResponse | None, result: GuardResult,
                  kind: type[ChatResponse] | type[CompletionResponse] = ChatResponse) -> Any:
    """A copy of ``response`` with ``result.to_dict()`` under ``additional_kwargs["smoothguard"]``.

    ``response`` None (refused) gives a fresh ``kind`` response holding the refusal message.
    """
    extra = {METADATA_KEY: result.to_dict()}
    if response is None:
        if kind is CompletionResponse:
            return CompletionResponse(text=result.answer, additional_kwargs=extra)
        message = ChatMessage(role=MessageRole.ASSISTANT, content=result.answer)
        return ChatResponse(message=message, additional_kwargs=extra)
    return response.model_copy(update={"additional_kwargs": {**response.additional_kwargs, **extra}})


def _annotate(result: GuardResult, payload: Payload | None, model_name: str, endpoint: str) -> GuardResult:
    if payload is not None and payload.notes:
        result = dataclasses.replace(result, notes=result.notes + payload.notes)
    dispatch_vote(result, model_name=model_name, endpoint=endpoint)
    return result


def _flagged(flagged: GuardFlagged, payload: Payload | None, model_name: str, endpoint: str) -> None:
    result = _annotate(flagged.result, payload, model_name, endpoint)
    raise GuardFlagged(result) from None
