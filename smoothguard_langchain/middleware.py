"""SmoothGuardMiddleware: guard every model call of a ``langchain.agents.create_agent`` agent, keeping its model.

>>> agent = create_agent(model=llm, tools=[...], middleware=[SmoothGuardMiddleware(n_samples=11, sigma=0.1)])

``wrap_model_call`` copies the request ``n_samples`` times with noisy images/audio in its messages, runs the
rest of the middleware stack and the model once per copy, concurrently through the core fan-out
(:class:`smoothguard.fanout.FanOut`: threads for ``invoke``, tasks for ``ainvoke``; at most ``max_concurrency`` at
a time, ``time_budget`` applied), votes over the answers (tool calls by their JSON, structured
responses by their canonical JSON) and returns the representative response. Its ``AIMessage`` carries
``response_metadata["smoothguard"] = GuardResult.to_dict()``. A model call without media is passed through once.
Candidate runs are tagged ``smoothguard:sample:<i>`` and ``nostream``, so ``stream_mode="messages"`` shows only
the chosen message. Needs the ``langchain`` package (``pip install 'smoothguard[langchain]'``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables.config import ensure_config, set_config_context

from smoothguard import GuardConfig, GuardResult, SmoothGuard
from smoothguard.fanout import FanOut
from smoothguard_langchain.blocks import MessageMedia, find_media, image_fit
from smoothguard_langchain.callbacks import NOSTREAM_TAG, candidate_tag, without_stream_consumers
from smoothguard_langchain.candidates import annotate_message, arun_guard, run_guard, vote_text
from smoothguard_langchain.decoding import greedy_temperature

__all__ = ["SmoothGuardMiddleware"]


class SmoothGuardMiddleware(AgentMiddleware):
    """Agent middleware defending the agent's model calls with SmoothGuard.

    ``SmoothGuardMiddleware(sigma=0.1, n_samples=11)`` or ``SmoothGuardMiddleware(GuardConfig(...))``; every
    setting is a :class:`smoothguard.GuardConfig` setting (invalid ones raise ``ConfigError`` here).
    """

    def __init__(self, config: GuardConfig | None = None, /, **settings: Any) -> None:
        super().__init__()
        self.guard = SmoothGuard(config, **settings)

    @property
    def config(self) -> GuardConfig:
        return self.guard.config

    def warmup(self) -> SmoothGuardMiddleware:
        """Load the embedder now (quietly), so the agent's first guarded call does not pay for it; returns ``self``."""
        self.guard.warmup()
        return self

    # -- hooks --------------------------------------------------------------------------------------------

    def wrap_model_call(self, request: ModelRequest, handler: Callable[[ModelRequest], Any]) -> Any:
        found = find_media(_messages(request), self.config, where="request.messages",
                           fit=image_fit(self.config, request.model))

        def call(index: int, candidate: ModelRequest) -> Any:
            if not found.slots:
                return handler(candidate)  # pass-through: no tags
            with set_config_context(_candidate_config(index)) as ctx:
                return ctx.run(handler, candidate)

        return _response(*run_guard(self.guard, found.media, found.notes, rebuild=_rebuilder(request, found),
                                    call=call, text=_vote, model=request.model))

    async def awrap_model_call(self, request: ModelRequest,
                               handler: Callable[[ModelRequest], Awaitable[Any]]) -> Any:
        found = await asyncio.to_thread(find_media, _messages(request), self.config, where="request.messages",
                                        fit=image_fit(self.config, request.model))

        async def acall(index: int, candidate: ModelRequest) -> Any:
            if not found.slots:
                return await handler(candidate)
            with set_config_context(_candidate_config(index)) as ctx:
                return await asyncio.create_task(handler(candidate), context=ctx)

        return _response(*await arun_guard(self.guard, found.media, found.notes, rebuild=_rebuilder(request, found),
                                           acall=acall, text=_vote, model=request.model))


def _messages(request: ModelRequest) -> list[Any]:
    return [request.system_message, *request.messages] if request.system_message is not None else request.messages


def _rebuilder(request: ModelRequest, found: MessageMedia) -> Callable[[Sequence[Any]], ModelRequest]:
    """The request of one candidate: its messages rebuilt around the variant, asking for greedy decoding."""
    if not found.slots:
        return lambda media: request
    extra: dict[str, Any] = {}
    if "temperature" not in request.model_settings and greedy_temperature(request.model):
        extra["model_settings"] = {**request.model_settings, "temperature": 0}  # greedy candidates

    def rebuild(media: Sequence[Any]) -> ModelRequest:
        messages = found.rebuild(media)
        if request.system_message is not None:
            return request.override(system_message=messages[0], messages=messages[1:], **extra)
        return request.override(messages=messages, **extra)

    return rebuild


def _candidate_config(index: int) -> dict[str, Any]:
    """The current (model node's) config for candidate ``index``: tagged, and without stream consumers."""
    config = ensure_config()
    return {**config, "callbacks": without_stream_consumers(config.get("callbacks")),
            "tags": [*config.get("tags", []), NOSTREAM_TAG, candidate_tag(index)]}


def _model_response(output: Any) -> ModelResponse | None:
    if isinstance(output, ModelResponse):
        return output
    if isinstance(output, AIMessage):
        return ModelResponse(result=[output])
    inner = getattr(output, "model_response", None)  # ExtendedModelResponse
    return inner if isinstance(inner, ModelResponse) else None


def _ai_index(response: ModelResponse) -> int | None:
    for i in range(len(response.result) - 1, -1, -1):
        if isinstance(response.result[i], AIMessage):
            return i
    return None


def _vote(output: Any) -> Any:
    if isinstance(output, BaseException):
        return output
    response = _model_response(output)
    if response is None:
        return TypeError(f"the model call returned {type(output).__name__}")
    if response.structured_response is not None:
        return vote_text(response.structured_response)
    index = _ai_index(response)
    return vote_text(response.result[index]) if index is not None else None


def _response(result: GuardResult, fan: FanOut[Any]) -> Any:
    replies = [m for o in fan.outputs.values() if (r := _model_response(o)) is not None
               for m in r.result if isinstance(m, AIMessage)]
    if result.refused:
        message: BaseMessage = annotate_message(AIMessage(content=result.answer), result, replies)
        return ModelResponse(result=[message])
    output = fan.chosen(result)
    response = _model_response(output)
    if response is None or (index := _ai_index(response)) is None:
        return output
    messages = list(response.result)
    messages[index] = annotate_message(messages[index], result, replies)
    new = ModelResponse(result=messages, structured_response=response.structured_response)
    if response is not output:  # ExtendedModelResponse: keep its command
        return type(output)(model_response=new, command=getattr(output, "command", None))
    return new
