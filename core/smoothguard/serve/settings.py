"""ServeSettings: how the proxy talks to its upstream and what clients may change, validated at startup.

Plain Python (no web stack), so the CLI can parse and validate before anything heavy is imported.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import tomllib
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smoothguard.config import GuardConfig
from smoothguard.errors import ConfigError, did_you_mean
from smoothguard.serve.errors import ProxyError

__all__ = ["DEFAULT_LIMITS", "DEFAULT_OVERRIDABLE", "NEVER_OVERRIDABLE", "ServeSettings", "apply_overrides",
           "load_config_file", "startup_warnings"]

#: Guard settings a client may change per request (``"smoothguard": {...}`` in the body) unless the operator
#: says otherwise. Not ``seed``: a client that picks the seed knows the noise its request gets, and can craft an
#: input against exactly those copies (an operator may still allow it; the startup then warns).
DEFAULT_OVERRIDABLE: tuple[str, ...] = ("sigma", "audio_sigma", "n_samples", "adaptive")
#: Settings no client may change: they pick what the server loads or fetches, or bound its resources.
NEVER_OVERRIDABLE = frozenset({"embedder", "embedder_device", "max_media_bytes", "max_image_pixels", "remote_media",
                               "max_media_items", "max_request_pixels", "unsmoothable_media", "image_resize",
                               "audio_resample",
                               "allow_private_fetch",
                               "fetch_timeout", "max_concurrency"})
#: Inclusive [low, high] bounds on per-request overrides. The lower bounds keep a client from switching the
#: defense off (sigma 0, a single candidate); the upper bounds cap the cost of one request.
DEFAULT_LIMITS: dict[str, tuple[float, float]] = {
    "sigma": (0.05, 0.5),
    "audio_sigma": (0.001, 0.1),
    "n_samples": (3, 16),
    "adaptive_round": (1, 16),
    "quorum": (1, 16),
    "min_agreement": (0.0, 1.0),
    "time_budget": (0.1, 600.0),
}
_MIB = 1024 * 1024
_GUARD_SETTINGS = frozenset(f.name for f in dataclasses.fields(GuardConfig))
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_POSITIVE_INT = (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "a positive integer")
_SECONDS = (lambda v: _number(v) and 0 < v < math.inf, "a positive number of seconds")
_ENV = (lambda v: v is None or (isinstance(v, str) and _ENV_NAME.match(v) is not None),
        "the name of an environment variable (letters, digits and _), not a key: put the key(s) in a variable and "
        "name the variable here")
#: setting -> (is the value valid, what a valid value is): each ServeSettings field checked at construction
_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "api_key": (lambda v: v is None or (isinstance(v, str) and bool(v.strip())), "a non-empty string or None"),
    "api_key_env": _ENV,
    "client_keys_env": _ENV,
    "temperature": (lambda v: v is None or (_number(v) and 0 <= v <= 2),
                    "a number in [0, 2], or None (keep the client's)"),
    "max_body_bytes": _POSITIVE_INT,
    "upstream_timeout": _SECONDS,
    "connect_timeout": _SECONDS,
    "max_upstream_concurrency": _POSITIVE_INT,
    "image_format": (lambda v: v in ("png", "source"), "'png' or 'source'"),
    "max_upstream_response_bytes": _POSITIVE_INT,
}
_SECRETS = frozenset({"api_key", "api_key_env", "client_keys_env"})  # their values are never echoed in errors


@dataclass(frozen=True)
class ServeSettings:
    """Settings of one proxy replica (the guard's own settings live in :class:`~smoothguard.GuardConfig`).

    upstream: base URL of the OpenAI-compatible engine, as an OpenAI client's ``base_url``
        (``http://vllm:8000/v1``); a URL without a path gets ``/v1``.
    api_key: operator key sent upstream as ``Authorization: Bearer ...`` instead of the client's header;
        ``api_key_env`` names an environment variable to read it from at startup (preferred: the key then
        never sits in a config file or a process listing). Neither: the client's header is forwarded (unless
        ``client_keys_env`` is set: then no client header is ever forwarded).
    client_keys_env: names an environment variable holding the keys clients must present, comma-separated, as
        ``Authorization: Bearer <key>`` (401 ``invalid_api_key`` otherwise; ``GET /health`` stays open). Read at
        startup; set but unset or empty stops the startup. These keys are the proxy's own: they never go upstream.
    temperature: sampling temperature of every guarded candidate call (0: greedy, so the copies differ only
        by the noise); None keeps the client's value. Text-only requests are forwarded untouched.
    max_body_bytes: largest request body accepted, in bytes (HTTP 413 above).
    upstream_timeout: seconds one upstream call may take, all of it (HTTP 504 when every candidate times out).
    max_upstream_response_bytes: largest upstream response body read, counted as it arrives (decompressed); a
        call whose response runs past it fails with 502 ``upstream_response_too_large``. Streams relayed to the
        client chunk by chunk (text-only ``stream: true``) are not buffered, and not counted.
    connect_timeout: seconds to open a connection to the upstream.
    max_upstream_concurrency: upstream calls in flight at once from this replica, all requests together;
        further calls wait. Per request, ``GuardConfig.max_concurrency`` bounds the fan-out too.
    overridable: guard settings clients may set per request. limits: inclusive (low, high) bounds on them,
        merged over :data:`DEFAULT_LIMITS` (widen a bound to relax it; a default bound is never dropped).
    forward_headers: request headers passed upstream besides ``Authorization`` (lower case).
    image_format: kept for old configurations: noisy copies (and an original resized by ``image_resize``) are
        always sent as PNG, lossless, since a JPEG q95 re-encode keeps only about 75% of the noise; ``"source"``
        is accepted and sends PNG too. An original at its source size is sent as the client sent it.
    allow_private_fetch: let ``remote_media="fetch"`` download from loopback, private and link-local addresses
        (off: a client cannot make the proxy read internal services).
    warmup: load the embedder at startup, so the first request does not pay for it (seconds).
    """

    upstream: str
    api_key: str | None = field(default=None, repr=False)
    api_key_env: str | None = None
    client_keys_env: str | None = None
    temperature: float | None = 0.0
    max_body_bytes: int = 32 * _MIB
    upstream_timeout: float = 120.0
    connect_timeout: float = 10.0
    max_upstream_concurrency: int = 512
    overridable: tuple[str, ...] = DEFAULT_OVERRIDABLE
    limits: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    forward_headers: tuple[str, ...] = ("openai-organization", "openai-project")
    image_format: str = "png"
    allow_private_fetch: bool = False
    warmup: bool = True
    max_upstream_response_bytes: int = 8 * _MIB

    def __post_init__(self) -> None:
        object.__setattr__(self, "upstream", normalize_upstream(self.upstream))
        for name, (valid, what) in _RULES.items():
            value = getattr(self, name)
            if not valid(value):
                # a key is never echoed: what sits in these settings by mistake is most likely one
                got = "" if name in _SECRETS else f", got {value!r}"
                raise ConfigError(f"{name} must be {what}{got}")
        overridable = tuple(self.overridable)
        for name in overridable:
            if name not in _GUARD_SETTINGS:
                raise ConfigError(f"overridable lists {name!r}, which is not a guard setting"
                                  f"{did_you_mean(name, _GUARD_SETTINGS)}")
            if name in NEVER_OVERRIDABLE:
                raise ConfigError(f"{name!r} can never be overridden by clients (it controls server resources)")
        object.__setattr__(self, "overridable", overridable)
        limits: dict[str, tuple[float, float]] = {}
        for name, bounds in {**DEFAULT_LIMITS, **dict(self.limits)}.items():
            if name not in _GUARD_SETTINGS:
                raise ConfigError(f"limits names {name!r}, which is not a guard setting"
                                  f"{did_you_mean(name, _GUARD_SETTINGS)}")
            try:
                low, high = (float(b) for b in bounds)
            except (TypeError, ValueError):
                raise ConfigError(f"limits[{name!r}] must be two numbers (low, high), got {bounds!r}") from None
            if not low <= high:
                raise ConfigError(f"limits[{name!r}] has low {low} above high {high}")
            limits[name] = (low, high)
        object.__setattr__(self, "limits", limits)
        object.__setattr__(self, "forward_headers", tuple(h.lower() for h in self.forward_headers))

    def replace(self, **changes: Any) -> ServeSettings:
        """A copy with ``changes`` applied (validated)."""
        return ServeSettings.from_mapping({**self.to_dict(secrets=True), **changes})

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> ServeSettings:
        """Build from a dict (a config file's ``[serve]`` table, JSON); unknown keys raise :class:`ConfigError`."""
        known = {f.name for f in dataclasses.fields(cls)}
        for key in values:
            if key not in known:
                raise ConfigError(f"unknown serve setting {key!r}{did_you_mean(key, known)}")
        return cls(**values)

    def to_dict(self, *, secrets: bool = False) -> dict[str, Any]:
        """JSON-serialisable settings; the API key is left out unless ``secrets``."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["overridable"] = list(self.overridable)
        out["forward_headers"] = list(self.forward_headers)
        out["limits"] = {k: list(v) for k, v in self.limits.items()}
        if not secrets:
            out.pop("api_key")
        return out

    def resolve_api_key(self) -> str | None:
        """The operator key: ``api_key``, else the variable named by ``api_key_env`` (which must be set)."""
        if self.api_key:
            return self.api_key
        if self.api_key_env:
            value = os.environ.get(self.api_key_env, "").strip()
            if not value:
                raise ConfigError(f"api_key_env names ${self.api_key_env}, which is unset or empty: export the "
                                  "upstream key there, or drop the setting to forward each client's own key")
            return value
        return None

    def resolve_client_keys(self) -> tuple[str, ...]:
        """The keys clients must present (none: clients are not authenticated), read from the variable named by
        ``client_keys_env``: comma-separated, blanks around each ignored. Set but unset or empty raises
        :class:`ConfigError`: a proxy asked to authenticate its clients never runs open by mistake."""
        if not self.client_keys_env:
            return ()
        keys = tuple(dict.fromkeys(k.strip() for k in os.environ.get(self.client_keys_env, "").split(",")
                                   if k.strip()))
        if not keys:
            raise ConfigError(f"client_keys_env names ${self.client_keys_env}, which is unset or empty: export the "
                              "keys clients must present there (comma-separated), or drop the setting to let every "
                              "client in")
        return keys


def startup_warnings(config: GuardConfig, settings: ServeSettings) -> list[str]:
    """What an operator should be told at startup about settings that weaken the guard (logged by the proxy and
    printed by ``smoothguard serve --print-config``)."""
    warnings = []
    if config.seed is not None:
        warnings.append(f"the guard's seed is fixed (seed={config.seed}): every request gets the same noise, so the "
                        "noise is predictable and an attacker can craft inputs against those exact copies; a fixed "
                        "seed is for reproducible studies only, never for a deployment (drop --seed / seed)")
    if "seed" in settings.overridable:
        warnings.append("clients may set 'seed' per request (overridable lists it): a client can then fix the noise "
                        "its request gets and craft inputs against it; allow it for reproducible studies only")
    return warnings


def normalize_upstream(url: Any) -> str:
    """The upstream base URL without a trailing slash; ``/v1`` added when it has no path."""
    parts = urllib.parse.urlsplit(url.strip()) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"upstream must be an http(s) URL such as http://127.0.0.1:8001/v1, got {url!r}")
    path = parts.path.rstrip("/") or "/v1"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def apply_overrides(config: GuardConfig, raw: Any, settings: ServeSettings) -> GuardConfig:
    """``config`` with a request's ``"smoothguard"`` overrides applied, or a 400 :class:`ProxyError` saying why not."""
    if raw is None:
        return config
    if not isinstance(raw, dict):
        raise ProxyError(400, "'smoothguard' must be an object of guard settings, e.g. "
                         '{"sigma": 0.15, "n_samples": 7}', code="invalid_smoothguard_override", param="smoothguard")
    for key, value in raw.items():
        param = f"smoothguard.{key}"
        if key not in _GUARD_SETTINGS:
            raise ProxyError(400, f"unknown guard setting {key!r}{did_you_mean(key, _GUARD_SETTINGS)}",
                             code="invalid_smoothguard_override", param=param)
        if key not in settings.overridable:
            allowed = ", ".join(settings.overridable) or "none"
            why = " (a seed chosen by the client would make the guard's noise predictable)" if key == "seed" else ""
            raise ProxyError(400, f"this proxy does not let clients change {key!r}{why}; settings clients may "
                             f"change: {allowed}", code="smoothguard_override_not_allowed", param=param)
        if key in settings.limits and value is not None:
            low, high = settings.limits[key]
            if not _number(value):
                raise ProxyError(400, f"{param} must be a number, got {value!r}", code="invalid_smoothguard_override",
                                 param=param)
            if not low <= value <= high:
                raise ProxyError(400, f"{param}={value!r} is outside the operator's limits [{_num(low)}, "
                                 f"{_num(high)}]", code="smoothguard_override_out_of_limits", param=param)
    try:
        return config.replace(**raw)
    except ConfigError as exc:
        raise ProxyError(400, f"invalid smoothguard override: {exc}", code="invalid_smoothguard_override",
                         param="smoothguard") from None


def load_config_file(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a TOML or JSON config: top-level keys are guard settings, the ``serve`` table holds
    :class:`ServeSettings` fields. Returns ``(guard settings, serve settings)``, both unvalidated dicts."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"could not read config file {str(path)!r}: {exc.strerror or exc}") from None
    is_json = path.suffix.lower() == ".json"
    try:
        data = json.loads(text) if is_json else tomllib.loads(text)
    except ValueError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid {'JSON' if is_json else 'TOML'}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a table/object of settings")
    serve = data.pop("serve", {}) or {}
    if not isinstance(serve, dict):
        raise ConfigError(f"'serve' in {str(path)!r} must be a table of serve settings")
    return data, serve


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)
