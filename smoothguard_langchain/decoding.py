"""Greedy candidates: whether the wrapped chat model can be asked for temperature 0, so the copies differ only by
the noise (the guard's answers are compared, so sampling would add disagreement of its own)."""

from __future__ import annotations

import warnings
from typing import Any

__all__ = ["greedy_temperature"]

_warned_no_temperature: set[type] = set()


def greedy_temperature(model: Any) -> bool:
    """Whether candidates should be sent ``temperature=0``: the inner chat model has a ``temperature`` setting and
    its provider takes 0 (``ChatOpenAI``'s own validator drops it for reasoning models such as gpt-5 and o1).
    Warns once per model class when greedy decoding cannot be requested."""
    if model is None:
        return False
    fields = getattr(type(model), "model_fields", {})
    if "temperature" not in fields:
        if type(model) not in _warned_no_temperature:
            _warned_no_temperature.add(type(model))
            warnings.warn(f"SmoothGuard cannot ask {type(model).__name__} for greedy decoding (it has no "
                          "`temperature` setting): candidates use the model's own decoding, so set it to greedy "
                          "there if it samples", UserWarning, stacklevel=4)
        return False
    if getattr(model, "temperature", None) == 0:
        return False  # already greedy: nothing to add
    validate = getattr(type(model), "validate_temperature", None)
    name = getattr(model, "model_name", None) or getattr(model, "model", None)
    if callable(validate) and isinstance(name, str):
        try:
            checked = validate({"model": name, "model_name": name, "temperature": 0})
        except Exception:
            return False
        if isinstance(checked, dict) and checked.get("temperature") != 0:
            return False  # the provider takes no temperature 0 for this model
    return True
