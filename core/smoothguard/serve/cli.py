"""``smoothguard serve``: run the guard proxy. Settings come from defaults, then ``--config FILE``, then flags.

Wired into the ``smoothguard`` command by :func:`configure` (which adds the arguments and sets ``func``).
Importing this module needs no web stack; running the server needs the ``serve`` extra.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import sys
from typing import Any

from smoothguard.audio_resample import parse_resample
from smoothguard.config import GuardConfig
from smoothguard.errors import ConfigError
from smoothguard.image_resize import parse_rule
from smoothguard.serve.settings import ServeSettings, load_config_file, startup_warnings

__all__ = ["HELP", "build_settings", "configure", "run"]

HELP = "Run an OpenAI-compatible guard proxy in front of a serving engine (vLLM, TGI, Ollama, ...)."


def _image_resize(value: str) -> Any:
    try:
        return parse_rule(value)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _audio_resample(value: str) -> Any:
    try:
        return parse_resample(value)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


#: the guard group: each flag sets the GuardConfig field of its name (``--n-samples`` sets ``n_samples``)
_GUARD_FLAGS: dict[str, dict[str, Any]] = {
    "sigma": {"type": float, "help": "image noise std in normalised units (default 0.1)"},
    "audio_sigma": {"type": float, "help": "audio noise std in [-1, 1] units (default 0.01)"},
    "n_samples": {"type": int, "help": "candidates per request, the original included (default 11)"},
    "seed": {"type": int, "help": "fixed noise seed, for reproducible studies only: it makes the noise predictable "
             "(default: fresh noise per request)"},
    "adaptive": {"action": "store_true", "default": None, "help": "stop early once the vote is settled"},
    "min_agreement": {"type": float, "help": "winner share below which a request is flagged"},
    "on_flag": {"choices": ["answer", "refuse", "raise"],
                "help": "flagged requests: answer (default), refuse (refusal message), raise (HTTP 422)"},
    "remote_media": {"choices": ["fetch", "passthrough", "error"],
                     "help": "http(s) media URLs: fetch and smooth (default), pass through unsmoothed, or refuse"},
    "max_concurrency": {"type": int, "help": "upstream calls in flight per request (default: all N)"},
    "time_budget": {"type": float, "metavar": "SECONDS", "help": "seconds a guarded request may take from its "
                    "arrival; candidates still running then are dropped from the vote (default: wait for all)"},
    "max_media_bytes": {"type": int, "help": "largest image/audio clip, in bytes"},
    "image_resize": {"type": _image_resize, "metavar": "RULE", "help": "size at which image noise is drawn: auto "
                     "(default: from the request's model name: qwen2-vl for Qwen2(.5)-VL, anthropic for claude, else "
                     "openai), openai, anthropic, qwen2-vl, a longest side (768), a bound (1024x768), or none (the "
                     "source size; weaker noise)"},
    "audio_resample": {"type": _audio_resample, "metavar": "RATE", "help": "sample rate in Hz at which audio noise "
                       "is drawn, the clip mixed to mono: auto (default: 16000 when the request's model name says "
                       "qwen2-audio, qwen2.5-omni or whisper, else the source rate), a rate (16000), or none (the "
                       "source rate and channels; weaker noise for a model that resamples)"},
}


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``serve`` arguments to ``parser`` and set ``func``."""
    parser.epilog = ("example, in front of vLLM: smoothguard serve --upstream http://127.0.0.1:8001/v1 --port 8000 "
                     "--n-samples 11 --sigma 0.1; clients then use base_url http://HOST:8000/v1")
    net = parser.add_argument_group("server")
    net.add_argument("--upstream", metavar="URL",
                     help="the engine's OpenAI base URL, e.g. http://127.0.0.1:8001/v1 (a URL without a path gets /v1)")
    net.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    net.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    net.add_argument("--workers", type=int, default=1, help="worker processes (default 1; the proxy is stateless)")
    net.add_argument("--config", metavar="FILE",
                     help="TOML or JSON file: guard settings at the top level, serve settings in a [serve] table")
    net.add_argument("--api-key-env", metavar="VAR",
                     help="send the key in $VAR upstream instead of each client's Authorization header")
    net.add_argument("--client-keys-env", metavar="VAR",
                     help="require clients to send one of the comma-separated keys in $VAR as 'Authorization: "
                     "Bearer KEY' (401 otherwise; /health stays open); client keys are never sent upstream")
    for flag in ("--api-key", "--client-keys"):  # exact names, so argparse does not read them as the *-env flags
        net.add_argument(flag, action=_NoKeysHere, nargs="?", help=argparse.SUPPRESS)
    net.add_argument("--temperature", type=_temperature, metavar="T|client",
                     help="temperature of every guarded candidate call (default 0); 'client' keeps the client's")
    net.add_argument("--max-body-bytes", type=int, metavar="BYTES", help="largest request body (default 32 MiB)")
    net.add_argument("--upstream-timeout", type=float, metavar="SECONDS",
                     help="seconds one upstream call may take (default 120)")
    net.add_argument("--max-upstream-response-bytes", type=int, metavar="BYTES",
                     help="largest upstream response body read (default 8 MiB; 502 upstream_response_too_large above)")
    net.add_argument("--max-upstream-concurrency", type=int, metavar="K",
                     help="upstream calls in flight at once from this process (default 512)")
    net.add_argument("--allow-override", metavar="KEYS",
                     help="comma-separated guard settings clients may set per request (default "
                     "sigma,audio_sigma,n_samples,adaptive; '' allows none; adding seed lets clients fix the noise)")
    net.add_argument("--limit", action="append", default=[], metavar="KEY=LOW:HIGH",
                     help="bounds on a client override, e.g. --limit n_samples=3:16 (repeatable)")
    net.add_argument("--image-format", choices=["png", "source"],
                     help="kept for old configurations: noisy copies are always sent as lossless PNG")
    net.add_argument("--allow-private-fetch", action="store_true", default=None,
                     help="let remote_media=fetch download from loopback/private addresses")
    net.add_argument("--no-warmup", dest="warmup", action="store_false", default=None,
                     help="do not load the embedder at startup")
    net.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    net.add_argument("--print-config", action="store_true",
                     help="print the effective settings as JSON (the API key left out) and any startup warnings, "
                     "and exit")
    guard = parser.add_argument_group("guard")
    for name, options in _GUARD_FLAGS.items():
        guard.add_argument("--" + name.replace("_", "-"), **options)
    parser.set_defaults(func=run)


