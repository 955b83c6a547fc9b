"""Fixtures for the proxy tests (helpers live in serve_support.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from serve_support import SMALL, ProxyServer

from smoothguard import GuardConfig

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from smoothguard.serve import create_app


@pytest.fixture
def serve():
    """``with serve(upstream_url, config, **options) as proxy:`` runs a proxy on 127.0.0.1."""

    @contextmanager
    def run(upstream: str, config: GuardConfig | None = SMALL, **options: Any) -> Iterator[ProxyServer]:
        with ProxyServer(create_app(upstream, config, **options)) as proxy:
            yield proxy

    return run


