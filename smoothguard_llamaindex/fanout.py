"""The concurrent fan-out of one guarded call: N inner calls, then the vote, keeping every candidate's response.

Sync: one thread per candidate (at most ``max_concurrency`` at once), each run in a copy of the caller's
``contextvars`` context, so the inner calls' instrumentation spans nest under the guard's span and
callback traces stay attached. Async: one task per candidate, bounded by an ``asyncio.Semaphore``. A candidate
whose call raises is recorded (its exception) and left out of the vote. Under ``time_budget``, candidates still
running at the deadline are left out too: abandoned in their thread (which cannot be stopped; the late answer is
dropped) or cancelled as a task.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import json
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from llama_index.core.base.llms.types import ChatMessage, ChatResponse, ToolCallBlock

from smoothguard import GuardResult, Media, SmoothGuard
from smoothguard.deadline import late_error, late_note, wait_tasks, wait_threads
from smoothguard.errors import GuardFlagged

__all__ = ["Fanout", "chat_text", "run_async", "run_sync"]

R = TypeVar("R")


class Fanout(dict[int, Any]):
    """Candidate index -> the inner model's response (only for candidates whose call succeeded); ``late``: how many
    candidates missed the time budget."""

    late = 0

    def pick(self, result: GuardResult) -> Any:
        """The response the vote chose (candidate 0's for a pass-through request)."""
        index = result.representative if result.representative is not None else 0
        return self[index]


def run_sync(guard: SmoothGuard, media: Sequence[Media], call: Callable[[int, list[Media]], R],
             text: Callable[[R], str], auto_resize: str | None = None) -> tuple[GuardResult, Fanout]:
    """Guard ``call(candidate_index, variant) -> response`` with threads; ``text(response)`` is what is voted on."""
    responses = Fanout()
    offset = 0
    limit = guard.config.max_concurrency
    deadline = guard.deadline_from_now() if media else None

    def generate(variants: list[list[Media]]) -> list[Any]:
        nonlocal offset
        jobs = [(offset + k, variant) for k, variant in enumerate(variants)]
        offset += len(variants)
        workers = max(1, min(len(jobs), limit or len(jobs)))
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="smoothguard")
        futures = [pool.submit(contextvars.copy_context().run, call, i, v) for i, v in jobs]
        wait_threads(pool, futures, deadline)
        return [_settle(responses, i, f, text, guard) for (i, _), f in zip(jobs, futures, strict=True)]

    with _late_noted(responses, guard):
        result = guard.run(media, generate, deadline=deadline, auto_resize=auto_resize)
    return _noted(result, responses, guard), responses


async def run_async(guard: SmoothGuard, media: Sequence[Media], call: Callable[[int, list[Media]], Awaitable[R]],
                    text: Callable[[R], str], auto_resize: str | None = None) -> tuple[GuardResult, Fanout]:
    """Guard ``await call(candidate_index, variant)`` with ``asyncio.gather``, at most ``max_concurrency`` at once."""
    responses = Fanout()
    offset = 0
    limit = guard.config.max_concurrency
    semaphore = asyncio.Semaphore(limit) if limit else None
    deadline = guard.deadline_from_now() if media else None

    async def one(index: int, variant: list[Media]) -> R:
        async with semaphore if semaphore is not None else contextlib.nullcontext():
            return await call(index, variant)

    async def generate(variants: list[list[Media]]) -> list[Any]:
        nonlocal offset
        jobs = [(offset + k, variant) for k, variant in enumerate(variants)]
        offset += len(variants)
        tasks = [asyncio.ensure_future(one(i, v)) for i, v in jobs]
        await wait_tasks(tasks, deadline)
        return [_settle(responses, i, t, text, guard) for (i, _), t in zip(jobs, tasks, strict=True)]

    with _late_noted(responses, guard):
        result = await guard.arun(media, generate, deadline=deadline, auto_resize=auto_resize)
    return _noted(result, responses, guard), responses


def _settle(responses: Fanout, index: int, job: Future[Any] | asyncio.Task[Any], text: Callable[[Any], str],
            guard: SmoothGuard) -> Any:
    """The vote text of a finished call (its response kept in ``responses``), its exception, or a TimeoutError."""
    if not job.done() or job.cancelled():
        responses.late += 1
        return late_error(guard.config.time_budget)
    try:
        response = job.result()
        vote = text(response)
    except Exception as exc:
        return exc
    responses[index] = response
    return vote


def _noted(result: GuardResult, responses: Fanout, guard: SmoothGuard) -> GuardResult:
    """``result`` with a note saying how many candidates missed the time budget (if any did)."""
    if not responses.late:
        return result
    return dataclasses.replace(result, notes=(*result.notes, late_note(guard.config.time_budget, responses.late)))


@contextlib.contextmanager
def _late_noted(responses: Fanout, guard: SmoothGuard) -> Iterator[None]:
    """The same note on the result a ``GuardFlagged`` carries."""
    try:
        yield
    except GuardFlagged as exc:
        exc.result = _noted(exc.result, responses, guard)
        raise


def chat_text(response: ChatResponse) -> str:
    """What the vote compares for a chat response: its text, plus its tool calls as canonical JSON.

    Tool-call ids differ between candidates and are left out; a response with neither text nor tool calls
    gives ``""`` (counted as a failed candidate).
    """
    message = response.message
    text = (message.content or "").strip()
    calls = tool_calls_of(message)
    if not calls:
        return text
    encoded = json.dumps(calls, sort_keys=True, default=str)
    return f"{text}\n{encoded}" if text else encoded


def tool_calls_of(message: ChatMessage) -> list[dict[str, Any]]:
    """The tool calls of ``message`` as ``[{"name", "arguments"}]`` (ToolCallBlocks or OpenAI-style kwargs)."""
    calls: list[dict[str, Any]] = []
    for block in message.blocks:
        if isinstance(block, ToolCallBlock):
            calls.append({"name": block.tool_name, "arguments": _arguments(block.tool_kwargs)})
    for call in message.additional_kwargs.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else getattr(call, "function", None)
        if isinstance(function, dict):
            calls.append({"name": function.get("name"), "arguments": _arguments(function.get("arguments"))})
        elif function is not None:
            calls.append({"name": getattr(function, "name", None),
                          "arguments": _arguments(getattr(function, "arguments", None))})
        elif isinstance(call, dict):
            calls.append({"name": call.get("name") or call.get("tool_name"),
                          "arguments": _arguments(call.get("args", call.get("tool_kwargs")))})
        else:
            calls.append({"name": getattr(call, "tool_name", None) or getattr(call, "name", None),
                          "arguments": _arguments(getattr(call, "tool_kwargs", None))})
    return calls


def _arguments(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value
