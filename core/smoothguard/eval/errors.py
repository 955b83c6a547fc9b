"""Errors of the evaluation harness; both derive from :class:`smoothguard.errors.SmoothGuardError`."""

from __future__ import annotations

from smoothguard.errors import SmoothGuardError

__all__ = ["DatasetError", "EvalError"]


class DatasetError(SmoothGuardError, ValueError):
    """A benchmark on disk is incomplete or malformed; the message names the file, line and field."""


class EvalError(SmoothGuardError, RuntimeError):
    """An evaluation cannot go on as asked (e.g. ``--out`` holds another benchmark's run, a corrupt log)."""
