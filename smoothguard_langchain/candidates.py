"""Candidates: the N outputs of one guarded request, what the vote compares in each, and the chosen one.

The vote runs over text. A message's text is its content, or, when it makes tool calls, the core's canonical JSON
of those calls (:mod:`smoothguard.tool_calls`), so tool-calling candidates are compared by what they call, not by
their (usually empty) text. Structured outputs (pydantic models, dicts, lists) are compared as canonical JSON.
The fan-out itself (concurrency, time budget, failures, notes) is the core's :class:`smoothguard.fanout.FanOut`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import Runnable, RunnableConfig
from pydantic import BaseModel

from smoothguard import GuardResult, Media, SmoothGuard
from smoothguard import tool_calls as canonical
from smoothguard.audio_resample import rate_for_model
from smoothguard.errors import GenerationError, GuardFlagged
from smoothguard.fanout import FanOut
from smoothguard.image_resize import rule_for_model
from smoothguard_langchain.callbacks import aemit_result, emit_result, fanout_context

if TYPE_CHECKING:
    from smoothguard_langchain.blocks import MessageMedia
    from smoothguard_langchain.inputs import InputMedia

__all__ = ["annotate_message", "arun_batch", "arun_guard", "chat_model", "run_batch", "run_guard", "total_usage",
           "vote_text"]

Rebuild = Callable[[list[Media]], Any]


def run_guard(guard: SmoothGuard, media: list[Media], notes: Sequence[str], *, rebuild: Rebuild,
              call: Callable[[int, Any], Any], model: Any,
              text: Callable[[Any], Any] | None = None) -> tuple[GuardResult, FanOut[Any]]:
    """The core fan-out (threads) of one request: ``rebuild(variant)`` is a candidate's input, ``call(index,
    input)`` its output, ``text(output)`` what the vote compares; ``model`` (the wrapped runnable) says what
    ``image_resize="auto"`` and ``audio_resample="auto"`` mean. ``notes`` reach the result (also a
    ``GuardFlagged``'s). Failures are the core's (:mod:`smoothguard.fanout`); a LangGraph interrupt
    (``GraphBubbleUp``) raised by a candidate is re-raised as it is. Returns the result and the fan-out, whose
    ``outputs`` hold every candidate's output."""
    fan = FanOut(guard, call=call, prepare=rebuild, text=text or vote_text)
    with _control_flow(fan):
        inner = chat_model(model)
        return fan.run(media, notes=notes, auto_resize=rule_for_model(inner), auto_resample=rate_for_model(inner)), fan


async def arun_guard(guard: SmoothGuard, media: list[Media], notes: Sequence[str], *, rebuild: Rebuild,
                     acall: Callable[[int, Any], Awaitable[Any]], model: Any,
                     text: Callable[[Any], Any] | None = None) -> tuple[GuardResult, FanOut[Any]]:
    """Async :func:`run_guard` (tasks)."""
    fan = FanOut(guard, acall=acall, prepare=rebuild, text=text or vote_text)
    with _control_flow(fan):
        inner = chat_model(model)
        return await fan.arun(media, notes=notes, auto_resize=rule_for_model(inner),
                              auto_resample=rate_for_model(inner)), fan


def run_batch(guard: SmoothGuard, found: MessageMedia | InputMedia, runnable: Runnable[Any, Any], run_manager: Any,
              config: Callable[[int], RunnableConfig], kwargs: dict[str, Any]) -> tuple[GuardResult, FanOut[Any]]:
    """:func:`run_guard` with ``runnable.batch`` as the model: each candidate is one ``batch([input],
    [config(index)], **kwargs)`` (one input each, so concurrency and the time budget stay the fan-out's), run as
    a child of ``run_manager``'s run (:func:`~smoothguard_langchain.callbacks.fanout_context`). The result is
    also sent as the ``smoothguard_result`` event."""

    def call(index: int, inner: Any) -> Any:
        with fanout_context(run_manager) as ctx:
            return _single(ctx.run(runnable.batch, [inner], [config(index)], return_exceptions=True, **kwargs))

    result, fan = run_guard(guard, found.media, found.notes, rebuild=found.rebuild, call=call, model=runnable)
    emit_result(run_manager, result.to_dict())
    return result, fan


async def arun_batch(guard: SmoothGuard, found: MessageMedia | InputMedia, runnable: Runnable[Any, Any],
                     run_manager: Any, config: Callable[[int], RunnableConfig],
                     kwargs: dict[str, Any]) -> tuple[GuardResult, FanOut[Any]]:
    """Async :func:`run_batch` (``runnable.abatch``)."""

    async def acall(index: int, inner: Any) -> Any:
        with fanout_context(run_manager, is_async=True) as ctx:
            batch = runnable.abatch([inner], [config(index)], return_exceptions=True, **kwargs)
            return _single(await asyncio.create_task(batch, context=ctx))

    result, fan = await arun_guard(guard, found.media, found.notes, rebuild=found.rebuild, acall=acall,
                                   model=runnable)
    await aemit_result(run_manager, result.to_dict())
    return result, fan


def _single(outputs: Sequence[Any]) -> Any:
    if len(outputs) == 1:
        return outputs[0]
    return RuntimeError(f"the model returned {len(outputs)} outputs for one input")


@contextmanager
def _control_flow(fan: FanOut[Any]) -> Iterator[None]:
    """Re-raise a candidate's control flow (a LangGraph interrupt) before any outcome of the vote."""
    try:
        yield
    except (GuardFlagged, GenerationError):
        if (signal := _control_flow_of(fan)) is not None:
            raise signal from None
        raise
    if (signal := _control_flow_of(fan)) is not None:
        raise signal


def _control_flow_of(fan: FanOut[Any]) -> BaseException | None:
    """The first candidate exception that is a LangGraph ``GraphBubbleUp`` (an interrupt): never a failed
    candidate, always re-raised."""
    for _, output in sorted(fan.outputs.items()):
        if isinstance(output, BaseException) and any(c.__name__ == "GraphBubbleUp" for c in type(output).__mro__):
            return output
    return None


def chat_model(runnable: Any) -> Any:
    """The chat model inside ``runnable``: itself, or the one under bindings (``bind_tools``, ``with_config``),
    configurable alternatives (the default) and sequences (``prompt | model | parser``); None if there is none."""
    for _ in range(32):
        if runnable is None or isinstance(runnable, BaseChatModel):
            return runnable
        inner = getattr(runnable, "bound", None) or getattr(runnable, "default", None)
        if inner is None:
            steps = getattr(runnable, "steps", None) or []
            return next((m for m in map(chat_model, steps) if m is not None), None)
        runnable = inner
    return None


def vote_text(output: Any) -> Any:
    """What the vote compares for one output: text, tool calls (:mod:`smoothguard.tool_calls`) or canonical JSON;
    failures pass through."""
    from langchain_core.messages import BaseMessage

    if isinstance(output, BaseException | str) or output is None:
        return output
    if isinstance(output, BaseMessage):
        calls = [(c.get("name"), c.get("args", {})) for c in getattr(output, "tool_calls", None) or []]
        calls += [(c.get("name"), c.get("args")) for c in getattr(output, "invalid_tool_calls", None) or []]
        return canonical.vote_text(output.text, calls)
    if isinstance(output, dict) and {"raw", "parsed"} <= output.keys():  # with_structured_output(include_raw)
        return vote_text(output["parsed"] if output["parsed"] is not None else output["raw"])
    return canonical.dumps(_plain(output))


def _plain(x: Any) -> Any:
    from langchain_core.messages import BaseMessage

    if isinstance(x, BaseModel):
        return x.model_dump(mode="json")
    if isinstance(x, BaseMessage):
        return vote_text(x)
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    if x is None or isinstance(x, bool | int | float | str):
        return x
    return str(x)


def total_usage(outputs: Iterable[Any]) -> dict[str, Any] | None:
    """Token usage summed over every candidate message that reports it (None when none does)."""
    from langchain_core.messages.ai import add_usage

    total = None
    for output in outputs:
        usage = getattr(output, "usage_metadata", None)
        if usage:
            total = add_usage(total, usage)
    return dict(total) if total else None


def annotate_message(message: Any, result: GuardResult, outputs: Iterable[Any]) -> Any:
    """A copy of ``message`` with ``response_metadata["smoothguard"] = result.to_dict()`` (and the total usage
    of the candidate messages ``outputs`` under ``"smoothguard_usage"``)."""
    meta = {**(getattr(message, "response_metadata", None) or {}), "smoothguard": result.to_dict()}
    usage = total_usage(outputs)
    if usage:
        meta["smoothguard_usage"] = usage
    return message.model_copy(update={"response_metadata": meta})
