"""The proxy's HTTP client: pooled, bounded calls to the upstream engine (media: :func:`smoothguard.media.download`).

httpcore's connection pool checks every one of its connections each time it hands one out, so one big pool turns
quadratic under the thousands of concurrent calls a guard proxy makes (measured on 2 cores: 2,200 concurrent calls
through one pool took about 10 s, against 3 s sharded). So calls go to several small pools (httpx transports,
created as load needs them), none ever given more requests than it has connections, behind one semaphore for the
replica. Calls use the transports directly (httpx's public transport API): the client layer's redirects, cookies
and auth are not needed here and cost about 15% of the CPU time of a call.

httpx is the one HTTP stack of the proxy (and of ``smoothguard eval`` against endpoints). An optional aiohttp fan-out
was measured at about half the proxy CPU per request at 25 to 200 simultaneous requests per replica
(docs/serving.md); it was dropped as a second, untested stack outside the ``serve`` extra: add replicas
(``--workers``) where one core runs short.
"""

from __future__ import annotations

import asyncio
import json
import math
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from smoothguard._version import __version__
from smoothguard.serve.errors import ProxyError, Redactor

__all__ = ["UpstreamClient", "UpstreamError", "http_error"]

_POOL_SIZE = 8  # connections per pool: each call scans its pool's connections, so keep pools small
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 413: "invalid_request_error", 422: "invalid_request_error",
                429: "rate_limit_error"}


class UpstreamError(ProxyError):
    """One upstream call failed, answered to the client as it is. ``status``: the upstream's own for 4xx, 502 when
    unreachable, malformed or 5xx, 504 on timeout; ``upstream_status``: the HTTP status the upstream answered (None
    when it did not answer); ``message`` is already free of secrets."""

    def __init__(self, status: int, message: str, *, type: str = "upstream_error", code: str | None = None,
                 upstream_status: int | None = None) -> None:
        super().__init__(status, message, type=type, code=code)
        self.upstream_status = upstream_status


def _too_large(limit: int) -> UpstreamError:
    return UpstreamError(502, f"the upstream's response is larger than this proxy's limit of {limit} bytes "
                         "(max_upstream_response_bytes)", code="upstream_response_too_large")


class UpstreamClient:
    """Calls ``{base_url}/...`` with at most ``max_concurrency`` requests in flight (further calls wait).

    timeout: seconds one call may take in all; connect_timeout: seconds to connect.
    transport: an httpx transport to use instead of the network (tests).
    max_response_bytes: largest response body read (decompressed), counted chunk by chunk as it arrives, so an
    oversize body is dropped after at most this much (and one chunk) was held: :class:`UpstreamError` 502
    ``upstream_response_too_large``.
    """

    def __init__(self, base_url: str, *, timeout: float, connect_timeout: float, max_concurrency: int,
                 transport: httpx.AsyncBaseTransport | None = None, max_response_bytes: int = 8 * 1024 * 1024) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self._max_pools = max(1, math.ceil(max_concurrency / _POOL_SIZE))
        self._per_pool = math.ceil(max_concurrency / self._max_pools)
        self._fixed = transport
        self._ssl: ssl.SSLContext | None = None
        self._pools: list[httpx.AsyncBaseTransport] = []
        self._load: list[int] = []
        self._slots = asyncio.Semaphore(max_concurrency)
        self._extensions = {"timeout": {"connect": connect_timeout, "read": timeout, "write": timeout,
                                        "pool": timeout}}
        self._headers = {"user-agent": f"smoothguard/{__version__}", "accept": "application/json"}

    async def aclose(self) -> None:
        pools, self._pools, self._load = self._pools, [], []
        await asyncio.gather(*(pool.aclose() for pool in pools), return_exceptions=True)

    def in_flight(self) -> int:
        return sum(self._load)

    def _pick(self) -> int:
        """The least loaded pool, adding one while every pool is full (a slot is held, so one always has room)."""
        if self._load:
            i = min(range(len(self._load)), key=self._load.__getitem__)
            if self._load[i] < self._per_pool or len(self._pools) >= self._max_pools:
                self._load[i] += 1
                return i
        self._pools.append(self._fixed or self._new_pool())
        self._load.append(1)
        return len(self._pools) - 1

    def _new_pool(self) -> httpx.AsyncBaseTransport:
        if self._ssl is None:
            self._ssl = _ssl_context()  # loading the CA bundle costs ~30 ms: once, shared by every pool
        limits = httpx.Limits(max_connections=self._per_pool, max_keepalive_connections=self._per_pool,
                              keepalive_expiry=30)
        return httpx.AsyncHTTPTransport(verify=self._ssl, limits=limits, trust_env=False)

    def _request(self, method: str, path: str, payload: bytes | None, headers: dict[str, str]) -> httpx.Request:
        headers = {**self._headers, **headers}
        if payload is not None:
            headers["content-type"] = "application/json"
        return httpx.Request(method, self.base_url + path, content=payload, headers=headers,
                             extensions=self._extensions)

    async def post_json(self, path: str, payload: bytes, headers: dict[str, str], redact: Redactor) -> dict[str, Any]:
        """POST ``payload`` (JSON bytes) and return the JSON object answered; :class:`UpstreamError` otherwise."""
        request = self._request("POST", path, payload, headers)
        async with self._slots:
            i = self._pick()
            try:
                async with asyncio.timeout(self.timeout):  # the whole call: headers and body
                    response = await self._pools[i].handle_async_request(request)
                    try:
                        content = await self._read_body(response)
                    finally:
                        await response.aclose()
            except (TimeoutError, httpx.HTTPError) as exc:
                raise _failure(exc, self.timeout) from None
            finally:
                self._load[i] -= 1
        if response.status_code >= 400:
            raise http_error(response.status_code, content, redact)
        try:
            data = json.loads(content)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise UpstreamError(502, "the upstream answered with something other than a JSON object",
                                code="upstream_bad_response")
        return data

    async def _read_body(self, response: httpx.Response) -> bytes:
        """The body, at most ``max_response_bytes`` (a Content-Length over it fails at once; a wrong one proves
        nothing, so the bytes are counted as they arrive)."""
        limit = self.max_response_bytes
        length = response.headers.get("content-length", "")
        if length.strip().isdigit() and int(length) > limit:
            raise _too_large(limit)
        parts, total = [], 0
        async for chunk in response.aiter_bytes():
            total += len(chunk)
            if total > limit:
                raise _too_large(limit)
            parts.append(chunk)
        return b"".join(parts)

    async def read(self, response: httpx.Response) -> bytes:
        """The body of a response from :meth:`open`: at most ``max_response_bytes``, read within ``timeout``;
        :class:`UpstreamError` otherwise (the caller still releases the response)."""
        try:
            async with asyncio.timeout(self.timeout):
                return await self._read_body(response)
        except (TimeoutError, httpx.HTTPError) as exc:
            raise _failure(exc, self.timeout) from None

    async def open(self, method: str, path: str, payload: bytes | None,
                   headers: dict[str, str]) -> tuple[httpx.Response, Callable[[], Awaitable[None]]]:
        """Send a request and return the response with its body unread, and an async ``release()`` that must be
        awaited when done with it (it closes the response and frees the concurrency slot; calling it twice is
        harmless)."""
        request = self._request(method, path, payload, headers)
        await self._slots.acquire()
        i = self._pick()
        response: httpx.Response | None = None
        released = False

        async def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            try:
                if response is not None:
                    await response.aclose()
            finally:
                self._load[i] -= 1
                self._slots.release()

        try:
            async with asyncio.timeout(self.timeout):
                response = await self._pools[i].handle_async_request(request)
        except BaseException as exc:
            await release()
            if isinstance(exc, TimeoutError | httpx.HTTPError):
                raise _failure(exc, self.timeout) from None
            raise
        response.request = request
        return response, release


