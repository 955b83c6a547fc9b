"""Greedy candidates: whether a wrapped remote model can be asked for temperature 0.

The guard compares the answers of the noisy copies, so they should differ only by the noise: every candidate
goes out at temperature 0 where the model has a temperature setting and its provider takes 0. The framework
adapters (``smoothguard_langchain``, ``smoothguard_llamaindex``) read their model classes' fields and ask
:func:`greedy_temperature`; the rules below are written once, here.

Which models take no temperature 0: OpenAI's reasoning models. The o-series (``o1``, ``o3``, ``o4-mini``, ...)
accept only the default temperature 1; the gpt-5 family and later (``gpt-5``, ``gpt-5-mini``, ``gpt-5.1``, ...)
likewise, except their ``-chat`` models and a request with ``reasoning_effort="none"``. A name may carry a
routing prefix (``openai/gpt-5`` on OpenRouter or LiteLLM); the last path part is read.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

__all__ = ["greedy_temperature", "refuses_zero_temperature"]

_O_SERIES = re.compile(r"^o\d+(?:$|[-_.])")
_GPT = re.compile(r"^gpt-(\d+)")

_warned: set[tuple[type, str | None]] = set()  # (model class, model name): warned once each


def refuses_zero_temperature(model_name: str | None, *, reasoning_effort: str | None = None) -> bool:
    """True when the provider takes no ``temperature=0`` for ``model_name`` (OpenAI's reasoning models: the
    o-series, and gpt-5 and later except ``-chat`` models and ``reasoning_effort="none"``). Unknown or missing
    names take it (False)."""
    if not isinstance(model_name, str) or not model_name:
        return False
    name = model_name.strip().lower().rsplit("/", 1)[-1]
    if _O_SERIES.match(name):
        return True
    gpt = _GPT.match(name)
    if gpt and int(gpt.group(1)) >= 5:
        return "chat" not in name and reasoning_effort != "none"
    return False


def greedy_temperature(model: Any, *, has_setting: bool, temperature: Any = None, model_name: str | None = None,
                       reasoning_effort: str | None = None, provider_refuses: bool = False,
                       stacklevel: int = 3) -> bool:
    """Whether each candidate call should be sent ``temperature=0``.

    model: the wrapped model (its class names the warning). has_setting: the model class has a ``temperature``
    setting (a model without one is used as it is). temperature: the model's own value (already 0: nothing to
    add). model_name / reasoning_effort: for :func:`refuses_zero_temperature`. provider_refuses: the framework's
    own provider class says it drops 0 for this model (e.g. ``ChatOpenAI.validate_temperature``).

    Returns False, with a ``UserWarning`` once per model class (and model name), when greedy decoding cannot be
    requested: the candidates then decode as the model always does, and sampling adds disagreement of its own
    (lower agreement, more flags) on top of the noise.
    """
    kind = type(model).__name__
    if not has_setting:
        _warn_once((type(model), None),
                   f"SmoothGuard cannot ask {kind} for greedy decoding (it has no `temperature` setting): candidates "
                   "use the model's own decoding, so set it to greedy there if it samples", stacklevel)
        return False
    if provider_refuses or refuses_zero_temperature(model_name, reasoning_effort=reasoning_effort):
        _warn_once((type(model), model_name),
                   f"SmoothGuard cannot ask {kind} for greedy decoding: the provider takes no temperature 0 for "
                   f"{model_name!r} (a reasoning model), so candidates are sampled at its own temperature and may "
                   "disagree beyond the noise (lower agreement, more flags)", stacklevel)
        return False
    return temperature != 0


def _warn_once(key: tuple[type, str | None], message: str, stacklevel: int) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, UserWarning, stacklevel=stacklevel + 1)
