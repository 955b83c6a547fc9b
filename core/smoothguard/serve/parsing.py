"""What the proxy reads: the JSON body (and where a lone surrogate hides in it), bearer tokens, media URLs, the
model name, and the upstream's completions (whose tool calls it relays)."""

from __future__ import annotations

import ipaddress
import json
import re
import urllib.parse
from typing import Any

__all__ = ["bearer_token", "check_completion", "json_reason", "model_name", "parse_body", "safe_url", "url_problem",
           "withhold_addresses"]


def json_reason(exc: ValueError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno}, column {exc.colno}"
    return "it is not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else "unreadable"


_SURROGATE = re.compile("[\ud800-\udfff]")


def parse_body(raw: bytes) -> tuple[Any, str | None]:
    """The JSON body, and where in it a lone surrogate sits (a ``"\\ud800"`` escape without its pair: no valid
    text holds one), or None."""
    body = json.loads(raw)
    # only a \uD8xx-\uDFxx escape can put a surrogate in the parsed text (raw ones are invalid UTF-8, refused by
    # json.loads): walk the body only when the bytes hold such an escape
    if b"\\ud" in raw or b"\\uD" in raw:
        return body, _lone_surrogate(body)
    return body, None


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


def check_completion(data: dict[str, Any]) -> None:
    """ValueError when the completion's tool calls are malformed (the proxy relays them, so they must be objects
    with a ``function`` object, as OpenAI's API writes them); :func:`answer_text` checks the rest."""
    choices = data.get("choices")
    if not (isinstance(choices, list) and choices and isinstance(choices[0], dict)):
        return
    message = choices[0].get("message")
    calls = message.get("tool_calls") if isinstance(message, dict) else None
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


def url_problem(url: str) -> str | None:
    """Why ``url`` is not a usable http(s) URL (a bad port, a malformed IPv6 literal, ...), or None."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 -- parsing the port raises for one out of range or not a number
    except ValueError as exc:
        return str(exc) or "it cannot be parsed"
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return "it needs an http(s) scheme and a host"
    return None


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
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else value


def safe_url(url: str) -> str:
    """``url`` without any user:password part, for logs."""
    import urllib.parse

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
