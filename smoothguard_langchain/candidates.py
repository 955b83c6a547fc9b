"""Candidates: the N outputs of one guarded request, what the vote compares in each, and the chosen one.

The vote runs over text. A message's text is its content, or, when it makes tool calls, the canonical JSON of
those calls (``[{"args": ..., "name": ...}]``, keys sorted, calls sorted), so tool-calling candidates are
compared by what they call, not by their (usually empty) text. Structured outputs (pydantic models, dicts,
lists) are compared as canonical JSON.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import json
import os
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from langchain_core.language_models import BaseChatModel
from pydantic import BaseModel

from smoothguard import GuardResult, Media, SmoothGuard
from smoothguard.deadline import late_error, late_note, wait_tasks, wait_threads
from smoothguard.errors import GenerationError, GuardFlagged
from smoothguard.image_resize import rule_for_model

__all__ = ["EVENT_NAME", "Candidates", "add_notes", "annotate_message", "arun_guard", "chat_model", "run_guard",
           "total_usage", "vote_text"]

#: Name of the custom callback event carrying ``GuardResult.to_dict()`` for every guarded request.
EVENT_NAME = "smoothguard_result"

Call = Callable[[list[Any], int, int], Sequence[Any]]
ACall = Callable[[list[Any], int, int], Awaitable[Sequence[Any]]]


class Candidates:
    """Collects every candidate's output across rounds; :meth:`generate` is the ``generate`` of ``SmoothGuard.run``.

    rebuild(variant media) -> one inner input; call(inputs, first candidate index, round width) -> one output or
    exception per input, in order. Under a time budget (:meth:`limit_time`) every candidate is its own call
    (``inputs`` of one), so that those still running at the deadline can be left out: abandoned in a thread
    (a thread cannot be stopped; its late answer is dropped) or cancelled as a task.
    """

    def __init__(self, rebuild: Callable[[list[Media]], Any], call: Call | None = None,
                 acall: ACall | None = None, text: Callable[[Any], Any] | None = None, model: Any = None) -> None:
        self.rebuild = rebuild
        self.auto_resize = rule_for_model(chat_model(model))  # what image_resize="auto" means for the model
        self.call = call
        self.acall = acall
        self.text = text or vote_text
        self.outputs: list[Any] = []
        self.control_flow: BaseException | None = None  # e.g. a LangGraph interrupt raised by a candidate
        self.deadline: float | None = None
        self.budget = 0.0
        self.max_concurrency: int | None = None
        self.late = 0

    def limit_time(self, guard: SmoothGuard) -> float | None:
        """Apply the guard's ``time_budget`` from now; returns the deadline (``time.monotonic()``) or None."""
        self.deadline = guard.deadline_from_now()
        self.budget = guard.config.time_budget or 0.0
        self.max_concurrency = guard.config.max_concurrency
        return self.deadline

    def notes(self) -> list[str]:
        """What the caller should know about this request's candidates (those dropped at the time budget)."""
        return [late_note(self.budget, self.late)] if self.late else []

    def generate(self, variants: list[list[Media]]) -> list[Any]:
        assert self.call is not None
        start = len(self.outputs)
        inputs = self._rebuild_all(variants)
        if self.deadline is not None:
            return self._keep(self._call_each(inputs, start), len(inputs))
        try:
            outputs = list(self.call(inputs, start, len(inputs)))
        except Exception as exc:  # the whole fan-out failed: every candidate of the round failed
            outputs = [exc] * len(inputs)
        return self._keep(outputs, len(inputs))

    async def agenerate(self, variants: list[list[Media]]) -> list[Any]:
        assert self.acall is not None
        start = len(self.outputs)
        inputs = await asyncio.to_thread(self._rebuild_all, variants)
        if self.deadline is not None:
            return self._keep(await self._acall_each(inputs, start), len(inputs))
        try:
            outputs = list(await self.acall(inputs, start, len(inputs)))
        except Exception as exc:
            outputs = [exc] * len(inputs)
        return self._keep(outputs, len(inputs))

    def _call_each(self, inputs: list[Any], start: int) -> list[Any]:
        """One thread per candidate (at most ``max_concurrency``); those not done at the deadline are abandoned."""
        assert self.call is not None and self.deadline is not None
        call, width = self.call, len(inputs)

        def one(k: int) -> Any:
            try:
                return call([inputs[k]], start + k, width)[0]
            except Exception as exc:
                return exc

        pool = ThreadPoolExecutor(min(width, self.max_concurrency or width), thread_name_prefix="smoothguard-call")
        futures = [pool.submit(contextvars.copy_context().run, one, k) for k in range(width)]
        wait_threads(pool, futures, self.deadline)
        return [f.result() if f.done() and not f.cancelled() else self._too_late() for f in futures]

    async def _acall_each(self, inputs: list[Any], start: int) -> list[Any]:
        """One task per candidate (at most ``max_concurrency`` at once); those running at the deadline are cancelled."""
        assert self.acall is not None and self.deadline is not None
        acall, width = self.acall, len(inputs)
        limit = asyncio.Semaphore(self.max_concurrency or width)

        async def one(k: int) -> Any:
            async with limit:
                try:
                    return (await acall([inputs[k]], start + k, width))[0]
                except Exception as exc:
                    return exc

        tasks = [asyncio.ensure_future(one(k)) for k in range(width)]
        await wait_tasks(tasks, self.deadline)
        return [self._too_late() if task.cancelled() else task.result() for task in tasks]

    def _too_late(self) -> TimeoutError:
        self.late += 1
        return late_error(self.budget)

    def _rebuild_all(self, variants: Sequence[list[Media]]) -> list[Any]:
        """One inner input per variant. Drawing the noise (the variants are lazy: each worker reads its own) and
        the PNG/WAV encoding run on all cores, and at most one noisy copy per core is held at once."""
        workers = min(len(variants), os.cpu_count() or 1)
        if workers <= 1:
            return [self.rebuild(v) for v in variants]
        with ThreadPoolExecutor(workers, thread_name_prefix="smoothguard-encode") as pool:
            return list(pool.map(lambda k: self.rebuild(variants[k]), range(len(variants))))

    def _keep(self, outputs: list[Any], n: int) -> list[Any]:
        if len(outputs) != n:  # keep candidate indices aligned; the core reports the miscount
            outputs = (outputs + [RuntimeError("no output")] * n)[:n]
        if self.control_flow is None:
            self.control_flow = next((o for o in outputs if _is_control_flow(o)), None)
        self.outputs.extend(outputs)
        return [self.text(o) for o in outputs]

    def chosen(self, result: GuardResult) -> Any:
        """The output of the representative candidate (candidate 0 for a pass-through request)."""
        index = 0 if result.passthrough or result.representative is None else result.representative
        return self.outputs[index]


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
    """``guard.run`` over ``candidates`` with ``notes`` added to the result (also to a ``GuardFlagged``'s result).

    A request without media is one pass-through call: if it fails, its own exception is raised (not a
    ``GenerationError``), so retry and fallback logic keyed on the model's exception types keeps working.
    A LangGraph interrupt (``GraphBubbleUp``) raised by any candidate is re-raised as it is.
    """
    deadline = candidates.limit_time(guard) if media else None
    with _guard_outcome(media, candidates, notes):
        result = guard.run(media, candidates.generate, deadline=deadline, auto_resize=candidates.auto_resize,
                           lazy=True)
    return add_notes(result, [*notes, *candidates.notes()])