def build_settings(args: argparse.Namespace) -> tuple[GuardConfig, ServeSettings]:
    """The guard config and serve settings of parsed ``args``: defaults < ``--config`` file < flags.
    Raises :class:`ConfigError` for anything invalid."""
    guard: dict[str, Any] = {}
    serve: dict[str, Any] = {}
    if getattr(args, "config", None):
        guard, serve = load_config_file(args.config)
    for name in _GUARD_FLAGS:
        if getattr(args, name, None) is not None:
            guard[name] = getattr(args, name)
    for f in dataclasses.fields(ServeSettings):  # the server flags named as the settings they set
        if getattr(args, f.name, None) is not None:
            serve[f.name] = getattr(args, f.name)
    if serve.get("temperature") == "client":
        serve["temperature"] = None
    if getattr(args, "allow_override", None) is not None:
        serve["overridable"] = tuple(k.strip() for k in args.allow_override.split(",") if k.strip())
    if getattr(args, "limit", None):
        limits = dict(serve.get("limits") or {})
        for item in args.limit:
            key, _, bounds = item.partition("=")
            try:
                low, high = map(float, bounds.split(":"))
            except ValueError:
                raise ConfigError(f"--limit takes KEY=LOW:HIGH, e.g. n_samples=3:16; got {item!r}") from None
            limits[key.strip()] = (low, high)
        serve["limits"] = limits
    if not serve.get("upstream"):
        raise ConfigError("the upstream is missing: pass --upstream URL (the engine's OpenAI base URL, e.g. "
                          "http://127.0.0.1:8001/v1) or set upstream in the config file's [serve] table")
    config = GuardConfig.from_kwargs(**guard)
    settings = ServeSettings.from_mapping(serve)
    settings.resolve_api_key()  # fail at startup, not on the first request
    settings.resolve_client_keys()
    return config, settings


class _NoKeysHere(argparse.Action):
    """``--api-key`` / ``--client-keys``: refused, without echoing the value (keys on a command line end up in
    process listings and shell histories)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        parser.error(f"{option_string} is not accepted: keys never go on the command line; export the key(s) in an "
                     f"environment variable and pass {option_string}-env VAR")


def _temperature(value: str) -> float | str:
    if value.strip().lower() == "client":
        return "client"
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'client', got {value!r}") from None


def run(args: argparse.Namespace) -> int:
    """Start the proxy (blocks until stopped). Returns the exit status."""
    try:
        config, settings = build_settings(args)
    except ConfigError as exc:
        print(f"smoothguard serve: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        warnings = startup_warnings(config, settings)
        for warning in warnings:
            print(f"smoothguard serve: warning: {warning}", file=sys.stderr)
        print(json.dumps({"guard": config.to_dict(), "serve": settings.to_dict(), "host": args.host,
                          "port": args.port, "workers": args.workers, "warnings": warnings}, indent=2))
        return 0
    try:
        import httpx  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn
    except ImportError as exc:
        print(f"smoothguard serve needs the 'serve' extra ({exc.name} is missing): "
              "pip install 'smoothguard[serve]'", file=sys.stderr)
        return 2
    if args.workers < 1:
        print("smoothguard serve: --workers must be >= 1", file=sys.stderr)
        return 2
    options = {"host": args.host, "port": args.port, "log_level": args.log_level,
               "log_config": _log_config(args.log_level)}
    if args.workers > 1:
        from smoothguard.serve.app import ENV_VAR

        os.environ[ENV_VAR] = json.dumps({"guard": config.to_dict(), "serve": settings.to_dict(secrets=True)})
        uvicorn.run("smoothguard.serve.app:app_from_environment", factory=True, workers=args.workers, **options)
    else:
        from smoothguard.serve.app import create_app

        uvicorn.run(create_app(None, config, settings=settings, freeze_heap=True), **options)
    return 0


def _log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging config, plus the proxy's own ``smoothguard`` logger on the same handler."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["smoothguard"] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    return config