def _ssl_context() -> ssl.SSLContext:
    try:
        import certifi

        return ssl.create_default_context(cafile=certifi.where())
    except ImportError:
        return ssl.create_default_context()


def _failure(exc: TimeoutError | httpx.HTTPError, timeout: float) -> UpstreamError:
    """A call's timeout (``timeout`` seconds in all) or transport failure, as the client is told."""
    if isinstance(exc, TimeoutError):
        return UpstreamError(504, f"the upstream did not answer within {timeout:g} s", type="upstream_timeout",
                             code="upstream_timeout")
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamError(504, "the upstream did not answer in time", type="upstream_timeout",
                             code="upstream_timeout")
    if isinstance(exc, httpx.ConnectError):
        return UpstreamError(502, "could not connect to the upstream model server", code="upstream_unreachable")
    return UpstreamError(502, f"the connection to the upstream failed ({type(exc).__name__})",
                         code="upstream_connection_error")


def http_error(status: int, content: bytes, redact: Redactor) -> UpstreamError:
    """An :class:`UpstreamError` for an upstream HTTP error, with the upstream's message (secrets removed)."""
    message = ""
    kind = None
    try:
        data = json.loads(content)
    except ValueError:
        data = None
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            message, kind = str(err.get("message") or ""), err.get("type")
        elif isinstance(err, str):
            message = err
        elif isinstance(data.get("message"), str):  # vLLM's older {"object": "error", "message": ...}
            message, kind = data["message"], data.get("type")
    limit = 1000
    if not message:
        message, limit = content.decode("utf-8", "replace").strip(), 300
    # redact the whole message first, then shorten: cut first, a key straddling the cut would lose its tail and
    # no longer match, and its head would reach the client
    message = redact(message)[:limit].rstrip() or "(no message)"
    if 400 <= status < 500:
        type_ = kind if isinstance(kind, str) and kind else _ERROR_TYPES.get(status, "invalid_request_error")
        return UpstreamError(status, f"upstream HTTP {status}: {message}", type=type_,
                             code=f"upstream_{status}", upstream_status=status)
    return UpstreamError(502, f"upstream HTTP {status}: {message}", code=f"upstream_{status}",
                         upstream_status=status)
