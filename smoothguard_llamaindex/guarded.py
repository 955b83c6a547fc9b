"""One guarded call, end to end: extract the media, fan out, vote, annotate, dispatch the event.

Shared by :class:`~smoothguard_llamaindex.SmoothGuardLLM` and
:class:`~smoothguard_llamaindex.SmoothGuardMultiModalLLM`. The payload (messages or image documents) is read
once; the core's :class:`~smoothguard.fanout.FanOut` rebuilds a copy of it per candidate (its ``prepare``) and
makes the calls; the response the vote picks is returned with ``GuardResult.to_dict()`` under
``additional_kwargs["smoothguard"]``.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

from llama_index.core.base.llms.types import ChatMessage, ChatResponse, CompletionResponse, MessageRole

from smoothguard import GuardConfig, GuardFlagged, GuardResult, Media, SmoothGuard
from smoothguard.errors import ConfigError
from smoothguard.fanout import FanOut
from smoothguard.image_resize import rule_for_model
from smoothguard_llamaindex.blocks import Payload
from smoothguard_llamaindex.events import dispatch_vote

__all__ = ["METADATA_KEY", "aguarded_call", "aone_chunk", "build_config", "guard_for", "guarded_call", "one_chunk",
           "with_metadata"]

#: Key of ``GuardResult.to_dict()`` in a response's ``additional_kwargs``.
METADATA_KEY = "smoothguard"

R = TypeVar("R")


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

    ``payload`` None: a request without media, one call, ``call([])``. ``model``: the wrapped LLM, which decides
    what ``image_resize="auto"`` means. Returns the picked response (None when the answer was replaced by the
    refusal message) and the result.
    """
    fan = FanOut(guard, call=lambda _, built: call(built), text=text,
                 prepare=None if payload is None else payload.build)
    with _request(payload, model_name, endpoint) as (media, notes):
        result = fan.run(media, notes=notes, auto_resize=rule_for_model(model))
    return _picked(fan, result, model_name, endpoint)


async def aguarded_call(guard: SmoothGuard, payload: Payload | None, call: Callable[[Any], Awaitable[R]],
                        text: Callable[[R], str], *, model_name: str, endpoint: str,
                        model: Any = None) -> tuple[R | None, GuardResult]:
    """:func:`guarded_call` for an async ``call`` (payloads are rebuilt in worker threads)."""
    fan = FanOut(guard, acall=lambda _, built: call(built), text=text,
                 prepare=None if payload is None else payload.build)
    with _request(payload, model_name, endpoint) as (media, notes):
        result = await fan.arun(media, notes=notes, auto_resize=rule_for_model(model))
    return _picked(fan, result, model_name, endpoint)


@contextmanager
def _request(payload: Payload | None, model_name: str, endpoint: str) -> Iterator[tuple[list[Media], tuple[str, ...]]]:
    """The payload's media and notes for the fan-out; dispatches the event of a flagged result; closes the payload."""
    try:
        yield (payload.media, payload.notes) if payload is not None else ([], ())
    except GuardFlagged as flagged:
        dispatch_vote(flagged.result, model_name=model_name, endpoint=endpoint)
        raise
    finally:
        if payload is not None:
            payload.close()


def _picked(fan: FanOut[R], result: GuardResult, model_name: str, endpoint: str) -> tuple[R | None, GuardResult]:
    dispatch_vote(result, model_name=model_name, endpoint=endpoint)
    return (None if result.refused else fan.chosen(result)), result


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


def one_chunk(response: Any) -> Iterator[Any]:
    """A stream of one chunk: ``response`` with its whole text as ``delta`` (the vote needs every answer first)."""
    yield _whole(response)


async def aone_chunk(response: Any) -> Any:
    """Async :func:`one_chunk`."""
    yield _whole(response)


def _whole(response: ChatResponse | CompletionResponse) -> Any:
    text = response.text if isinstance(response, CompletionResponse) else response.message.content or ""
    return response.model_copy(update={"delta": text})
