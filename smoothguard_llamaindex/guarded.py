"""The guard behind a config, and what a guarded response carries: the picked response with
``GuardResult.to_dict()`` under ``additional_kwargs["smoothguard"]``, streamed as one chunk.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from typing import Any

from llama_index.core.base.llms.types import ChatMessage, ChatResponse, CompletionResponse, MessageRole

from smoothguard import GuardConfig, GuardResult, SmoothGuard
from smoothguard.errors import ConfigError

__all__ = ["METADATA_KEY", "aone_chunk", "build_config", "guard_for", "one_chunk", "with_metadata"]

#: Key of ``GuardResult.to_dict()`` in a response's ``additional_kwargs``.
METADATA_KEY = "smoothguard"

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
