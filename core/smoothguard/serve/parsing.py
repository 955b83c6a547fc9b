"""What the proxy reads: the JSON body (and where a lone surrogate hides in it), bearer tokens, media URLs, the
model name, and the upstream's completions (whose tool calls it relays)."""

from __future__ import annotations

import ipaddress
import json
import re
import urllib.parse
from typing import Any

from smoothguard.serve.errors import ProxyError

__all__ = ["bearer_token", "check_tool_calls", "model_name", "parse_body", "safe_url",
           "withhold_addresses"]


def parse_body(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object; a 400 :class:`ProxyError` when it is not one, or when a string in it
    holds a lone surrogate (a ``"\\ud800"`` escape without its pair: no valid text holds one)."""
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise ProxyError(400, f"the request body is not valid JSON: {_json_reason(exc)}", code="invalid_json") from None
    except RecursionError:
        raise ProxyError(400, "the request body is nested too deeply to parse", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ProxyError(400, "the request body must be a JSON object (a chat completion request)",
                         code="invalid_json")
    # only a \uD8xx-\uDFxx escape can put a surrogate in the parsed text (raw ones are invalid UTF-8, refused by
    # json.loads): walk the body only when the bytes hold such an escape
    bad_text = _lone_surrogate(body) if b"\\ud" in raw or b"\\uD" in raw else None
    if bad_text is not None:
        raise ProxyError(400, f"invalid text: {bad_text} holds a lone UTF-16 surrogate (a \\ud800-\\udfff escape "
                         "without its pair), which is not Unicode text; send valid UTF-8", code="invalid_text",
                         param=bad_text)
    return body


def _json_reason(exc: ValueError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno}, column {exc.colno}"
    return "it is not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else "unreadable"


_SURROGATE = re.compile("[\ud800-\udfff]")


def _lone_surrogate(body: Any) -> str | None:
    """Where the first string (or key) holding a lone surrogate is, as a parameter path; None when none does."""
    stack: list[tuple[Any, str]] = [(body, "")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                return path or "the body"
        elif isinstance(value, dict):
            for key, item in value.items():
                where = f"{path}.{_printable(key)}" if path else _printable(key)
                if _SURROGATE.search(key):
                    return where
                stack.append((item, where))
        elif isinstance(value, list):
            stack.extend((item, f"{path}[{i}]") for i, item in enumerate(value))
    return None


def _printable(text: str, limit: int = 80) -> str:
    """``text`` with surrogates escaped (so it can be sent back), shortened."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[:limit] + "..."


def check_tool_calls(calls: Any) -> None:
    """ValueError when a completion's ``choices[0].message.tool_calls`` are malformed: the proxy relays them, so
    they must be objects with a ``function`` object, as OpenAI's API writes them."""
    if calls is None:
        return
    if not isinstance(calls, list):
        raise ValueError(f"choices[0].message.tool_calls must be a list of tool calls, got {type(calls).__name__}")
    for k, call in enumerate(calls):
        where = f"choices[0].message.tool_calls[{k}]"
        if not isinstance(call, dict):
            raise ValueError(f"{where} must be an object, got {type(call).__name__}")
        function = call.get("function")
        if function is None:
            continue
        if not isinstance(function, dict):
            raise ValueError(f"{where}.function must be an object, got {type(function).__name__}")
        if function.get("name") is not None and not isinstance(function["name"], str):
            raise ValueError(f"{where}.function.name must be a string")
        arguments = function.get("arguments")
        if arguments is not None and not isinstance(arguments, str | dict):
            raise ValueError(f"{where}.function.arguments must be a string")


_ADDRESS_LIKE = re.compile(r"[0-9A-Fa-f:.%]*[:.][0-9A-Fa-f:.%]*")


def withhold_addresses(text: str, url: str) -> str:
    """``text`` (a fetch error) without the IP addresses a host name resolved to: a client learns nothing about
    the internal network from a refused fetch. Addresses written in the client's own URL stay."""

    def withhold(match: re.Match[str]) -> str:
        token = match.group(0)
        try:
            ipaddress.ip_address(token.split("%", 1)[0])
        except ValueError:
            return token
        return token if token in url else "an address withheld"

    return _ADDRESS_LIKE.sub(withhold, text)


def bearer_token(value: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header; None for any other value."""
    scheme, _, token = (value or "").strip().partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


def safe_url(url: str) -> str:
    """``url`` without any user:password part, for logs."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def model_name(body: dict[str, Any]) -> str | None:
    """The request's model name, which decides what ``image_resize="auto"`` means (a Qwen2-VL served by vLLM
    keeps its full resolution; others get OpenAI's or Anthropic's input size)."""
    model = body.get("model")
    return model if isinstance(model, str) else None
