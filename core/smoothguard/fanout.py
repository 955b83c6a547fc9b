"""The fan-out of one guarded request: N candidate calls, concurrently, bounded, under a time budget.

Every adapter (LangChain, LlamaIndex, the proxy) and the evaluation harness drive their model through
:class:`FanOut`; give it one plain callable per candidate::

    fan = FanOut(guard, call=lambda index, variant: ask_model(prompt, variant[0]), text=lambda reply: reply.text)
    result = fan.run([image])                 # or: await FanOut(guard, acall=...).arun([image])
    reply = fan.chosen(result)                # the model's own response that the vote picked

What it does, once for everyone:

* ``prepare(variant) -> payload`` (the adapter's request rebuilt around one noisy copy: drawing the noise,
  PNG/WAV encoding) runs on all cores, each worker drawing its own copy, so at most one noisy copy per core is
  held; each candidate goes out as soon as its payload is ready.
* ``call(index, payload)`` runs in threads (:meth:`FanOut.run`, each in a copy of the caller's ``contextvars``
  context) or ``acall`` as tasks (:meth:`FanOut.arun`), at most ``max_concurrency`` at once. A call that
  raises, or returns an exception, is a failed candidate, left out of the vote.
* Under ``time_budget`` the request waits until its deadline only: a thread still running then is abandoned (it
  cannot be stopped; its late answer is dropped), a task is cancelled (its connection closes), and a candidate
  not yet prepared is never sent. They count as failed (:func:`~smoothguard.deadline.late_error`).
* Notes reach the result, and a :class:`~smoothguard.GuardFlagged`'s result: how many candidates were late,
  how many failed and how (:func:`failure_kind`).
* Failures are classified once: when too few candidates answered and every failure is of one kind (e.g. all
  ``openai.RateLimitError``, HTTP 429), the exception raised is of the provider's own type *and* a
  :class:`~smoothguard.errors.GenerationError` (its ``causes`` lists every failure, its message says how many
  answered), so ``with_retry`` / ``with_fallbacks`` / ``except RateLimitError`` keyed on the provider's type
  fire, and ``except GenerationError`` keeps working. Mixed failures raise a plain ``GenerationError``. A
  request without media (one pass-through call) raises its call's own exception.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

from smoothguard.deadline import late_error, late_note, wait_tasks, wait_threads
from smoothguard.errors import GenerationError, GuardFlagged
from smoothguard.guard import SmoothGuard
from smoothguard.media import Media
from smoothguard.result import GuardResult

__all__ = ["FanOut", "add_notes", "failure_kind", "raise_failure"]

P = TypeVar("P")
R = TypeVar("R")


class FanOut(Generic[R]):
    """The candidates of one guarded request (use one ``FanOut`` per request).

    guard: the :class:`~smoothguard.SmoothGuard` (its ``max_concurrency`` and ``time_budget`` apply).
    call(index, payload) -> response, for :meth:`run`; acall(index, payload) -> awaitable response, for
    :meth:`arun`. ``index`` is the candidate's number (0 is the original when ``include_original``).
    prepare(variant) -> payload: the model's input for one variant (a list of :class:`~smoothguard.Media`);
    default: the variant itself. It reads the variant once, in a worker thread (at most one per core at a time).
    text(response) -> str: what the vote compares (default: the response itself, which must then be a str).

    After a run: ``outputs`` (candidate index -> response, or the exception it failed with), ``responses`` (only
    the answered ones), ``asked`` (candidates handed out so far), ``late`` (how many missed the time budget).
    """

    def __init__(self, guard: SmoothGuard, *, call: Callable[[int, Any], R | BaseException] | None = None,
                 acall: Callable[[int, Any], Awaitable[R | BaseException]] | None = None,
                 prepare: Callable[[list[Media]], Any] | None = None,
                 text: Callable[[R], Any] | None = None) -> None:
        self.guard = guard
        self.call = call
        self.acall = acall
        self.prepare = prepare
        self.text = text
        self.outputs: dict[int, R | BaseException] = {}
        self.asked = 0
        self.late_indices: set[int] = set()
        self.deadline: float | None = None
        self.passthrough = False  # a request without media: one call, made inline

    @property
    def late(self) -> int:
        """How many candidates missed the time budget."""
        return len(self.late_indices)

    @property
    def responses(self) -> dict[int, R]:
        """Candidate index -> response, for the candidates whose call returned one."""
        return {i: o for i, o in self.outputs.items() if not isinstance(o, BaseException)}

    # -- whole requests ---------------------------------------------------------------------------------------

    def run(self, media: Sequence[Media], *, notes: Sequence[str] = (), deadline: float | None = None,
            auto_resize: str | None = None, auto_resample: int | None = None) -> GuardResult:
        """``guard.run`` over the candidates (threads). ``notes``: the adapter's own notes for the result.
        ``deadline``: a ``time.monotonic()`` instant (default: now + ``time_budget``; none without media).
        ``auto_resize`` / ``auto_resample``: what ``image_resize`` / ``audio_resample="auto"`` mean for the wrapped
        model (see :meth:`SmoothGuard.run <smoothguard.SmoothGuard.run>`)."""
        if self.call is None:
            raise TypeError("FanOut.run needs call=; use arun for an async acall=")
        self.deadline = self._deadline(media, deadline)
        with self._outcome(media, notes):
            result = self.guard.run(media, self._generate, deadline=self.deadline, auto_resize=auto_resize,
                                    auto_resample=auto_resample, lazy=True)
        return add_notes(result, [*notes, *self.notes(result)])

    async def arun(self, media: Sequence[Media], *, notes: Sequence[str] = (), deadline: float | None = None,
                   auto_resize: str | None = None, auto_resample: int | None = None) -> GuardResult:
        """``guard.arun`` over the candidates (tasks); see :meth:`run`."""
        if self.acall is None:
            raise TypeError("FanOut.arun needs acall=; use run for a sync call=")
        self.deadline = self._deadline(media, deadline)
        with self._outcome(media, notes):
            result = await self.guard.arun(media, self._agenerate, deadline=self.deadline, auto_resize=auto_resize,
                                           auto_resample=auto_resample, lazy=True)
        return add_notes(result, [*notes, *self.notes(result)])

    def chosen(self, result: GuardResult) -> R:
        """The response the vote picked (candidate 0's for a pass-through request)."""
        index = 0 if result.passthrough or result.representative is None else result.representative
        return self.outputs[index]  # type: ignore[return-value]

    def notes(self, result: GuardResult | None = None) -> list[str]:
        """What the caller should know about the candidates: those late at the time budget, those that failed."""
        out = [late_note(self.guard.config.time_budget, self.late)] if self.late else []
        if result is None or result.passthrough:
            return out
        kinds = Counter(failure_kind(self.outputs.get(s.index), s.error) for s in result.samples
                        if s.error is not None and s.index not in self.late_indices)
        if kinds:
            listed = ", ".join(f"{kind} x{count}" if count > 1 else kind for kind, count in kinds.most_common())
            out.append(f"{sum(kinds.values())} of {len(result.samples)} candidates failed and were left out of the "
                       f"vote: {listed}")
        return out

    # -- one round --------------------------------------------------------------------------------------------

    def _deadline(self, media: Sequence[Media], deadline: float | None) -> float | None:
        self.passthrough = not media
        if not media:  # a pass-through call has no budget
            return None
        return deadline if deadline is not None else self.guard.deadline_from_now()

    def _round(self, variants: Sequence[list[Media]]) -> range:
        start = self.asked
        self.asked += len(variants)
        return range(start, self.asked)

    def _generate(self, variants: Sequence[list[Media]]) -> list[Any]:
        indices = self._round(variants)
        call = self.call
        assert call is not None
        if self.passthrough:  # one call without media: in this thread
            try:
                output = call(indices[0], self._prepare(variants, 0))
            except Exception as exc:
                output = exc
            return [self._record(indices[0], output)]
        workers = _cpu_workers(len(variants))
        encoder = ThreadPoolExecutor(workers, thread_name_prefix="smoothguard-prepare")
        caller = ThreadPoolExecutor(self._width(len(variants)), thread_name_prefix="smoothguard-call")
        payloads = [encoder.submit(self._prepare, variants, k) for k in range(len(variants))]

        def one(k: int) -> Any:
            return call(indices[k], payloads[k].result())

        jobs = [caller.submit(contextvars.copy_context().run, one, k) for k in range(len(variants))]
        try:
            wait_threads(caller, jobs, self.deadline)
        finally:
            encoder.shutdown(wait=False, cancel_futures=True)
        return [self._settle(i, job) for i, job in zip(indices, jobs, strict=True)]

    async def _agenerate(self, variants: Sequence[list[Media]]) -> list[Any]:
        indices = self._round(variants)
        acall = self.acall
        assert acall is not None
        if self.passthrough:  # one call without media: no thread, no task
            try:
                output = await acall(indices[0], self._prepare(variants, 0))
            except Exception as exc:
                output = exc
            return [self._record(indices[0], output)]
        encoding = asyncio.Semaphore(_cpu_workers(len(variants)))
        calling = asyncio.Semaphore(self._width(len(variants)))

        async def one(k: int) -> Any:
            async with encoding:
                payload = await asyncio.to_thread(self._prepare, variants, k)
            async with calling:
                return await acall(indices[k], payload)

        tasks = [asyncio.ensure_future(one(k)) for k in range(len(variants))]
        try:
            await wait_tasks(tasks, self.deadline)
        except BaseException:
            for task in tasks:
                task.cancel()
            raise
        return [self._settle(i, task) for i, task in zip(indices, tasks, strict=True)]

    def _prepare(self, variants: Sequence[list[Media]], k: int) -> Any:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise _NotStarted  # no copy is drawn or encoded after the deadline
        variant = variants[k]  # lazy variants draw the copy here, in this worker
        return variant if self.prepare is None else self.prepare(variant)

    def _width(self, n: int) -> int:
        return max(1, min(n, self.guard.config.max_concurrency or n))

    def _settle(self, index: int, job: Future[Any] | asyncio.Future[Any]) -> Any:
        """The outcome of one candidate's job: see :meth:`_record`; a job not done by the deadline is late."""
        if not job.done() or job.cancelled():
            return self._record(index, self._late(index))
        try:
            return self._record(index, job.result())
        except _NotStarted:
            return self._record(index, self._late(index))
        except Exception as exc:
            return self._record(index, exc)

    def _record(self, index: int, output: Any) -> Any:
        """Keep ``output`` (a response or an exception) as candidate ``index``'s; return what the vote compares."""
        self.outputs[index] = output
        if isinstance(output, BaseException):
            return output
        try:
            return output if self.text is None else self.text(output)
        except Exception as exc:  # a response the adapter cannot read is a failed candidate
            self.outputs[index] = exc
            return exc

    def _late(self, index: int) -> TimeoutError:
        self.late_indices.add(index)
        return late_error(self.guard.config.time_budget)

    @contextmanager
    def _outcome(self, media: Sequence[Media], notes: Sequence[str]) -> Iterator[None]:
        try:
            yield
        except GuardFlagged as exc:
            exc.result = add_notes(exc.result, [*notes, *self.notes(exc.result)])
            raise
        except GenerationError as exc:
            raise_failure(exc, passthrough=not media)


# -- failures --------------------------------------------------------------------------------------------------


class _NotStarted(Exception):
    """A candidate whose copy was not prepared before the deadline."""


def failure_kind(failure: Any, description: str | None = None) -> str:
    """One failed candidate's kind, by which failures are grouped and compared: the exception's type name with its
    HTTP status where it has one (``"RateLimitError (HTTP 429)"``), or ``description`` (the guard's reason: an
    empty answer, an answer that is not text)."""
    if isinstance(failure, BaseException):
        status = _status(failure)
        return f"{type(failure).__name__} (HTTP {status})" if status is not None else type(failure).__name__
    return description or "no answer"


def raise_failure(error: GenerationError, *, passthrough: bool = False) -> None:
    """Raise what the caller should catch for ``error`` (too few candidates answered).

    A pass-through request (one call, no media) raises its call's own exception. When every failure is an
    exception of one kind (:func:`failure_kind`), the error raised is of that exception's type and a
    ``GenerationError`` at once, carrying ``causes`` and ``answers`` (the first failure chained as its cause).
    Otherwise ``error`` itself.
    """
    failures = [cause for _, cause in error.causes]
    if not failures or not all(isinstance(f, Exception) for f in failures):
        raise error
    first = failures[0]
    if passthrough and len(failures) == 1:
        raise first
    if len({failure_kind(f) for f in failures}) != 1:
        raise error
    typed = _as_generation_error(first, error)
    if typed is None:
        raise error
    raise typed from first


def _as_generation_error(failure: Exception, error: GenerationError) -> GenerationError | None:
    """A copy of ``failure`` (its attributes: status, response, body...) that is also a ``GenerationError`` with
    ``error``'s message, causes and answers; None where the two types cannot be combined."""
    cls = _combined(type(failure))
    if cls is None:
        return None
    typed = cls.__new__(cls, *error.args)
    typed.__dict__.update(failure.__dict__)
    typed.args = error.args
    typed.causes, typed.answers = error.causes, error.answers
    return typed


@functools.lru_cache(maxsize=128)
def _combined(kind: type[BaseException]) -> type[GenerationError] | None:
    if issubclass(GenerationError, kind):  # RuntimeError, Exception: a GenerationError already is one
        return GenerationError
    if issubclass(kind, GenerationError):
        return kind
    try:
        return type(kind.__name__, (kind, GenerationError), {"__module__": kind.__module__,
                                                             "__qualname__": kind.__qualname__,
                                                             "__str__": GenerationError.__str__})
    except TypeError:  # incompatible layouts or a final class
        return None


def _status(failure: BaseException) -> int | None:
    for name in ("status_code", "status"):
        value = getattr(failure, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


# -- helpers ------------------------------------------------------------------------------------------------------


def add_notes(result: GuardResult, notes: Sequence[str]) -> GuardResult:
    """``result`` with ``notes`` appended (the same result when there are none)."""
    if not notes:
        return result
    return dataclasses.replace(result, notes=(*result.notes, *notes))


_CPUS = os.cpu_count() or 1


def _cpu_workers(n: int) -> int:
    return max(1, min(n, _CPUS))
