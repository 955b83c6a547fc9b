"""Candidates: the N outputs of one guarded request, what the vote compares in each, and the chosen one.

The vote runs over text. A message's text is its content, or, when it makes tool calls, the core's canonical JSON
of those calls (:mod:`smoothguard.tool_calls`), so tool-calling candidates are compared by what they call, not by
their (usually empty) text. Structured outputs (pydantic models, dicts, lists) are compared as canonical JSON.
The fan-out itself (concurrency, time budget, failures, notes) is the core's :class:`smoothguard.fanout.FanOut`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from langchain_core.language_models import BaseChatModel
from pydantic import BaseModel

from smoothguard import GuardResult, Media, SmoothGuard
from smoothguard import tool_calls as canonical
from smoothguard.errors import GenerationError, GuardFlagged
from smoothguard.fanout import FanOut
from smoothguard.image_resize import rule_for_model

__all__ = ["EVENT_NAME", "Candidates", "annotate_message", "arun_guard", "chat_model", "run_guard", "total_usage",
           "vote_text"]

#: Name of the custom callback event carrying ``GuardResult.to_dict()`` for every guarded request.
EVENT_NAME = "smoothguard_result"

Call = Callable[[list[Any], int, int], Sequence[Any]]
ACall = Callable[[list[Any], int, int], Awaitable[Sequence[Any]]]


class Candidates:
    """One guarded request's candidates in LangChain's terms, fanned out by :class:`smoothguard.fanout.FanOut`.

    rebuild(variant media) -> one inner input; call(inputs, candidate index, round width) -> one output or
    exception per input (``Runnable.batch(..., return_exceptions=True)``), called with one input per candidate
    so that concurrency, the time budget and failures are the core fan-out's. text(output) -> what is voted on.
    model: the wrapped runnable (it decides what ``image_resize="auto"`` means).
    """

    def __init__(self, rebuild: Callable[[list[Media]], Any], call: Call | None = None,
                 acall: ACall | None = None, text: Callable[[Any], Any] | None = None, model: Any = None) -> None:
        self.rebuild = rebuild
        self.auto_resize = rule_for_model(chat_model(model))  # what image_resize="auto" means for the model
        self.call = call
        self.acall = acall
        self.text = text or vote_text
        self.control_flow: BaseException | None = None  # e.g. a LangGraph interrupt raised by a candidate
        self.fan: FanOut[Any] | None = None

    @property
    def outputs(self) -> list[Any]:
        """Every candidate's output (or exception), in candidate order."""
        return [] if self.fan is None else [self.fan.outputs[i] for i in sorted(self.fan.outputs)]

    def fan_out(self, guard: SmoothGuard) -> FanOut[Any]:
        """The core fan-out over this request's candidates."""
        width = guard.config.n_samples

        def call(index: int, inner: Any) -> Any:
            assert self.call is not None
            try:
                return self._one(self.call([inner], index, width))
            except Exception as exc:
                return self._one([exc])

        async def acall(index: int, inner: Any) -> Any:
            assert self.acall is not None
            try:
                return self._one(await self.acall([inner], index, width))
            except Exception as exc:
                return self._one([exc])

        self.fan = FanOut(guard, call=call if self.call else None, acall=acall if self.acall else None,
                          prepare=self.rebuild, text=self.text)
        return self.fan

    def _one(self, outputs: Sequence[Any]) -> Any:
        output = outputs[0] if len(outputs) == 1 else RuntimeError(f"the model returned {len(outputs)} outputs "
                                                                   "for one input")
        if self.control_flow is None and _is_control_flow(output):
            self.control_flow = output
        return output

    def chosen(self, result: GuardResult) -> Any:
        """The output of the representative candidate (candidate 0 for a pass-through request)."""
        assert self.fan is not None
        return self.fan.chosen(result)


def chat_model(runnable: Any) -> Any:
    """The chat model inside ``runnable``: itself, or the one under bindings (``bind_tools``, ``with_config``),
    configurable alternatives (the default) and sequences (``prompt | model | parser``); None if there is none."""
    for _ in range(32):
        if runnable is None or isinstance(runnable, BaseChatModel):
            return runnable
        inner = getattr(runnable, "bound", None) or getattr(runnable, "default", None)
        if inner is None:
            steps = getattr(runnable, "steps", None) or []
            inner = next((m for m in map(chat_model, steps) if m is not None), None)
            return inner
        runnable = inner
    return None


def run_guard(guard: SmoothGuard, media: list[Media], candidates: Candidates, notes: Sequence[str]) -> GuardResult:
    """The core fan-out over ``candidates`` (threads), with ``notes`` added to the result (also to a
    ``GuardFlagged``'s result). Failures are the core's (:mod:`smoothguard.fanout`): the provider's own exception
    type where the candidates' failures agree, and a pass-through request raises its call's own exception.
    A LangGraph interrupt (``GraphBubbleUp``) raised by any candidate is re-raised as it is.
    """
    with _control_flow(candidates):
        return candidates.fan_out(guard).run(media, notes=notes, auto_resize=candidates.auto_resize)


async def arun_guard(guard: SmoothGuard, media: list[Media], candidates: Candidates,
                     notes: Sequence[str]) -> GuardResult:
    """Async :func:`run_guard` (tasks)."""
    with _control_flow(candidates):
        return await candidates.fan_out(guard).arun(media, notes=notes, auto_resize=candidates.auto_resize)


@contextmanager
def _control_flow(candidates: Candidates) -> Iterator[None]:
    """Re-raise a candidate's control flow (a LangGraph interrupt) before any outcome of the vote."""
    try:
        yield
    except (GuardFlagged, GenerationError):
        if candidates.control_flow is not None:
            raise candidates.control_flow from None
        raise
    if candidates.control_flow is not None:
        raise candidates.control_flow


def _is_control_flow(x: Any) -> bool:
    """LangGraph's interrupts and other ``GraphBubbleUp`` signals: never a failed candidate, always re-raised."""
    return isinstance(x, BaseException) and any(c.__name__ == "GraphBubbleUp" for c in type(x).__mro__)


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


def total_usage(outputs: Sequence[Any]) -> dict[str, Any] | None:
    """Token usage summed over every candidate message that reports it (None when none does)."""
    from langchain_core.messages.ai import add_usage

    total = None
    for output in outputs:
        usage = getattr(output, "usage_metadata", None)
        if usage:
            total = add_usage(total, usage)
    return dict(total) if total else None


def annotate_message(message: Any, result: GuardResult, outputs: Sequence[Any]) -> Any:
    """A copy of ``message`` with ``response_metadata["smoothguard"] = result.to_dict()`` (and the total usage
    of the candidate messages ``outputs`` under ``"smoothguard_usage"``)."""
    meta = {**(getattr(message, "response_metadata", None) or {}), "smoothguard": result.to_dict()}
    usage = total_usage(outputs)
    if usage:
        meta["smoothguard_usage"] = usage
    return message.model_copy(update={"response_metadata": meta})
