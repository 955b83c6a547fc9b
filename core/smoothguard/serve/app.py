"""The ASGI app of ``smoothguard serve``: ``POST /v1/chat/completions`` (guarded), ``GET /v1/models`` (forwarded),
``GET /health``.

A request with images or audio becomes N upstream requests carrying noisy copies (sent concurrently, bounded);
the answers go through :meth:`SmoothGuard.arun` and the client gets a normal chat completion whose message is
the chosen answer, plus a ``smoothguard`` object (``GuardResult.to_dict()``). A request without media is
forwarded untouched. The app keeps no state between requests, so replicas scale behind any load balancer.

Here: routing, authentication, the request's media (fetched with the core's downloader, decoded under its limits)
and the guarded fan-out. What a request body and an upstream completion must look like is in
:mod:`~smoothguard.serve.parsing`; what the client gets back (the completion or stream, the vote headers, errors)
in :mod:`~smoothguard.serve.responses`; content parts in :mod:`~smoothguard.serve.codec`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import hmac
import json
import logging
import os
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Awaitable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from smoothguard import limits
from smoothguard._version import __version__
from smoothguard.audio_resample import auto_rate
from smoothguard.config import GuardConfig
from smoothguard.deadline import seconds_left
from smoothguard.decoding import refuses_zero_temperature
from smoothguard.errors import GenerationError, GuardFlagged, MediaError, shorten
from smoothguard.fanout import FanOut
from smoothguard.guard import SmoothGuard
from smoothguard.image_resize import auto_rule, fitter
from smoothguard.media import Media, download
from smoothguard.media.remote import url_problem
from smoothguard.result import GuardResult
from smoothguard.serve.codec import MediaSlot, answer_text, candidate_body, decode_slot, find_media, inline
from smoothguard.serve.errors import ProxyError, Redactor, error_body
from smoothguard.serve.parsing import bearer_token, model_name, parse_body, safe_url, withhold_addresses
from smoothguard.serve.responses import (
    OVER_BUDGET,
    completion,
    dumps,
    error_response,
    generation_error,
    http_exception,
    json_response,
    stream_response,
    unexpected_error,
    vote_headers,
    vote_meta,
)
from smoothguard.serve.settings import ServeSettings, apply_overrides, startup_warnings
from smoothguard.serve.upstream import UpstreamClient, UpstreamError, http_error

__all__ = ["ENV_VAR", "app_from_environment", "create_app"]

log = logging.getLogger("smoothguard.serve")

#: Environment variable through which ``smoothguard serve --workers K`` hands its settings to each worker.
ENV_VAR = "SMOOTHGUARD_SERVE_SETTINGS"
_DRAIN_BYTES = 16 * 1024 * 1024  # read (and drop) up to this much of an oversize body, so the client sees the 413
_THREAD_PARSE_BYTES = 1024 * 1024  # bodies from this size up are parsed off the event loop
_FETCH_THREADS = 64  # remote media downloads in flight per replica; more wait for a thread


def create_app(upstream: str | None, config: GuardConfig | Mapping[str, Any] | None = None, *,
               settings: ServeSettings | None = None, transport: httpx.AsyncBaseTransport | None = None,
               freeze_heap: bool = False, **options: Any) -> Starlette:
    """The proxy as an ASGI app (run it with uvicorn, or test it with ``httpx.ASGITransport``).

    upstream: the engine's OpenAI base URL (``http://vllm:8000/v1``); None takes ``settings.upstream``.
    config: the guard's settings (a :class:`GuardConfig` or a dict of them); default ``GuardConfig()``.
    settings / options: a :class:`ServeSettings`, and/or its fields as keywords (``max_body_bytes=...``).
    transport: an httpx transport for upstream calls instead of the network (tests).
    freeze_heap: after the warm-up, move every live object to the garbage collector's permanent generation
    (``gc.freeze()``), so that full collections stop scanning the loaded embedder and libraries: one such
    collection stalled a process holding them for 313 ms (bench_langchain.py, 2-core CPU). For a process that is
    the proxy alone; ``smoothguard serve`` sets it.
    Raises :class:`~smoothguard.errors.ConfigError` for invalid settings.
    """
    if isinstance(config, Mapping):
        config = GuardConfig.from_kwargs(**config)
    config = config if config is not None else GuardConfig()
    if settings is None:
        if upstream is None:
            raise TypeError("create_app needs the upstream URL (or settings=ServeSettings(upstream=...))")
        settings = ServeSettings.from_mapping({"upstream": upstream, **options})
    elif upstream is not None or options:
        settings = settings.replace(**({"upstream": upstream} if upstream is not None else {}), **options)
    proxy = Proxy(config, settings, transport=transport, freeze_heap=freeze_heap)
    app = Starlette(
        routes=[Route("/v1/chat/completions", proxy.chat_completions, methods=["POST"]),
                Route("/v1/models", proxy.models, methods=["GET"]),
                Route("/health", proxy.health, methods=["GET"])],
        exception_handlers={HTTPException: http_exception, Exception: unexpected_error},
        lifespan=proxy.lifespan,
    )
    app.state.proxy = proxy
    return app


def app_from_environment() -> Starlette:
    """The app described by ``$SMOOTHGUARD_SERVE_SETTINGS`` (JSON ``{"guard": {...}, "serve": {...}}``): the
    uvicorn factory each worker of ``smoothguard serve --workers K`` builds."""
    spec = json.loads(os.environ[ENV_VAR])
    return create_app(None, spec.get("guard") or {}, settings=ServeSettings.from_mapping(spec["serve"]),
                      freeze_heap=True)


class Proxy:
    """Request handlers and the resources they share (HTTP pools). Holds no per-request state."""

    def __init__(self, config: GuardConfig, settings: ServeSettings, *,
                 transport: httpx.AsyncBaseTransport | None = None, freeze_heap: bool = False) -> None:
        self.config = config
        self.freeze_heap = freeze_heap
        self.settings = settings
        self.api_key = settings.resolve_api_key()
        client_keys = settings.resolve_client_keys()
        # the keys clients must present (none: no client authentication), as bytes for hmac.compare_digest
        self._client_keys = tuple(key.encode("utf-8") for key in client_keys)
        self._secrets = (self.api_key, *client_keys)
        self.ready = False
        self._transport = transport
        self._upstream: UpstreamClient | None = None
        self._fetch_pool: ThreadPoolExecutor | None = None

    # -- shared resources (created on first use, so the app also works without a lifespan) -------------------

    @property
    def upstream(self) -> UpstreamClient:
        if self._upstream is None:
            s = self.settings
            self._upstream = UpstreamClient(s.upstream, timeout=s.upstream_timeout, connect_timeout=s.connect_timeout,
                                            max_concurrency=s.max_upstream_concurrency, transport=self._transport,
                                            max_response_bytes=s.max_upstream_response_bytes)
        return self._upstream

    @property
    def fetch_pool(self) -> ThreadPoolExecutor:
        """The threads that run :func:`smoothguard.media.download` (blocking, each bounded by ``fetch_timeout``):
        their own pool, so slow media servers never hold the workers that perturb and vote."""
        if self._fetch_pool is None:
            self._fetch_pool = ThreadPoolExecutor(_FETCH_THREADS, thread_name_prefix="smoothguard-fetch")
        return self._fetch_pool

    async def aclose(self) -> None:
        """Close the HTTP pools (the lifespan does this at shutdown)."""
        if self._upstream is not None:
            await self._upstream.aclose()
            self._upstream = None
        if self._fetch_pool is not None:
            self._fetch_pool.shutdown(wait=False, cancel_futures=True)
            self._fetch_pool = None

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        for warning in startup_warnings(self.config, self.settings):
            log.warning("%s", warning)
        if self.settings.warmup:
            start = time.perf_counter()
            await asyncio.to_thread(self._warm_up)
            log.info("embedder and vote loaded in %.1f s", time.perf_counter() - start)
        if self.freeze_heap:
            gc.freeze()
        self.ready = True
        log.info("SmoothGuard proxy ready: upstream %s, n_samples=%d, sigma=%g, client authentication %s",
                 safe_url(self.settings.upstream), self.config.n_samples, self.config.sigma,
                 f"on ({len(self._client_keys)} keys)" if self._client_keys else "off")
        try:
            yield
        finally:
            await self.aclose()

    def _warm_up(self) -> None:
        SmoothGuard(self.config).aggregate(["The image shows a cat.", "I cannot tell what the image shows."])

    # -- endpoints --------------------------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        """Liveness: 200 while the process serves; ``ready`` is false until the warm-up finished."""
        in_flight = self._upstream.in_flight() if self._upstream is not None else 0
        return json_response({"status": "ok", "ready": self.ready or not self.settings.warmup, "version": __version__,
                      "upstream_in_flight": in_flight})

    async def models(self, request: Request) -> Response:
        """``GET /v1/models``, forwarded to the upstream."""
        return await self._handle(request, self._models)

    async def chat_completions(self, request: Request) -> Response:
        """``POST /v1/chat/completions``: guarded when the messages carry images or audio, else forwarded."""
        return await self._handle(request, self._chat)

    async def _handle(self, request: Request, handler: Any) -> Response:
        rid = "sg-" + uuid.uuid4().hex[:16]
        started = time.perf_counter()
        authorization = request.headers.get("authorization")
        redact = Redactor([*self._secrets, bearer_token(authorization) or authorization])
        info: dict[str, Any] = {"mode": "-"}
        try:
            await self._authenticate(request)
            response = await handler(request, rid, redact, info)
        except ProxyError as exc:
            info["error"] = exc.code or exc.type
            response = error_response(exc)
        except Exception:
            log.error("request %s failed unexpectedly:\n%s", rid, redact(traceback.format_exc()))
            info["error"] = "internal_error"
            response = error_response(ProxyError(500, f"internal error in the SmoothGuard proxy (request {rid}); the "
                                         "operator's logs have the details", type="server_error",
                                         code="internal_error"))
        response.headers["x-request-id"] = rid
        detail = " ".join(f"{k}={v}" for k, v in info.items())
        log.info("%s %s %s -> %d %s %.3fs", rid, request.method, request.url.path, response.status_code,
                 redact(detail), time.perf_counter() - started)
        return response

    async def _authenticate(self, request: Request) -> None:
        """With client keys set, a 401 unless ``Authorization: Bearer <one of them>``. The token is compared with
        every key, each in constant time, without stopping at a match: the time taken tells nothing about the
        keys."""
        if not self._client_keys:
            return
        supplied = (bearer_token(request.headers.get("authorization")) or "").encode("utf-8")
        match = False
        for key in self._client_keys:
            match |= hmac.compare_digest(supplied, key)
        if supplied and match:
            return
        if request.method == "POST":
            await _drain(request)  # read (and drop) the body, so that the client sees the 401
        if supplied:
            message = "Incorrect API key provided: the key is not one of this proxy's client keys."
        else:
            message = ("You didn't provide an API key. This proxy needs one of its client keys in an Authorization "
                       "header using Bearer auth (Authorization: Bearer YOUR_KEY).")
        raise ProxyError(401, message, type="invalid_request_error", code="invalid_api_key",
                         headers={"www-authenticate": 'Bearer realm="smoothguard"'})

    async def _models(self, request: Request, rid: str, redact: Redactor, info: dict[str, Any]) -> Response:
        info["mode"] = "forward"
        return await self._forward("GET", "/models", None, self._headers(request), redact)

    async def _chat(self, request: Request, rid: str, redact: Redactor, info: dict[str, Any]) -> Response:
        arrived = time.monotonic()  # time_budget counts from here: the proxy's own work is inside it
        raw = await _read_body(request, self.settings.max_body_bytes)
        # a large body (inline images) parses in a worker thread, so other requests' I/O goes on meanwhile
        body = parse_body(raw) if len(raw) < _THREAD_PARSE_BYTES else await asyncio.to_thread(parse_body, raw)
        config = apply_overrides(self.config, body.get("smoothguard"), self.settings)
        headers = self._headers(request)
        slots = find_media(body, config)
        if not slots:
            info["mode"] = "passthrough"
            if slots.notes:  # unsmoothable media the operator lets through (unsmoothable_media="passthrough")
                log.warning("request %s: forwarded unsmoothed: %s", rid, redact("; ".join(slots.notes)))
            if "smoothguard" in body:
                raw = dumps({k: v for k, v in body.items() if k != "smoothguard"})
            return await self._forward("POST", "/chat/completions", raw, headers, redact)
        if len(slots) > config.max_media_items:
            raise ProxyError(400, f"the request holds {len(slots)} images/audio clips; this proxy accepts at most "
                             f"{config.max_media_items} (max_media_items)", code="too_many_media", param="messages")
        if body.get("n") not in (None, 1):
            raise ProxyError(400, "n must be 1 for a guarded request: the guard answers with one voted choice",
                             code="unsupported_parameter", param="n")
        info["mode"] = "guarded"
        deadline = None if config.time_budget is None else arrived + config.time_budget
        if seconds_left(deadline) == 0:
            raise _budget_spent(config.time_budget)
        body, guarded, originals, notes = await self._media(body, slots, config, deadline)
        notes = [*slots.notes, *notes]
        result, candidates = await self._guard(body, guarded, originals, config, headers, redact, rid, notes, info,
                                               deadline)
        meta = vote_meta(result, rid)
        try:
            if body.get("stream"):
                return vote_headers(stream_response(result, candidates, body, meta), result)
            return vote_headers(json_response(completion(result, candidates, body, meta)), result)
        except (TypeError, KeyError, AttributeError, ValueError):
            # the chosen completion is the upstream's: one the checks let through but that cannot be relayed is
            # the upstream's fault, a 502, not a 500
            log.error("request %s: the chosen completion could not be relayed:\n%s", rid,
                      redact(traceback.format_exc()))
            raise ProxyError(502, "the upstream's chosen reply is not a well-formed chat completion",
                             type="upstream_error", code="upstream_bad_response") from None

    # -- media ----------------------------------------------------------------------------------------------

    async def _media(self, body: dict[str, Any], slots: list[MediaSlot], config: GuardConfig,
                     deadline: float | None = None) -> tuple[dict[str, Any], list[MediaSlot], list[Media], list[str]]:
        """Decode (and fetch) the media to smooth; URL media per ``remote_media``. Returns the body (fetched media
        inlined as data URLs, so every candidate, the original included, sends the same bytes), the slots smoothed,
        their media, and notes for the client. With a ``deadline`` (``time.monotonic()``), no fetch or decoding
        starts after it, and the request is answered 504 there even while one is still running."""
        fetch: list[MediaSlot] = []
        skipped: list[MediaSlot] = []
        for slot in slots:
            if slot.source != "url":
                continue
            if config.remote_media == "error":
                raise ProxyError(400, f"{slot.param}: this proxy does not accept remote media URLs; send the "
                                 f"{slot.kind} inline as a base64 data URL", code="remote_media_not_allowed",
                                 param=slot.param)
            problem = url_problem(slot.value)
            if problem:  # parsed before any fetch: a malformed URL is the client's error, a 400
                raise ProxyError(400, f"{slot.param}: {shorten(slot.value)} is not a valid URL: {problem}",
                                 code="invalid_media", param=slot.param)
            (skipped if config.remote_media == "passthrough" else fetch).append(slot)

        allow_private = self.settings.allow_private_fetch or config.allow_private_fetch

        async def fetch_one(slot: MediaSlot) -> bytes:
            get = functools.partial(download, slot.value, timeout=config.fetch_timeout,
                                    max_bytes=config.max_media_bytes, allow_private=allow_private,
                                    limit_name="max_media_bytes")
            try:
                return (await asyncio.get_running_loop().run_in_executor(self.fetch_pool, get)).body
            except ValueError as exc:  # a MediaError, or a URL the fetch could not parse (a redirect's): not a 500
                message = withhold_addresses(str(exc), slot.value)
                if not isinstance(exc, MediaError):
                    message = f"could not fetch {shorten(slot.value)}: invalid URL ({message})"
                raise ProxyError(400, f"{slot.param}: {message}", code="media_fetch_failed", param=slot.param) from None

        if fetch:
            raws = await _until(deadline, asyncio.gather(*map(fetch_one, fetch)), config.time_budget)
        else:
            raws = []
        fetched = {(s.message, s.block): raw for s, raw in zip(fetch, raws, strict=True)}
        guarded = [s for s in slots if s not in skipped]

        fit = fitter(config.image_resize, auto_rule(model_name=model_name(body)))

        def decode_all() -> list[Media]:
            # the request's pixel budget, checked before each image is decoded; each image decoded at its noise size
            with limits.request(config, fit):
                return [decode(slot) for slot in guarded]

        def decode(slot: MediaSlot) -> Media:
            if seconds_left(deadline) == 0:
                raise _budget_spent(config.time_budget)  # start no decoding after the deadline
            try:
                return decode_slot(slot, config, fetched.get((slot.message, slot.block)))
            except MediaError as exc:
                raise ProxyError(400, f"{slot.param}: {exc}", code="invalid_media", param=slot.param) from None

        originals = await _until(deadline, asyncio.to_thread(decode_all), config.time_budget) if guarded else []
        for k, (slot, media) in enumerate(zip(guarded, originals, strict=True)):
            if (slot.message, slot.block) in fetched:
                body, guarded[k] = inline(body, slot, fetched[(slot.message, slot.block)], media)
        notes = [f"{s.param}: {limits.passthrough_note(s.value, s.kind)}" for s in skipped]
        return body, guarded, originals, notes

    # -- the guarded fan-out ----------------------------------------------------------------------------------

    async def _guard(self, body: dict[str, Any], slots: list[MediaSlot], originals: list[Media],
                     config: GuardConfig, headers: dict[str, str], redact: Redactor, rid: str, notes: list[str],
                     info: dict[str, Any], deadline: float | None = None
                     ) -> tuple[GuardResult, dict[int, dict[str, Any]]]:
        """Fan the candidates out, vote. With a ``deadline`` (``time.monotonic()``), each candidate goes out as soon
        as it is encoded, no encoding starts after the deadline, candidates still running then are cancelled and
        count as failed, and a deadline that passes before the noisy copies were even drawn is a 504."""
        set_fields: dict[str, Any] = {"stream": False}
        temperature = self.settings.temperature
        effort = body.get("reasoning_effort")
        if temperature == 0 and refuses_zero_temperature(model_name(body), reasoning_effort=effort):
            temperature = None  # an OpenAI reasoning model answers 400 to temperature 0
            notes.append(f"model {shorten(model_name(body))} takes no temperature 0: the candidates were sent with the "
                         "client's decoding settings, so their answers may also differ by sampling")
        if originals and temperature is not None:
            set_fields["temperature"] = temperature
        drop = ("smoothguard", "stream_options")

        def prepare(variant: list[Media]) -> bytes:
            return dumps(candidate_body(body, slots, originals, variant, set_fields=set_fields, drop_fields=drop))

        async def call(index: int, payload: bytes) -> dict[str, Any]:
            try:
                data = await self.upstream.post_json("/chat/completions", payload, headers, redact)
                answer_text(data)  # a reply that is not a chat completion fails here, not in the vote
            except UpstreamError:
                raise
            except ValueError as exc:
                raise UpstreamError(502, f"the upstream reply is not a chat completion ({exc})",
                                    code="upstream_bad_response") from None
            except Exception:
                log.error("request %s: candidate %d failed unexpectedly:\n%s", rid, index,
                          redact(traceback.format_exc()))
                raise UpstreamError(502, "internal error while calling the upstream", code="internal_error") from None
            return data

        fan: FanOut[dict[str, Any]] = FanOut(SmoothGuard(config), acall=call, prepare=prepare, text=answer_text)
        auto_resize, auto_resample = auto_rule(model_name=model_name(body)), auto_rate(model_name(body))
        guard = asyncio.ensure_future(fan.arun(originals, notes=notes, deadline=deadline, auto_resize=auto_resize,
                                               auto_resample=auto_resample))
        try:
            if deadline is not None:
                # the noise is drawn in a worker thread before the first round is handed over: a deadline that
                # passes meanwhile answers now (the thread finishes on its own; its copies are dropped)
                await asyncio.wait({guard}, timeout=seconds_left(deadline))
                if not guard.done() and not fan.asked:
                    guard.cancel()
                    raise _budget_spent(config.time_budget)
            result = await guard
        except GuardFlagged as exc:
            info.update(n=exc.result.n_used, agreement=f"{exc.result.agreement:.2f}", flagged=True)
            raise ProxyError(422, f"the guard flagged this request: {exc}", type="smoothguard_flagged",
                             code="flagged", extra={"smoothguard": vote_meta(exc.result, rid)}) from None
        except GenerationError as exc:
            info.update(n=fan.asked, failed=len(exc.causes))
            raise generation_error(exc, fan.asked, redact, rid) from None
        except BaseException:
            guard.cancel()
            raise
        info.update(n=result.n_used, failed=sum(not s.ok for s in result.samples),
                    agreement=f"{result.agreement:.2f}", flagged=result.flagged)
        return result, fan.responses

    # -- forwarding -------------------------------------------------------------------------------------------

    def _headers(self, request: Request) -> dict[str, str]:
        """Headers for the upstream: the operator key, else the client's ``Authorization`` (never when clients
        authenticate to the proxy itself: their keys are the proxy's, not the upstream's); plus the allow-list."""
        headers = {}
        if self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        elif "authorization" in request.headers and not self._client_keys:
            headers["authorization"] = request.headers["authorization"]
        for name in self.settings.forward_headers:
            if name in request.headers and name != "authorization":  # decided above, whatever the allow-list says
                headers[name] = request.headers[name]
        return headers

    async def _forward(self, method: str, path: str, payload: bytes | None, headers: dict[str, str],
                       redact: Redactor) -> Response:
        """One upstream call relayed as it is: status, body, and SSE streams chunk by chunk."""
        response, release = await self.upstream.open(method, path, payload, headers)
        content_type = response.headers.get("content-type", "application/json")
        if response.status_code < 400 and content_type.startswith("text/event-stream"):
            # released when the relay ends, or by the background task if the client left before it began
            return StreamingResponse(_relay(response, release), status_code=response.status_code,
                                     media_type=content_type, background=BackgroundTask(release))
        try:
            content = await self.upstream.read(response)  # at most max_upstream_response_bytes
        finally:
            await release()
        if response.status_code >= 400:
            raise http_error(response.status_code, content, redact)
        return Response(content, status_code=response.status_code, media_type=content_type)


# -- helpers ------------------------------------------------------------------------------------------------


async def _relay(response: httpx.Response, release: Any) -> AsyncIterator[bytes]:
    try:
        async for chunk in response.aiter_bytes():
            yield chunk
    except httpx.HTTPError as exc:
        error = error_body(f"the upstream stream broke off ({type(exc).__name__})", type="upstream_error",
                           code="upstream_connection_error")
        yield b"data: " + dumps(error) + b"\n\n"
    finally:
        await release()


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, or a 413 :class:`ProxyError` once it exceeds ``limit`` bytes."""
    too_large = ProxyError(413, f"the request body exceeds this proxy's limit of {limit} bytes; send smaller or "
                           "fewer images", code="request_too_large")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        await _drain(request)
        raise too_large
    parts, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            await _drain(request)
            raise too_large
        parts.append(chunk)
    return b"".join(parts)


