"""Greedy candidates for LlamaIndex LLMs: ``temperature=0`` as a call keyword where the LLM takes it.

LlamaIndex's provider classes merge call keywords into the request over their own settings (``OpenAI``,
``OpenAILike``, ``AzureOpenAI``: ``llm.chat(messages, temperature=0)`` sends ``"temperature": 0``), so each
candidate call gets ``temperature=0`` when the LLM has a ``temperature`` setting and its provider takes 0; the
rule for which providers do not (OpenAI's reasoning models) is the core's
(:func:`smoothguard.decoding.greedy_temperature`, which also warns once where greedy decoding cannot be asked).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from smoothguard import decoding

__all__ = ["greedy_kwargs"]


def greedy_kwargs(llm: Any, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The keywords for one candidate call of ``llm``: ``kwargs`` plus ``temperature=0`` when the candidates can
    be made greedy. A ``temperature`` the caller passed wins, and so does one in the LLM's ``additional_kwargs``
    (which ``OpenAI`` sends over call keywords)."""
    out = dict(kwargs)
    if "temperature" in out:
        return out
    extra = getattr(llm, "additional_kwargs", None)
    if isinstance(extra, Mapping) and "temperature" in extra:
        return out
    name = getattr(llm, "model", None)
    if not isinstance(name, str):
        try:
            name = str(llm.metadata.model_name)
        except Exception:
            name = None
    effort = getattr(llm, "reasoning_effort", None)
    if decoding.greedy_temperature(llm, has_setting="temperature" in getattr(type(llm), "model_fields", {}),
                                   temperature=getattr(llm, "temperature", None), model_name=name,
                                   reasoning_effort=effort if isinstance(effort, str) else None, stacklevel=4):
        out["temperature"] = 0
    return out
