"""``smoothguard serve``: an OpenAI-compatible guard proxy in front of any serving engine (extra ``serve``).

>>> from smoothguard.serve import create_app
>>> app = create_app("http://127.0.0.1:8001/v1", GuardConfig(n_samples=11))   # an ASGI app; run it with uvicorn

``import smoothguard`` never imports this package; importing it needs no web stack until :func:`create_app`
is used (:class:`ServeSettings` and the CLI parser are plain Python).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from smoothguard.serve.settings import ServeSettings, load_config_file

if TYPE_CHECKING:
    from smoothguard.serve.app import create_app

__all__ = ["ServeSettings", "create_app", "load_config_file"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from smoothguard.serve.app import create_app

        return create_app
    raise AttributeError(f"module 'smoothguard.serve' has no attribute {name!r}")
