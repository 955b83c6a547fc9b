"""The exceptions SmoothGuard raises. Every message says what went wrong and what to do."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from smoothguard.result import GuardResult

__all__ = ["ConfigError", "GenerationError", "GuardFlagged", "MediaError", "SmoothGuardError", "check_int",
           "did_you_mean", "shorten"]


def shorten(value: object, limit: int = 80) -> str:
    """``repr`` of ``str(value)`` cut to ``limit`` characters (and "..."), for naming a value in an error message."""
    text = str(value)
    return repr(text if len(text) <= limit else text[:limit] + "...")


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the known name closest to a misspelt ``name``, or ``""`` when none is close."""
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def check_int(name: str, value: Any, low: int) -> int:
    """``value`` when it is an integer ``>= low`` (a bool is not); :class:`ConfigError` naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


class SmoothGuardError(Exception):
    """Base class of every error SmoothGuard raises on purpose."""


class ConfigError(SmoothGuardError, ValueError):
    """An invalid setting; raised when the configuration is built, never mid-request."""


class MediaError(SmoothGuardError, ValueError):
    """An image or audio clip that cannot be decoded, is too large, or has an unsupported format."""


class GenerationError(SmoothGuardError, RuntimeError):
    """Fewer candidates were answered than the quorum needs.

    ``causes`` holds one entry per failed candidate: ``(candidate index, exception or message)``;
    ``answers`` the answers that did arrive, by candidate index, so nothing computed is lost.
    """

    def __init__(self, message: str, causes: list[tuple[int, Any]] | None = None,
                 answers: dict[int, str] | None = None) -> None:
        super().__init__(message)
        self.causes: list[tuple[int, Any]] = list(causes or [])
        self.answers: dict[int, str] = dict(answers or {})


class GuardFlagged(SmoothGuardError):
    """Raised under ``on_flag="raise"`` when the candidates agree less than ``min_agreement``.

    ``result`` is the full :class:`~smoothguard.GuardResult`, so nothing computed is lost.
    """

    def __init__(self, result: GuardResult) -> None:
        super().__init__(
            f"the candidates agreed only {result.agreement:.0%} "
            f"(min_agreement={result.config.min_agreement:.0%}); inspect .result for every answer"
        )
        self.result = result
