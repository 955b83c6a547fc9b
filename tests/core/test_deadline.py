"""smoothguard.deadline: waiting for candidates until a deadline, then leaving the late ones out."""

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from smoothguard.deadline import late_error, late_note, seconds_left, wait_tasks, wait_threads


def test_seconds_left():
    assert seconds_left(None) is None
    assert seconds_left(time.monotonic() - 5) == 0.0
    assert 9.0 < seconds_left(time.monotonic() + 10) <= 10.0


def test_wait_threads_returns_at_the_deadline_and_abandons_the_late_call():
    release = threading.Event()
    pool = ThreadPoolExecutor(max_workers=1)
    fast = pool.submit(lambda: "fast")
    slow = pool.submit(release.wait)   # runs after fast, on the only thread, until released
    queued = pool.submit(lambda: "never")  # still queued at the deadline: cancelled
    start = time.monotonic()
    wait_threads(pool, [fast, slow, queued], time.monotonic() + 0.2)
    assert time.monotonic() - start < 1.0
    assert fast.result() == "fast" and not slow.done() and queued.cancelled()
    release.set()
    assert slow.result(timeout=5) is True  # the abandoned call finishes on its own


def test_wait_tasks_cancels_the_late_tasks_and_keeps_the_rest():
    async def main():
        async def answer(delay, value):
            await asyncio.sleep(delay)
            return value

        tasks = [asyncio.ensure_future(answer(0.0, "a")), asyncio.ensure_future(answer(5.0, "b"))]
        start = time.monotonic()
        await wait_tasks(tasks, time.monotonic() + 0.2)
        return tasks, time.monotonic() - start

    (fast, slow), elapsed = asyncio.run(main())
    assert elapsed < 1.0 and fast.result() == "a" and slow.cancelled()
    assert asyncio.run(_no_deadline()) == ["x", "y"]


async def _no_deadline():
    async def answer(value):
        await asyncio.sleep(0.05)
        return value

    tasks = [asyncio.ensure_future(answer(v)) for v in "xy"]
    await wait_tasks(tasks, None)
    return [t.result() for t in tasks]


def test_the_words_for_a_late_candidate():
    assert isinstance(late_error(1.5), TimeoutError) and "time budget of 1.5 s" in str(late_error(1.5))
    assert late_note(2, 3) == "time budget of 2 s: 3 candidate(s) did not answer in time and were left out of the vote"
