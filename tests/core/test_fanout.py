"""smoothguard.fanout: the one fan-out (bounded concurrency, time budget, notes, failures classified once) and
smoothguard.tool_calls: the one tool-call canonicalisation."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import numpy as np
import pytest

from smoothguard import GuardFlagged, Media, SmoothGuard
from smoothguard.errors import GenerationError
from smoothguard.fanout import FanOut, failure_kind
from smoothguard.tool_calls import canonical_tool_calls, openai_tool_calls, vote_text

IMAGE = Media.image(np.full((8, 8, 3), 120, dtype=np.uint8))


class RateLimited(Exception):
    """A provider's own error type, with its HTTP status (as openai.RateLimitError has)."""

    status_code = 429


class InFlight:
    """Counts calls running at once."""

    def __init__(self) -> None:
        self.now = self.peak = 0
        self.lock = threading.Lock()

    def __enter__(self) -> None:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def __exit__(self, *exc: object) -> None:
        with self.lock:
            self.now -= 1


@pytest.mark.parametrize("limit", [None, 2])
async def test_concurrency_is_bounded_by_max_concurrency_sync_and_async(limit):
    guard = SmoothGuard(n_samples=6, seed=0, max_concurrency=limit)
    sync, tasks = InFlight(), InFlight()

    def call(index, variant):
        with sync:
            time.sleep(0.15)
        return "a cat"

    async def acall(index, variant):
        with tasks:
            await asyncio.sleep(0.15)
        return "a cat"

    fan = FanOut(guard, call=call)
    assert fan.run([IMAGE]).answer == "a cat" and sorted(fan.responses) == list(range(6))
    await FanOut(guard, acall=acall).arun([IMAGE])
    assert sync.peak == tasks.peak == (limit or 6)


def test_each_candidate_gets_its_own_prepared_payload_and_index():
    guard = SmoothGuard(n_samples=5, seed=0, sigma=0.2)
    seen = {}

    def call(index, payload):
        seen[index] = payload
        return "a grey square"

    FanOut(guard, call=call, prepare=lambda variant: variant[0].to_png_bytes()).run([IMAGE])
    assert sorted(seen) == list(range(5)) and seen[0] == IMAGE.to_png_bytes()  # candidate 0: the original
    assert len(set(seen.values())) == 5  # every other one its own noisy copy


async def test_time_budget_abandons_a_late_thread_and_cancels_a_late_task():
    guard = SmoothGuard(n_samples=5, seed=0, time_budget=0.5)
    guard.aggregate(["a cat", "a dog"])  # the embedder loaded before the clock starts
    release, cancelled = threading.Event(), []

    def call(index, variant):
        if index == 1:
            release.wait(10)
        return "a cat"

    async def acall(index, variant):
        try:
            await asyncio.sleep(10 if index == 1 else 0)
        except asyncio.CancelledError:
            cancelled.append(index)
            raise
        return "a cat"

    for fan in (FanOut(guard, call=call), FanOut(guard, acall=acall)):
        start = time.monotonic()
        result = fan.run([IMAGE]) if fan.call else await fan.arun([IMAGE])
        assert time.monotonic() - start < 3.0
        assert [s.index for s in result.samples if s.error] == [1] and fan.late == 1
        assert "no answer within the time budget of 0.5 s" in result.samples[1].error
        assert any("1 candidate(s) did not answer in time" in note for note in result.notes)
        assert not any("failed and were left out" in note for note in result.notes)  # late is not "failed"
    assert cancelled == [1]  # the task was cancelled, its connection would close
    release.set()  # the abandoned thread finishes on its own


def test_partial_failures_are_in_the_notes():
    guard = SmoothGuard(n_samples=7, seed=0)

    def call(index, variant):
        if index in (1, 3):
            raise RateLimited("slow down")
        return "" if index == 4 else "a cat"

    result = FanOut(guard, call=call).run([IMAGE])
    assert result.answer == "a cat"
    assert "3 of 7 candidates failed and were left out of the vote: RateLimited (HTTP 429) x2, " \
           "the model returned an empty answer" in result.notes


@pytest.mark.parametrize("answered", [0, 2])
def test_failures_that_agree_raise_the_providers_type_that_is_also_a_generation_error(answered):
    guard = SmoothGuard(n_samples=5, seed=0)

    def call(index, variant):
        if index < answered:
            return "a cat"
        raise RateLimited(f"slow down {index}")

    with pytest.raises(RateLimited) as caught:
        FanOut(guard, call=call).run([IMAGE])
    error = caught.value
    assert isinstance(error, GenerationError) and error.status_code == 429
    assert [i for i, _ in error.causes] == list(range(answered, 5))
    assert f"only {answered} of 5 candidates were answered" in str(error)
    assert isinstance(error.__cause__, RateLimited) and str(error.__cause__) == f"slow down {answered}"


async def test_failures_that_differ_raise_a_plain_generation_error_and_a_pass_through_its_own():
    guard = SmoothGuard(n_samples=3, seed=0)
    mixed = [RateLimited("slow down"), ValueError("bad"), ""]

    def call(index, variant):
        if isinstance(mixed[index], Exception):
            raise mixed[index]
        return mixed[index]

    with pytest.raises(GenerationError) as caught:
        FanOut(guard, call=call).run([IMAGE])
    assert type(caught.value) is GenerationError and len(caught.value.causes) == 3

    async def broken(index, variant):
        raise ConnectionError("down")

    with pytest.raises(ConnectionError, match="down") as caught:  # one call without media: its own exception
        await FanOut(guard, acall=broken).arun([])
    assert not isinstance(caught.value, GenerationError)


def test_failure_kinds():
    assert failure_kind(RateLimited()) == "RateLimited (HTTP 429)"
    assert failure_kind(TimeoutError()) == "TimeoutError"
    assert failure_kind(None, "the model returned an empty answer") == "the model returned an empty answer"


def test_a_flagged_results_notes_reach_the_guard_flagged():
    guard = SmoothGuard(n_samples=5, seed=0, min_agreement=1.0, on_flag="raise", embedder_device="cpu")
    answers = ["A cat sits on the mat.", "A cat sits on the mat.", "The stock market fell sharply today.",
               "A cat sits on the mat."]

    def call(index, variant):
        if index == 4:
            raise RateLimited("slow down")
        return answers[index]

    with pytest.raises(GuardFlagged) as caught:
        FanOut(guard, call=call).run([IMAGE], notes=["the adapter's own note"])
    notes = caught.value.result.notes
    assert "the adapter's own note" in notes and any("RateLimited (HTTP 429)" in note for note in notes)


def test_tool_calls_are_one_canonical_text_whatever_their_order_ids_and_argument_encoding():
    openai_style = [{"id": "call_1", "type": "function", "function": {"name": "b", "arguments": '{"y": 2, "x": 1}'}},
                    {"id": "call_2", "type": "function", "function": {"name": "a", "arguments": "{}"}}]
    pairs = [("a", {}), ("b", {"x": 1, "y": 2})]
    assert canonical_tool_calls(openai_tool_calls(openai_style)) == canonical_tool_calls(pairs)
    assert json.loads(canonical_tool_calls(pairs)) == [{"arguments": {}, "name": "a"},
                                                       {"arguments": {"x": 1, "y": 2}, "name": "b"}]
    assert canonical_tool_calls([("a", '{"x": 1')]) != canonical_tool_calls([("a", {"x": 1})])  # malformed stays text
    assert vote_text("I'll look it up", pairs) == canonical_tool_calls(pairs)  # calls are the action voted on
    assert vote_text("A cat.") == "A cat." and vote_text(None) == "" and canonical_tool_calls([]) == ""
