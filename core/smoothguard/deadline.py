"""Waiting for a request's candidates until its deadline (``GuardConfig.time_budget``), for fan-outs.

A deadline is a ``time.monotonic()`` instant (:meth:`SmoothGuard.deadline_from_now`), or None for none. A candidate
still running at the deadline is left out of the vote: a task is cancelled (its connection closes), a thread is
abandoned (a thread cannot be stopped; its late answer is dropped).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait

__all__ = ["late_error", "late_note", "seconds_left", "wait_tasks", "wait_threads"]


def seconds_left(deadline: float | None) -> float | None:
    """Seconds until ``deadline``, at least 0; None without a deadline."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def wait_threads(pool: ThreadPoolExecutor, futures: Sequence[Future], deadline: float | None) -> None:
    """Wait for ``futures`` until ``deadline``, then shut ``pool`` down without waiting: queued calls are cancelled,
    running ones abandoned. A future that is not ``done()`` (or is ``cancelled()``) afterwards missed the deadline."""
    wait(futures, timeout=seconds_left(deadline))
    pool.shutdown(wait=False, cancel_futures=True)


async def wait_tasks(tasks: Sequence[asyncio.Future], deadline: float | None) -> None:
    """Wait for ``tasks`` until ``deadline``, then cancel the rest and let them unwind. A task that is
    ``cancelled()`` afterwards missed the deadline."""
    _, pending = await asyncio.wait(tasks, timeout=seconds_left(deadline))
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


def late_error(budget: float | None) -> TimeoutError:
    """What a candidate that missed the deadline counts as."""
    return TimeoutError(f"no answer within the time budget of {budget:g} s")


def late_note(budget: float | None, count: int) -> str:
    """The result's note when ``count`` candidates missed the deadline."""
    return (f"time budget of {budget:g} s: {count} candidate(s) did not answer in time and were left out of the "
            "vote")
