"""A scripted OpenAI-compatible server on 127.0.0.1 that also speaks tools and structured output.

It extends :class:`fakes.openai_server.OpenAIStub` (real HTTP, every request recorded) with what agents need:

- ``tools`` in the request: the reply calls one tool (the one ``tool_choice`` names, else the first one the
  conversation has not called yet), with arguments filled in from its JSON schema;
- ``response_format`` of type ``json_schema``: the reply content is a JSON object filled in from the schema;
- otherwise the reply is ``answer(body, image)`` (by default, how bright the first image is).

Schema values: strings are ``text`` (or the first ``enum`` value), integers 3, numbers 1.5, booleans true.
``status(order)`` may return an HTTP status (e.g. 429) to fail the request with order ``order`` (0 = first).
Usage is deterministic: 10 prompt tokens per message, one completion token per word.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from fakes.openai_server import OpenAIStub


def fill(schema: dict[str, Any], text: str, defs: dict[str, Any] | None = None) -> Any:
    """A value that satisfies a simple JSON schema (objects, arrays, enums, anyOf, $ref)."""
    defs = defs if defs is not None else schema.get("$defs", {})
    if "$ref" in schema:
        return fill(defs[schema["$ref"].rsplit("/", 1)[-1]], text, defs)
    if "enum" in schema:
        return schema["enum"][0]
    if "anyOf" in schema:
        choice = next((s for s in schema["anyOf"] if s.get("type") != "null"), schema["anyOf"][0])
        return fill(choice, text, defs)
    kind = schema.get("type", "object")
    if kind == "object":
        return {k: fill(v, text, defs) for k, v in schema.get("properties", {}).items()}
    if kind == "array":
        return [fill(schema.get("items", {"type": "string"}), text, defs)]
    return {"string": text, "integer": 3, "number": 1.5, "boolean": True}.get(kind)


class ScriptedOpenAI(OpenAIStub):
    """See the module docstring. ``text``: the string value used in filled-in schemas."""

    def __init__(self, *args: Any, text: str = "cat", status: Callable[[int], int | None] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.text = text
        self.status = status

    def _message(self, body: dict[str, Any], reply: str) -> dict[str, Any]:
        messages = body.get("messages", [])
        called = {c["function"]["name"] for m in messages if m.get("role") == "assistant"
                  for c in m.get("tool_calls") or []}
        tools = body.get("tools") or []
        choice = body.get("tool_choice")
        if isinstance(choice, dict):
            name = choice["function"]["name"]
        else:
            name = next((t["function"]["name"] for t in tools if t["function"]["name"] not in called), None)
        if tools and name is not None and choice != "none":
            tool = next(t for t in tools if t["function"]["name"] == name)
            args = fill(tool["function"].get("parameters", {}), self.text)
            return {"role": "assistant", "content": None, "tool_calls": [
                {"id": f"call_{len(self.requests)}", "type": "function",
                 "function": {"name": name, "arguments": json.dumps(args)}}]}
        fmt = body.get("response_format") or {}
        if fmt.get("type") == "json_schema":
            return {"role": "assistant", "content": json.dumps(fill(fmt["json_schema"]["schema"], self.text))}
        if fmt.get("type") == "json_object":
            return {"role": "assistant", "content": json.dumps({"answer": self.text})}
        return {"role": "assistant", "content": reply}

    def _app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        async def completions(request: Request) -> Any:
            record, order = await self._arrive(request)
            record.finished = time.monotonic()
            status = self.status(order) if self.status is not None else None
            if status:
                return JSONResponse({"error": {"message": f"scripted {status}", "type": "scripted",
                                               "code": str(status)}}, status_code=status)
            reply = self.answer(record.body, record.image)
            if isinstance(reply, Exception):
                return JSONResponse({"error": {"message": str(reply), "type": "server_error"}}, status_code=500)
            message = self._message(record.body, reply)
            words = len((message.get("content") or "x").split())
            prompt = 10 * len(record.body.get("messages", []))
            return JSONResponse({
                "id": f"chatcmpl-{order}", "object": "chat.completion", "created": int(time.time()),
                "model": self.model,
                "choices": [{"index": 0, "message": message,
                             "finish_reason": "tool_calls" if message.get("tool_calls") else "stop"}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": words, "total_tokens": prompt + words},
            })

        return Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])
