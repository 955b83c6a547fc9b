"""SmoothGuardEvent: the instrumentation event dispatched once per guarded call, with the vote summary."""

from __future__ import annotations

from typing import Any

from llama_index.core.bridge.pydantic import Field
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events import BaseEvent

from smoothguard import GuardResult

__all__ = ["SmoothGuardEvent", "dispatch_vote"]

dispatcher = get_dispatcher(__name__)


class SmoothGuardEvent(BaseEvent):
    """The vote of one guarded LLM call; dispatched inside the guard's span (``span_id`` is that span).

    ``answers`` holds every candidate's answer in candidate order (None where the call failed; candidate 0
    is the original input when ``include_original``). ``result`` is ``GuardResult.to_dict()`` (no media).
    """

    model_name: str = Field(default="unknown", description="model_name of the wrapped LLM")
    endpoint: str = Field(default="chat", description="chat, achat, stream_chat, complete, ...")
    n_samples: int = Field(description="candidates asked (model calls made)")
    n_failed: int = Field(default=0, description="candidates whose call raised or returned no text")
    agreement: float = Field(description="winning cluster's share of the answered candidates, in [0, 1]")
    consensus_lower_bound: float | None = None
    flagged: bool = False
    refused: bool = False
    passthrough: bool = Field(default=False, description="no image/audio: one unguarded call")
    picked: int | None = Field(default=None, description="candidate index of the returned answer")
    answer: str = ""
    answers: list[str | None] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    result: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def class_name(cls) -> str:
        return "SmoothGuardEvent"

    @classmethod
    def from_result(cls, result: GuardResult, *, model_name: str = "unknown", endpoint: str = "chat",
                    picked: int | None = None) -> SmoothGuardEvent:
        """The event of ``result``; ``picked`` defaults to ``result.representative``."""
        return cls(
            model_name=model_name, endpoint=endpoint, n_samples=result.n_used,
            n_failed=sum(1 for s in result.samples if not s.ok), agreement=result.agreement,
            consensus_lower_bound=result.consensus_lower_bound, flagged=result.flagged, refused=result.refused,
            passthrough=result.passthrough, picked=result.representative if picked is None else picked,
            answer=result.answer, answers=result.answers, notes=list(result.notes), result=result.to_dict(),
        )


def dispatch_vote(result: GuardResult, *, model_name: str, endpoint: str) -> None:
    """Dispatch one :class:`SmoothGuardEvent` for ``result`` in the current span."""
    dispatcher.event(SmoothGuardEvent.from_result(result, model_name=model_name, endpoint=endpoint))
