"""Callback plumbing: the child manager of each candidate, and a handler that collects guard results.

Every candidate call is a child run of the guard's run, tagged ``smoothguard:sample:<i>`` (``i`` = candidate
index; 0 is the original input) and ``nostream``. Tracers (LangSmith, ``collect_runs``) and ordinary callback
handlers see every candidate. Stream consumers (``astream_events``, ``astream_log``, LangGraph's
``stream_mode="messages"``) are left out of the candidate runs: they would otherwise receive the tokens of
unvoted candidates (the adversarial one included); they get the guard's run and its chosen answer. Each guarded
request also emits the custom event ``"smoothguard_result"`` whose data is ``GuardResult.to_dict()``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import Context
from typing import Any
from uuid import UUID

from langchain_core.callbacks import AsyncCallbackManager, BaseCallbackHandler, CallbackManager
from langchain_core.runnables.config import set_config_context, var_child_runnable_config

__all__ = ["EVENT_NAME", "NOSTREAM_TAG", "SmoothGuardResults", "aemit_result", "candidate_tag", "child_manager",
           "emit_result", "fanout_context", "is_stream_consumer", "parent_manager", "without_stream_consumers"]

#: Name of the custom callback event carrying ``GuardResult.to_dict()`` for every guarded request.
EVENT_NAME = "smoothguard_result"
#: LangGraph's tag for runs whose tokens must not appear in ``stream_mode="messages"``.
NOSTREAM_TAG = "nostream"


def candidate_tag(index: int) -> str:
    """The tag of candidate ``index``'s run."""
    return f"smoothguard:sample:{index}"


def parent_manager(run_manager: Any, *, is_async: bool = False) -> Any:
    """A callback manager whose runs are children of ``run_manager``'s run, tagged ``nostream``, without stream
    consumers (None without a run manager). Works for every run manager, including ``CallbackManagerForLLMRun``,
    which has no ``get_child()``."""
    if run_manager is None:
        return None
    handlers = [h for h in run_manager.inheritable_handlers if not is_stream_consumer(h)]
    manager = _manager(run_manager, handlers, is_async)
    manager.add_tags([NOSTREAM_TAG])
    return manager


def _manager(run_manager: Any, handlers: list[Any], is_async: bool) -> Any:
    """A manager under ``run_manager``'s run with ``handlers`` and its inheritable tags and metadata."""
    manager = (AsyncCallbackManager if is_async else CallbackManager)(handlers=[], parent_run_id=run_manager.run_id)
    manager.set_handlers(handlers)
    manager.add_tags(run_manager.inheritable_tags)
    manager.add_metadata(run_manager.inheritable_metadata)
    return manager


def child_manager(run_manager: Any, index: int, *, is_async: bool = False) -> Any:
    """:func:`parent_manager` for candidate ``index``: tagged ``smoothguard:sample:<index>``."""
    manager = parent_manager(run_manager, is_async=is_async)
    if manager is not None:
        manager.add_tags([candidate_tag(index)], inherit=False)
        manager.add_metadata({"smoothguard_candidate": index}, inherit=False)
    return manager


@contextmanager
def fanout_context(run_manager: Any, *, is_async: bool = False) -> Iterator[Context]:
    """A context to run the fan-out in (``ctx.run(...)`` / ``create_task(..., context=ctx)``).

    Runnables merge the ambient config (a context variable) into the config they are given, and the ambient
    parent run wins the merge (``RunnableBinding`` does this, e.g. a model after ``bind_tools``). Inside a chain the
    ambient config is the chain's, so candidates would become the chain's children and stream consumers would be
    merged back in. Here the ambient config is the guard's: same ``configurable`` and recursion limit, callbacks
    from :func:`parent_manager`.
    """
    ambient = var_child_runnable_config.get() or {}
    config: dict[str, Any] = {k: v for k, v in ambient.items() if k in ("configurable", "recursion_limit")}
    config["callbacks"] = parent_manager(run_manager, is_async=is_async)
    with set_config_context(config) as ctx:  # type: ignore[arg-type]
        yield ctx


def is_stream_consumer(handler: Any) -> bool:
    """True for handlers that turn runs into a user-facing stream (astream_events/log, LangGraph streaming).

    Duck-typed on langchain-core's (private) streaming-handler protocols: ``tap_output_iter``/``tap_output_aiter``
    (v1) or the ``_V2StreamingCallbackHandler`` marker base (v2).
    """
    if hasattr(handler, "tap_output_iter") and hasattr(handler, "tap_output_aiter"):
        return True
    return any(c.__name__ == "_V2StreamingCallbackHandler" for c in type(handler).__mro__)


def without_stream_consumers(callbacks: Any) -> Any:
    """A copy of a callback manager (or handler list) without stream consumers; None stays None."""
    if callbacks is None:
        return None
    if isinstance(callbacks, list):
        return [h for h in callbacks if not is_stream_consumer(h)]
    manager = callbacks.copy()
    for handler in [*manager.handlers, *manager.inheritable_handlers]:
        if is_stream_consumer(handler):
            manager.remove_handler(handler)
    return manager


def emit_result(run_manager: Any, data: dict[str, Any]) -> None:
    """Send ``data`` as the ``smoothguard_result`` custom event of ``run_manager``'s run (sync managers)."""
    if run_manager is not None and run_manager.inheritable_handlers:
        manager = _manager(run_manager, run_manager.inheritable_handlers, is_async=False)
        manager.on_custom_event(EVENT_NAME, data, run_id=run_manager.run_id)


async def aemit_result(run_manager: Any, data: dict[str, Any]) -> None:
    """Async :func:`emit_result`."""
    if run_manager is not None and run_manager.inheritable_handlers:
        manager = _manager(run_manager, run_manager.inheritable_handlers, is_async=True)
        await manager.on_custom_event(EVENT_NAME, data, run_id=run_manager.run_id)


class SmoothGuardResults(BaseCallbackHandler):
    """Collects the ``GuardResult.to_dict()`` of every guarded request run with this handler.

    >>> results = SmoothGuardResults()
    >>> chain.invoke(inputs, config={"callbacks": [results]})
    >>> results.last["agreement"]

    Useful where the output is a plain string (``prompt | guard | StrOutputParser()``) and the message metadata
    is gone. ``results.items`` holds ``(run_id, result dict)`` pairs in arrival order.
    """

    def __init__(self) -> None:
        super().__init__()
        self.items: list[tuple[UUID, dict[str, Any]]] = []

    @property
    def results(self) -> list[dict[str, Any]]:
        return [data for _, data in self.items]

    @property
    def last(self) -> dict[str, Any] | None:
        return self.items[-1][1] if self.items else None

    def on_custom_event(self, name: str, data: Any, *, run_id: UUID, **kwargs: Any) -> None:
        if name == EVENT_NAME:
            self.items.append((run_id, data))
