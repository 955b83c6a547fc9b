"""An OpenAI-compatible chat endpoint (vLLM, TGI, Ollama, a hosted API) as the model under evaluation.

>>> model = EndpointModel("Qwen/Qwen2.5-VL-7B-Instruct", "http://127.0.0.1:8000/v1", concurrency=64)
>>> run_eval(model, read_pope("data/pope"), "out/pope", sigmas=[0, 0.1])
>>> # or: smoothguard eval pope --model openai:Qwen/Qwen2.5-VL-7B-Instruct --base-url ... --out out/pope

Each call is one ``POST {base_url}/chat/completions`` with the prompt and the image as a lossless PNG data URL,
``temperature`` 0 (greedy, so candidates differ only by the noise). The HTTP is the proxy's
(:class:`smoothguard.serve.upstream.UpstreamClient`: pooled connections, at most ``concurrency`` calls in flight,
a per-call ``timeout``, capped response bodies); this module adds the retries an unattended run needs: a call
answered 429, 408, 409 or 5xx, timed out or cut off is retried up to ``max_retries`` times with exponential
backoff and full jitter (``backoff`` x 2^attempt seconds, at most ``max_backoff``). Other 4xx are not retried
(the request itself is wrong). A call still failing after its retries raises :class:`EndpointError` (in
:meth:`EndpointModel.agenerate`'s list, it is returned in its place), so the guard leaves that candidate out of
the vote and the runner counts it apart (``failed_calls``; the item ``failed`` when too few answered).

The runner (:class:`~smoothguard.eval.EvalRunner`) sends the guarded copies through the core's fan-out
(:class:`~smoothguard.fanout.FanOut`) with :meth:`EndpointModel.payload` and :meth:`EndpointModel.post`.

:attr:`EndpointModel.stats` counts calls, retries, calls failed after retries and HTTP statuses seen.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import os
import random
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from smoothguard.errors import ConfigError, SmoothGuardError, check_int

__all__ = ["EndpointError", "EndpointModel", "EndpointStats", "api_key_from_env", "item_counter", "parse_model_spec"]

_RETRY_STATUSES = frozenset({408, 409, 429})
#: the counters of the item being answered (calls, retries, failed_calls), if the runner set them
_ITEM: contextvars.ContextVar[Counter | None] = contextvars.ContextVar("smoothguard_eval_item", default=None)
_RETRY_CODES = frozenset({"upstream_timeout", "upstream_unreachable", "upstream_connection_error"})


class EndpointError(SmoothGuardError):
    """One endpoint call failed after its retries. ``status``: the upstream HTTP status (None when it never
    answered); ``attempts``: calls made."""

    def __init__(self, message: str, *, status: int | None, attempts: int) -> None:
        super().__init__(message)
        self.status = status
        self.attempts = attempts


@dataclass
class EndpointStats:
    """Counters of one :class:`EndpointModel`: ``calls`` (logical calls, each counted once), ``attempts`` (HTTP
    requests sent, retries included), ``retries``, ``failed`` (calls that failed after their retries),
    ``statuses`` (HTTP status or error code -> how often it was answered, successes as 200)."""

    calls: int = 0
    attempts: int = 0
    retries: int = 0
    failed: int = 0
    statuses: Counter = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        return {"calls": self.calls, "attempts": self.attempts, "retries": self.retries, "failed": self.failed,
                "statuses": {str(k): v for k, v in sorted(self.statuses.items(), key=str)}}


def parse_model_spec(spec: str) -> str | None:
    """``"openai:MODEL"`` -> ``"MODEL"``; None for any other ``--model`` value (an in-process model)."""
    if not spec.startswith("openai:"):
        return None
    name = spec[len("openai:"):].strip()
    if not name:
        raise ConfigError("--model openai: needs the served model's name, e.g. openai:Qwen/Qwen2.5-VL-7B-Instruct "
                          "(what the server lists at GET /v1/models)")
    return name


class EndpointModel:
    """A chat model behind an OpenAI-compatible API, with the Backend protocol's ``generate``/``agenerate``.

    model: the served model's name. base_url: the API root, e.g. ``http://127.0.0.1:8000/v1``. api_key: sent as
    ``Authorization: Bearer``; None sends none (local vLLM). concurrency: calls in flight at most, over
    everything this object sends. timeout: seconds one attempt may take in all; connect_timeout: seconds to
    connect. max_retries: further attempts after a retryable failure (0: none). backoff, max_backoff: seconds
    (see the module doc). max_tokens: answer length cap. image_resize: the rule for the noise size
    (:mod:`smoothguard.image_resize`); ``"auto"`` resolves from the model name (:func:`auto_rule`: ``qwen2-vl``
    for a Qwen2-VL / Qwen2.5-VL name, else OpenAI's). transport: an httpx transport instead of the network.
    """

    adds_noise = False  # the guard draws the noise (at resize_rule's size) and sends the noisy copies

    def __init__(self, model: str, base_url: str, *, api_key: str | None = None, concurrency: int = 16,
                 timeout: float = 120.0, connect_timeout: float = 10.0, max_retries: int = 5, backoff: float = 0.5,
                 max_backoff: float = 30.0, max_tokens: int = 128, image_resize: Any = "auto",
                 transport: Any = None) -> None:
        from smoothguard.image_resize import auto_rule, check_rule

        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"--base-url must be an http(s) URL such as http://127.0.0.1:8000/v1, got {base_url!r}")
        for name, value, low in (("concurrency", concurrency, 1), ("max_tokens", max_tokens, 1),
                                 ("max_retries", max_retries, 0)):
            check_int(name, value, low)
        for name, value in (("timeout", timeout), ("connect_timeout", connect_timeout)):
            if not value > 0:
                raise ConfigError(f"{name} must be > 0 seconds, got {value!r}")
        if backoff < 0 or max_backoff < 0:
            raise ConfigError("backoff and max_backoff must be >= 0 seconds")
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.concurrency = concurrency
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout)
        self.max_retries = max_retries
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.max_tokens = max_tokens
        rule = check_rule(image_resize)
        self.resize_rule = auto_rule("openai", model) if rule == "auto" else rule
        self.transport = transport
        self.stats = EndpointStats()
        self._client: Any = None
        self._users = 0

    @property
    def name(self) -> str:
        """``openai:MODEL``, as recorded in the manifest and summary."""
        return f"openai:{self.model}"

    def __repr__(self) -> str:
        return f"EndpointModel({self.model!r}, {self.base_url!r}, concurrency={self.concurrency})"

    # -- the HTTP session -------------------------------------------------------------------------------------

    @asynccontextmanager
    async def session(self) -> AsyncIterator[EndpointModel]:
        """Open the connection pools for the running event loop (and close them when the last user leaves);
        calls outside a session open their own. Sessions nest and overlap: they share one client."""
        if self._client is None:
            from smoothguard.serve.upstream import UpstreamClient

            self._client = UpstreamClient(self.base_url, timeout=self.timeout, connect_timeout=self.connect_timeout,
                                          max_concurrency=self.concurrency, transport=self.transport)
        self._users += 1
        try:
            yield self
        finally:
            self._users -= 1
            if self._users == 0:
                client, self._client = self._client, None
                await client.aclose()

    # -- calls --------------------------------------------------------------------------------------------------

    def payload(self, prompt: str, media: Sequence[Any]) -> bytes:
        """The request body of one call: the prompt, then each image as a PNG data URL (lossless)."""
        content: list[dict[str, Any]] = [{"type": "text", "text": prompt}]
        for item in media:
            if item.kind != "image":
                raise ConfigError("the endpoint harness sends images only; audio goes through an in-process model")
            content.append({"type": "image_url", "image_url": {"url": item.to_data_url("png")}})
        body = {"model": self.model, "messages": [{"role": "user", "content": content}], "temperature": 0.0,
                "max_tokens": self.max_tokens}
        return json.dumps(body).encode()

    async def acomplete(self, prompt: str, media: Sequence[Any]) -> str:
        """The answer of one call (retried as the module doc says); :class:`EndpointError` when it fails."""
        payload = await asyncio.to_thread(self.payload, prompt, media)  # PNG encoding is CPU work: off the loop
        async with self.session():
            return await self.post(payload)

    async def post(self, payload: bytes) -> str:
        """Send one request body (from :meth:`payload`) and return the answer text (retried as the module doc
        says); :class:`EndpointError` when it fails. Inside :meth:`session` it shares its connection pools."""
        async with self.session():  # the client stays open while any call uses it
            return await self._post(payload)

    async def _post(self, payload: bytes) -> str:
        from smoothguard.serve.errors import Redactor
        from smoothguard.serve.upstream import UpstreamError

        headers = {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        redact = Redactor([self.api_key])
        item = _ITEM.get()
        self.stats.calls += 1
        attempt = 0
        while True:
            attempt += 1
            self.stats.attempts += 1
            if item is not None:
                item["calls"] += 1
            try:
                data = await self._client.post_json("/chat/completions", payload, headers, redact)
                text = _message_text(data)
                self.stats.statuses[200] += 1
                return text
            except UpstreamError as exc:
                status = exc.upstream_status
                self.stats.statuses[status if status is not None else exc.code or "error"] += 1
                retryable = (status in _RETRY_STATUSES or (status is not None and status >= 500)
                             or exc.code in _RETRY_CODES)
                if not retryable or attempt > self.max_retries:
                    self.stats.failed += 1
                    if item is not None:
                        item["failed_calls"] += 1
                    tries = f" after {attempt} attempts" if attempt > 1 else ""
                    raise EndpointError(f"{exc.message}{tries}", status=status, attempts=attempt) from None
            self.stats.retries += 1
            if item is not None:
                item["retries"] += 1
            await asyncio.sleep(random.uniform(0, min(self.max_backoff, self.backoff * 2 ** (attempt - 1))))

    async def agenerate(self, prompt: str, variants: Sequence[Sequence[Any]]) -> list[str | BaseException]:
        """One answer per variant (its media sent with ``prompt``), all calls in flight together (bounded by
        ``concurrency``); a call that failed after its retries is its exception, in its place."""
        async with self.session():
            async def one(k: int) -> str:
                # reading a lazy variant draws its noise, and PNG encoding is CPU work: both off the loop
                payload = await asyncio.to_thread(lambda: self.payload(prompt, variants[k]))
                return await self.post(payload)

            return list(await asyncio.gather(*(one(k) for k in range(len(variants))), return_exceptions=True))

    def generate(self, prompt: str, variants: Sequence[Sequence[Any]]) -> list[str | BaseException]:
        """:meth:`agenerate` from synchronous code (its own event loop; not from inside a running one)."""
        return asyncio.run(self.agenerate(prompt, variants))


def item_counter() -> Counter:
    """Start counting the calls of one item in the current context (the runner does, per item): returns the
    Counter that this context's calls add ``calls`` (HTTP attempts), ``retries`` and ``failed_calls`` to."""
    counter: Counter = Counter()
    _ITEM.set(counter)
    return counter


def _message_text(data: dict[str, Any]) -> str:
    from smoothguard.serve.upstream import UpstreamError

    try:
        content = data["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise UpstreamError(502, "the endpoint's answer has no choices[0].message", code="upstream_bad_response",
                            upstream_status=None) from None
    if isinstance(content, list):  # some servers answer in content parts
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    if not isinstance(content, str):
        raise UpstreamError(502, "the endpoint's answer has no text content", code="upstream_bad_response")
    return content


def api_key_from_env(name: str | None) -> str | None:
    """The key in environment variable ``name`` (None: no key); :class:`ConfigError` when it is unset or empty."""
    if name is None:
        return None
    value = os.environ.get(name)
    if not value:
        raise ConfigError(f"--api-key-env {name}: that environment variable is not set (export {name}=... first, "
                          "or leave --api-key-env out for a server that needs no key)")
    return value
