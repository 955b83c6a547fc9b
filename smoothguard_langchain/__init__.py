"""LangChain integration for SmoothGuard.

- :class:`ChatSmoothGuard` — a chat model guarding any chat model (``ChatSmoothGuard(model=llm)``): tools,
  structured output, agents.
- :class:`SmoothGuardRunnable` — guards any runnable whose input carries multimodal messages, e.g. a whole
  ``prompt | model | parser`` chain.
- :class:`SmoothGuardMiddleware` — a ``langchain.agents`` middleware guarding an agent's model calls without
  replacing its model (needs the ``langchain`` package; imported lazily).
- :class:`SmoothGuardResults` — a callback handler collecting the metadata of every guarded request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from smoothguard_langchain.callbacks import SmoothGuardResults
from smoothguard_langchain.chat_model import ChatSmoothGuard
from smoothguard_langchain.runnable import SmoothGuardRunnable

if TYPE_CHECKING:
    from smoothguard_langchain.middleware import SmoothGuardMiddleware

__all__ = ["ChatSmoothGuard", "SmoothGuardMiddleware", "SmoothGuardResults", "SmoothGuardRunnable"]


def __getattr__(name: str) -> Any:
    if name == "SmoothGuardMiddleware":
        try:
            from smoothguard_langchain.middleware import SmoothGuardMiddleware
        except ImportError as exc:
            raise ImportError(
                "SmoothGuardMiddleware needs the `langchain` package (agents): pip install 'smoothguard[langchain]'"
            ) from exc
        return SmoothGuardMiddleware
    raise AttributeError(f"module 'smoothguard_langchain' has no attribute {name!r}")
