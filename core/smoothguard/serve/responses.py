"""What the proxy answers: the voted completion (or its SSE stream), the vote in headers, errors in OpenAI's shape."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from smoothguard.errors import GenerationError
from smoothguard.result import GuardResult
from smoothguard.serve.errors import ProxyError, Redactor
from smoothguard.serve.upstream import UpstreamError

__all__ = ["OVER_BUDGET", "completion", "dumps", "error_response", "generation_error", "http_exception",
           "json_response", "stream_response", "unexpected_error", "vote_headers", "vote_meta"]

log = logging.getLogger("smoothguard.serve")

OVER_BUDGET = "time_budget_exceeded"  # the error code when the time budget runs out


def generation_error(exc: GenerationError, asked: int, redact: Redactor, rid: str) -> ProxyError:
    """Too few of the ``asked`` candidates answered. Where the failures agree (the core's rule,
    :func:`smoothguard.fanout.raise_failure`: ``exc`` is then also that failure's type), that failure's status;
    504 where candidates missed the time budget; otherwise 502. The body lists every candidate's error."""
    causes = [cause for _, cause in exc.causes]
    errors = [{"index": i, "error": redact(str(cause))} for i, cause in exc.causes]
    extra = {"smoothguard": {"request_id": rid, "errors": errors}}
    alike = (f"all {asked} candidates failed the same way" if len(causes) == asked else
             f"only {asked - len(causes)} of {asked} candidates were answered; the {len(causes)} others failed the "
             "same way")
    if isinstance(exc, UpstreamError):
        code = exc.code if len({getattr(c, "code", None) for c in causes}) == 1 else "upstream_failed"
        return ProxyError(exc.status, f"{alike}: {exc.message}", type=exc.type, code=code, extra=extra)
    if isinstance(exc, TimeoutError):  # every failed candidate missed the time budget
        return ProxyError(504, f"{alike}: {causes[0]}", type="upstream_timeout", code=OVER_BUDGET, extra=extra)
    if any(isinstance(c, TimeoutError) for c in causes):
        return ProxyError(504, redact(str(exc)), type="upstream_timeout", code=OVER_BUDGET, extra=extra)
    return ProxyError(502, redact(str(exc)), type="upstream_error", code="upstream_failed", extra=extra)


def vote_headers(response: Response, result: GuardResult) -> Response:
    """The vote in response headers too, for clients that drop unknown body fields (``ChatOpenAI``'s
    ``include_response_headers=True`` exposes them): agreement (winner share, 0-1), flagged, model calls made."""
    response.headers["x-smoothguard-agreement"] = f"{result.agreement:.4f}"
    response.headers["x-smoothguard-flagged"] = "true" if result.flagged else "false"
    response.headers["x-smoothguard-calls"] = str(result.n_used)
    return response


def vote_meta(result: GuardResult, rid: str) -> dict[str, Any]:
    """The reply's ``smoothguard`` object: the result (its notes hold the proxy's) and the request id."""
    return {**result.to_dict(), "request_id": rid}


def _chosen(result: GuardResult, candidates: dict[int, dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The completion of the chosen candidate and its message (the guard's answer as content)."""
    index = result.representative if result.representative in candidates else min(candidates)
    completion = candidates[index]
    choice = completion["choices"][0]
    if result.refused:
        return completion, {"role": "assistant", "content": result.answer}
    message = dict(choice.get("message") or {})
    message.setdefault("role", "assistant")
    content = message.get("content")
    if (isinstance(content, str) and content.strip()) or not message.get("tool_calls"):
        message["content"] = result.answer
    return completion, message


def _usage(candidates: dict[int, dict[str, Any]]) -> dict[str, int] | None:
    """Token usage summed over every answered candidate: what the request really cost."""
    total: dict[str, int] = {}
    for completion in candidates.values():
        usage = completion.get("usage")
        if isinstance(usage, dict):
            for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
                if isinstance(usage.get(key), int):
                    total[key] = total.get(key, 0) + usage[key]
    return total or None


def completion(result: GuardResult, candidates: dict[int, dict[str, Any]], body: dict[str, Any],
                meta: dict[str, Any]) -> dict[str, Any]:
    completion, message = _chosen(result, candidates)
    choice = completion["choices"][0]
    out = {
        "id": completion.get("id") or f"chatcmpl-{meta['request_id']}",
        "object": "chat.completion",
        "created": completion.get("created") or int(time.time()),
        "model": completion.get("model") or body.get("model"),
        "choices": [{"index": 0, "message": message, "logprobs": None if result.refused else choice.get("logprobs"),
                     "finish_reason": "stop" if result.refused else choice.get("finish_reason") or "stop"}],
    }
    if completion.get("system_fingerprint"):
        out["system_fingerprint"] = completion["system_fingerprint"]
    usage = _usage(candidates)
    if usage:
        out["usage"] = usage
    out["smoothguard"] = meta
    return out


def stream_response(result: GuardResult, candidates: dict[int, dict[str, Any]], body: dict[str, Any],
                     meta: dict[str, Any]) -> StreamingResponse:
    """The chosen answer as an SSE stream of chat.completion.chunk events ending with ``data: [DONE]``."""
    full = completion(result, candidates, body, meta)
    message = full["choices"][0]["message"]
    base = {"id": full["id"], "object": "chat.completion.chunk", "created": full["created"], "model": full["model"]}
    delta: dict[str, Any] = {"role": "assistant", "content": message.get("content")}
    if message.get("tool_calls"):
        delta["tool_calls"] = [{**call, "index": k} for k, call in enumerate(message["tool_calls"])]
    events = [
        {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]},
        {**base, "choices": [{"index": 0, "delta": {}, "logprobs": None,
                              "finish_reason": full["choices"][0]["finish_reason"]}], "smoothguard": meta},
    ]
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") and full.get("usage"):
        events.append({**base, "choices": [], "usage": full["usage"]})

    chunks = [b"data: " + dumps(event) + b"\n\n" for event in events]  # now: a failure is an error, not a cut stream

    async def stream() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk
        yield b"data: [DONE]\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"cache-control": "no-cache"})


def dumps(obj: Any) -> bytes:
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, default=_json_default)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (from the upstream: client text is checked): escape it, as JSON can
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=True, default=_json_default).encode("ascii")


def _json_default(obj: Any) -> Any:
    item = getattr(obj, "item", None)  # numpy scalars
    if callable(item):
        return item()
    if isinstance(obj, tuple | set | frozenset):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(obj), status_code=status, media_type="application/json", headers=headers)


def error_response(exc: ProxyError) -> Response:
    return json_response(exc.body(), exc.status, exc.headers or None)


async def http_exception(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 500)
    if status == 404:
        message = (f"no route {request.url.path!r}: the SmoothGuard proxy serves POST /v1/chat/completions, "
                   "GET /v1/models and GET /health")
    elif status == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    else:
        message = str(getattr(exc, "detail", "")) or "request failed"
    return error_response(ProxyError(status, message, code={404: "not_found", 405: "method_not_allowed"}.get(status)))


async def unexpected_error(request: Request, exc: Exception) -> Response:
    log.error("unexpected error on %s %s: %s", request.method, request.url.path, type(exc).__name__)
    return error_response(ProxyError(500, "internal error in the SmoothGuard proxy", type="server_error",
                                     code="internal_error"))
