"""Errors the proxy answers with, shaped like OpenAI's: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

__all__ = ["ProxyError", "Redactor", "error_body"]


class ProxyError(Exception):
    """A request the proxy answers with an error: HTTP ``status`` and an OpenAI-style body.

    ``type`` follows OpenAI (``invalid_request_error``, ``authentication_error``, ``upstream_error``, ...);
    ``code`` is a short machine-readable reason; ``param`` names the offending body field, if any;
    ``extra`` adds top-level keys to the body (e.g. ``smoothguard``).
    """

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, extra: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.extra = dict(extra or {})
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        """The JSON body to send."""
        return {**error_body(self.message, type=self.type, code=self.code, param=self.param), **self.extra}


def error_body(message: str, *, type: str = "invalid_request_error", code: str | None = None,
               param: str | None = None) -> dict[str, Any]:
    """``{"error": {...}}`` as OpenAI's API writes it."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


_TOKEN_PATTERNS = [
    re.compile(r"(?i)(bearer\s+)[^\s\"',;]+"),
    re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}"),
]


class Redactor:
    """Removes secrets from text bound for a client or a log: the exact keys given, ``Bearer <token>`` and
    ``sk-...`` shaped tokens."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "[redacted]")
        text = _TOKEN_PATTERNS[0].sub(r"\1[redacted]", text)
        return _TOKEN_PATTERNS[1].sub("[redacted]", text)
