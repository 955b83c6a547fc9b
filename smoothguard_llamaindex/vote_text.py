"""What the vote compares for a LlamaIndex response (the fan-out itself is the core's
:class:`smoothguard.fanout.FanOut`, driven by :mod:`.base`).
"""

from __future__ import annotations

from typing import Any

from llama_index.core.base.llms.types import ChatMessage, ChatResponse, CompletionResponse, ToolCallBlock

from smoothguard import tool_calls as canonical

__all__ = ["chat_text", "completion_text", "tool_calls_of"]


def chat_text(response: ChatResponse) -> str:
    """What the vote compares for a chat response: its tool calls as the core's canonical JSON
    (:mod:`smoothguard.tool_calls`) when it makes any, else its text (``""``: a failed candidate)."""
    message = response.message
    return canonical.vote_text((message.content or "").strip(), tool_calls_of(message))


def completion_text(response: CompletionResponse) -> str:
    """What the vote compares for a completion: its text."""
    return response.text


def tool_calls_of(message: ChatMessage) -> list[tuple[Any, Any]]:
    """The ``(name, arguments)`` of the tool calls in ``message``: ToolCallBlocks, OpenAI-style
    ``additional_kwargs["tool_calls"]``, and ToolSelection-like entries there."""
    calls = [(b.tool_name, b.tool_kwargs) for b in message.blocks if isinstance(b, ToolCallBlock)]
    listed = message.additional_kwargs.get("tool_calls") or []
    calls += canonical.openai_tool_calls(listed)
    for call in listed:
        if isinstance(call, dict) and "function" not in call:
            calls.append((call.get("name") or call.get("tool_name"), call.get("args", call.get("tool_kwargs"))))
        elif not isinstance(call, dict) and getattr(call, "function", None) is None:
            calls.append((getattr(call, "tool_name", None) or getattr(call, "name", None),
                          getattr(call, "tool_kwargs", None)))
    return calls