async def _drain(request: Request) -> None:
    drained = 0
    with contextlib.suppress(Exception):
        async for chunk in request.stream():
            drained += len(chunk)
            if drained > _DRAIN_BYTES:
                break


def _budget_spent(budget: float | None) -> ProxyError:
    """The answer when the time budget runs out before any candidate could be sent."""
    return ProxyError(504, f"the time budget of {budget or 0:g} s was spent before any candidate could be sent to the "
                      "model (reading, fetching, decoding and adding noise to the media took that long); send smaller "
                      "media or raise time_budget", type="upstream_timeout", code=OVER_BUDGET)


async def _until(deadline: float | None, work: Awaitable[Any], budget: float | None) -> Any:
    """``await work``, but a 504 :func:`_budget_spent` once ``deadline`` passes: ``work`` is then cancelled and not
    waited for (a worker thread it runs finishes on its own, its result dropped)."""
    if deadline is None:
        return await work
    task = asyncio.ensure_future(work)
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds_left(deadline))
    except BaseException:
        task.cancel()
        raise
    if not done:
        task.cancel()
        task.add_done_callback(_retrieve)
        raise _budget_spent(budget)
    return task.result()


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark an abandoned task's outcome as seen (asyncio would log it otherwise)."""
    if not task.cancelled():
        task.exception()


