"""Greedy candidates for LangChain chat models: read the model's fields and ask the core's rule
(:func:`smoothguard.decoding.greedy_temperature`, which also says which providers take no temperature 0)."""

from __future__ import annotations

from typing import Any

from smoothguard import decoding

__all__ = ["greedy_temperature"]


def greedy_temperature(model: Any) -> bool:
    """Whether candidates should be sent ``temperature=0``: the inner chat model has a ``temperature`` setting,
    it is not 0 already, and its provider takes 0 (not OpenAI's reasoning models such as gpt-5 and o1, nor a
    model ``ChatOpenAI``'s own validator drops it for). Warns once per model class when greedy decoding cannot
    be requested."""
    if model is None:
        return False
    name = getattr(model, "model_name", None) or getattr(model, "model", None)
    name = name if isinstance(name, str) else None
    reasoning = getattr(model, "reasoning", None)
    effort = getattr(model, "reasoning_effort", None) or (reasoning.get("effort") if isinstance(reasoning, dict)
                                                          else None)
    effort = effort if isinstance(effort, str) else None
    return decoding.greedy_temperature(
        model, has_setting="temperature" in getattr(type(model), "model_fields", {}),
        temperature=getattr(model, "temperature", None), model_name=name, reasoning_effort=effort,
        provider_refuses=_validator_drops_zero(model, name, effort), stacklevel=4)


def _validator_drops_zero(model: Any, name: str | None, effort: str | None) -> bool:
    """The provider class's own temperature validator (``ChatOpenAI.validate_temperature``) drops 0 for ``name``."""
    validate = getattr(type(model), "validate_temperature", None)
    if not callable(validate) or name is None:
        return False
    try:
        checked = validate({"model": name, "model_name": name, "temperature": 0, "reasoning_effort": effort})
    except Exception:
        return True
    return isinstance(checked, dict) and checked.get("temperature") != 0