async def arun_guard(guard: SmoothGuard, media: list[Media], candidates: Candidates,
                     notes: Sequence[str]) -> GuardResult:
    """Async :func:`run_guard` (``guard.arun`` over ``candidates.agenerate``)."""
    deadline = candidates.limit_time(guard) if media else None
    with _guard_outcome(media, candidates, notes):
        result = await guard.arun(media, candidates.agenerate, deadline=deadline, auto_resize=candidates.auto_resize,
                                  lazy=True)
    return add_notes(result, [*notes, *candidates.notes()])


@contextmanager
def _guard_outcome(media: list[Media], candidates: Candidates, notes: Sequence[str]) -> Iterator[None]:
    """Around one guarded run: re-raise control flow first, annotate a flagged result, surface pass-through causes."""
    try:
        yield
    except GuardFlagged as exc:
        _raise_control_flow(candidates)
        exc.result = add_notes(exc.result, [*notes, *candidates.notes()])
        raise
    except GenerationError as exc:
        _raise_control_flow(candidates)
        _raise_passthrough_cause(exc, media)
        raise
    _raise_control_flow(candidates)


def _is_control_flow(x: Any) -> bool:
    """LangGraph's interrupts and other ``GraphBubbleUp`` signals: never a failed candidate, always re-raised."""
    return isinstance(x, BaseException) and any(c.__name__ == "GraphBubbleUp" for c in type(x).__mro__)


def _raise_control_flow(candidates: Candidates) -> None:
    if candidates.control_flow is not None:
        raise candidates.control_flow


def _raise_passthrough_cause(exc: GenerationError, media: list[Media]) -> None:
    if not media and len(exc.causes) == 1 and isinstance(exc.causes[0][1], Exception):
        raise exc.causes[0][1]


def vote_text(output: Any) -> Any:
    """What the vote compares for one output: text, tool-call JSON or canonical JSON; failures pass through."""
    from langchain_core.messages import BaseMessage

    if isinstance(output, BaseException | str) or output is None:
        return output
    if isinstance(output, BaseMessage):
        calls = _tool_calls(output)
        return _dumps(calls) if calls else output.text
    if isinstance(output, dict) and {"raw", "parsed"} <= output.keys():  # with_structured_output(include_raw)
        return vote_text(output["parsed"] if output["parsed"] is not None else output["raw"])
    return _dumps(_plain(output))


def _tool_calls(message: Any) -> list[dict[str, Any]]:
    calls = [{"name": c.get("name"), "args": c.get("args", {})} for c in getattr(message, "tool_calls", None) or []]
    calls += [{"name": c.get("name"), "args": c.get("args"), "invalid": True}
              for c in getattr(message, "invalid_tool_calls", None) or []]
    return sorted(calls, key=_dumps)


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


def _dumps(x: Any) -> str:
    return json.dumps(x, sort_keys=True, ensure_ascii=False, default=str)


def add_notes(result: GuardResult, notes: Sequence[str]) -> GuardResult:
    """``result`` with ``notes`` appended."""
    if not notes:
        return result
    return dataclasses.replace(result, notes=result.notes + tuple(notes))


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
