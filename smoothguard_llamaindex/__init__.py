"""LlamaIndex integration for SmoothGuard.

* :class:`SmoothGuardLLM` — a ``FunctionCallingLLM`` wrapping any LlamaIndex LLM (``llm=``); use it wherever
  an LLM goes: ``index.as_query_engine(llm=..., multimodal=True)``, chat engines, ``FunctionAgent``.
* :class:`SmoothGuardMultiModalLLM` — the same guard around a legacy ``MultiModalLLM``.
* :class:`GuardedQueryEngine` — a query engine whose queries carry their own image(s) plus retrieved context.
* :class:`SmoothGuardEvent` — the instrumentation event with the vote summary, one per guarded call.

Every response carries ``GuardResult.to_dict()`` under ``additional_kwargs["smoothguard"]`` (query engines:
``response.metadata["smoothguard"]``).
"""

from smoothguard_llamaindex.events import SmoothGuardEvent
from smoothguard_llamaindex.guarded import METADATA_KEY
from smoothguard_llamaindex.llm import SmoothGuardLLM
from smoothguard_llamaindex.multimodal import SmoothGuardMultiModalLLM
from smoothguard_llamaindex.query_engine import GuardedQueryEngine

__all__ = ["METADATA_KEY", "GuardedQueryEngine", "SmoothGuardEvent", "SmoothGuardLLM", "SmoothGuardMultiModalLLM"]
