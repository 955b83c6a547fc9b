"""Tool calls as the vote compares them: one canonical JSON text per answer, the same in every adapter.

Candidates that call tools usually answer with empty text, so the vote compares *what they call*: each call as
``{"arguments": ..., "name": ...}`` (arguments given as a JSON string are parsed; text that is not JSON stays a
string, so a malformed call differs from a well-formed one), call ids left out (they differ between candidates),
keys sorted, and the calls sorted, so parallel calls made in another order are the same action. An answer that
calls tools is voted on by its calls alone; its text (often "I'll look that up") is not compared.

LangChain (``tool_calls`` / ``invalid_tool_calls``), LlamaIndex (``ToolCallBlock`` / OpenAI-style
``additional_kwargs["tool_calls"]``) and the proxy (OpenAI ``message.tool_calls``) each turn their calls into
``(name, arguments)`` pairs and call :func:`vote_text`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["canonical_tool_calls", "dumps", "openai_tool_calls", "vote_text"]


def canonical_tool_calls(calls: Iterable[tuple[Any, Any]]) -> str:
    """The canonical JSON of ``(name, arguments)`` pairs: ``[{"arguments": ..., "name": ...}, ...]``, keys sorted,
    calls sorted by name (then arguments); ``""`` for no calls. ``arguments``: a mapping, a JSON string, or anything
    JSON-able."""
    canon = [{"name": name, "arguments": _arguments(arguments)} for name, arguments in calls]
    if not canon:
        return ""
    return dumps(sorted(canon, key=lambda call: (str(call["name"]), dumps(call))))


def vote_text(text: Any, calls: Iterable[tuple[Any, Any]] = ()) -> str:
    """What the vote compares for one answer: its tool calls (:func:`canonical_tool_calls`) when it makes any,
    else its text (``""`` for none: the guard counts an empty answer as a failed candidate)."""
    canon = canonical_tool_calls(calls)
    if canon:
        return canon
    return text if isinstance(text, str) else ""


def openai_tool_calls(calls: Any) -> list[tuple[Any, Any]]:
    """``(name, arguments)`` of OpenAI-style tool calls (``[{"function": {"name", "arguments"}}]``, as dicts or
    objects with those attributes); entries that are not tool calls are skipped."""
    out: list[tuple[Any, Any]] = []
    for call in calls if isinstance(calls, list | tuple) else ():
        function = call.get("function") if isinstance(call, Mapping) else getattr(call, "function", None)
        if isinstance(function, Mapping):
            out.append((function.get("name"), function.get("arguments")))
        elif function is not None:
            out.append((getattr(function, "name", None), getattr(function, "arguments", None)))
    return out


def _arguments(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    if isinstance(value, Mapping):
        return {str(k): v for k, v in value.items()}
    return value


def dumps(value: Any) -> str:
    """Canonical JSON: keys sorted, non-ASCII kept, anything else as ``str``."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
