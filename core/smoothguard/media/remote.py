"""The one downloader of remote media: http(s) only, public addresses only (pinned per hop), one deadline, bounded."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any, NamedTuple

from smoothguard.errors import MediaError, shorten
from smoothguard.media.images import Fit
from smoothguard.media.value import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, Media

__all__ = ["Download", "download", "fetch", "require_public", "url_problem"]

_HEADERS = {"User-Agent": "smoothguard", "Accept-Encoding": "identity"}


class Download(NamedTuple):
    """A downloaded body: its (decoded) bytes and the ``Content-Type`` it was served with ("" when none)."""

    body: bytes
    content_type: str


def fetch(url: str, kind: str, *, timeout: float = 10.0, max_bytes: int = DEFAULT_MAX_BYTES,
          max_pixels: int = DEFAULT_MAX_PIXELS, allow_private: bool = False, limit_name: str = "max_bytes",
          fit: Fit | None = None) -> Media:
    """:func:`download` an http(s) ``url`` and decode it as ``kind`` (``"image"`` of at most ``max_pixels``, at
    ``fit`` as in :meth:`Media.image`, or ``"audio"``). Any failure raises :class:`MediaError` naming the URL."""
    if kind not in ("image", "audio"):
        raise MediaError(f"fetch kind must be 'image' or 'audio', not {kind!r}")
    raw, content_type = download(url, timeout=timeout, max_bytes=max_bytes, allow_private=allow_private,
                                 limit_name=limit_name)
    try:
        if kind == "image":
            return Media.image(raw, max_bytes=max_bytes, max_pixels=max_pixels, fit=fit)
        return Media.audio(raw, max_bytes=max_bytes)
    except MediaError as exc:
        served = f" (served as {content_type})" if content_type else ""
        raise MediaError(f"{shorten(url)}{served}: {exc}") from exc


def download(url: str, *, timeout: float = 10.0, max_bytes: int = DEFAULT_MAX_BYTES, allow_private: bool = False,
             limit_name: str = "max_bytes") -> Download:
    """The body of an http(s) ``url``: at most ``max_bytes`` bytes, ``timeout`` seconds in all. Blocking; the
    proxy runs it in a thread. Any failure raises :class:`MediaError` naming the URL (``limit_name``: the setting
    that ``max_bytes`` came from, named when the body is larger).

    * Unless ``allow_private``, every host on the way (each redirect hop) must resolve to public addresses only,
      and the connection goes to the address that was checked (a name that answers differently the second time,
      DNS rebinding, cannot move it); refusals name the host, never the address. Environment proxies are not used;
      redirects are followed (at most 10) to http(s) URLs only.
    * ``timeout`` bounds the whole download, a trickling server included: at the deadline the connection is shut.
    * The body is asked for uncompressed (``Accept-Encoding: identity``); a server that compresses it anyway with
      gzip or deflate is decoded in bounded steps, so ``max_bytes`` caps the decoded bytes too (a decompression
      bomb stops at the limit); other content encodings are refused.
    """
    import urllib.error
    import urllib.request

    _check_fetch_url(url, url)
    deadline = _Deadline(timeout)

    class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
            _check_fetch_url(newurl, url)
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _HttpOnlyRedirects,
                                         *_pinned_handlers(allow_private, url, deadline))
    shown = shorten(url)
    try:
        with deadline, opener.open(urllib.request.Request(url, headers=_HEADERS), timeout=timeout) as resp:
            decoder = _BoundedDecoder(resp.headers.get("Content-Encoding"), max_bytes, shown, limit_name)
            length = resp.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > max_bytes:
                raise MediaError(f"{shown} is {length} bytes, over {limit_name}={max_bytes}")
            body = _read_capped(resp, decoder)
            if deadline.passed():  # the connection was shut at the deadline: what came is not the whole body
                raise TimeoutError
            if length.isdigit() and decoder.raw_total < int(length):
                raise MediaError(f"could not fetch {shown}: the connection closed after {decoder.raw_total} of "
                                 f"{length} bytes")
            return Download(body, resp.headers.get("Content-Type", ""))
    except MediaError:
        raise
    except Exception as exc:  # timeouts, resets, bad status lines, a connection cut at the deadline, ...
        if deadline.passed():
            raise MediaError(f"could not fetch {shown} within {timeout:g} s") from None
        if isinstance(exc, urllib.error.HTTPError):
            raise MediaError(f"could not fetch {shown}: HTTP {exc.code} {exc.reason}") from None
        if isinstance(exc, urllib.error.URLError):
            raise MediaError(f"could not fetch {shown}: {exc.reason}") from None
        raise MediaError(f"could not fetch {shown}: {exc}") from None


class _Deadline:
    """One download's deadline: connections made under it are shut when it passes, so no read outlives it."""

    def __init__(self, timeout: float) -> None:
        import threading
        import time

        self.at = time.monotonic() + timeout
        self._sockets: list[Any] = []
        self._lock = threading.Lock()
        self._cut = False
        self._timer = threading.Timer(timeout, self._shut)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()

    def left(self) -> float:
        import time

        return self.at - time.monotonic()

    def passed(self) -> bool:
        return self._cut or self.left() <= 0

    def watch(self, sock: Any) -> Any:
        """Shut ``sock`` at the deadline (at once if it has passed)."""
        with self._lock:
            self._sockets.append(sock)
            cut = self._cut
        if cut:
            self._shut()
        return sock

    def _shut(self) -> None:
        import socket

        with self._lock:
            self._cut = True
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):  # already closed
                sock.shutdown(socket.SHUT_RDWR)


_NOT_HTTP = "it needs an http(s) scheme"


def url_problem(url: str) -> str | None:
    """Why ``url`` is not a well-formed http(s) URL (a port out of range, a broken IPv6 literal, no host, ...), or
    None; parsed only, nothing is resolved."""
    import urllib.parse

    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError as exc:
        return str(exc) or "it cannot be parsed"
    if parts.scheme.lower() not in ("http", "https"):
        return _NOT_HTTP
    return None if parts.hostname else "it names no host"


def _check_fetch_url(url: str, first: str) -> None:
    """MediaError unless ``url`` is a well-formed http(s) URL (``first``: the URL asked for, named in errors)."""
    problem = url_problem(url)
    if problem == _NOT_HTTP:
        if url == first:
            raise MediaError(f"fetch reads only http(s) URLs, not {shorten(url)}")
        raise MediaError(f"{shorten(first)} redirects to a non-http(s) URL {shorten(url)}")
    if problem:
        raise MediaError(f"malformed URL {shorten(url)}: {problem}")


def _pinned_handlers(allow_private: bool, first: str, deadline: _Deadline) -> list[Any]:
    """urllib handlers whose connections go to an address resolved and checked once per hop (public only, unless
    ``allow_private``), each connect within what is left of ``deadline``, each socket shut when it passes."""
    import http.client
    import socket
    import urllib.request

    def connect(host: str, port: int, timeout: Any, source: Any) -> socket.socket:
        left = deadline.left()
        if left <= 0:
            raise MediaError(f"could not fetch {shorten(first)}: out of time")
        address = _resolve_checked(host, port, allow_private, first)
        wait = left if not isinstance(timeout, (int, float)) else min(timeout, left)
        return deadline.watch(socket.create_connection((address, port), wait, source))

    class _PinnedHTTP(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = connect(self.host, self.port, self.timeout, self.source_address)

    class _PinnedHTTPS(http.client.HTTPSConnection):
        def connect(self) -> None:
            sock = connect(self.host, self.port, self.timeout, self.source_address)
            self.sock = self._context.wrap_socket(sock, server_hostname=self.host)

    class _HTTP(urllib.request.HTTPHandler):
        def http_open(self, req: Any) -> Any:
            return self.do_open(_PinnedHTTP, req)

    class _HTTPS(urllib.request.HTTPSHandler):
        def https_open(self, req: Any) -> Any:
            return self.do_open(_PinnedHTTPS, req, context=self._context)

    return [_HTTP(), _HTTPS()]


def _resolve_checked(host: str, port: int, allow_private: bool, first: str) -> str:
    """One address of ``host``; unless ``allow_private``, MediaError when any of its addresses is not public (the
    message names the host, not the address)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError):
        raise MediaError(f"could not fetch {shorten(first)}: the host name {host!r} does not resolve") from None
    addresses = [str(info[4][0]) for info in infos]
    if not allow_private:
        require_public(host, addresses, shorten(first))
    return addresses[0]


def require_public(host: str, addresses: Sequence[str], shown: str) -> None:
    """MediaError when any of ``host``'s resolved ``addresses`` is not public (loopback, private, link-local, ...).
    The message names the host, never an address: a refusal must not tell what an internal name resolves to."""
    import ipaddress

    for address in addresses:
        if not ipaddress.ip_address(address.split("%", 1)[0]).is_global:
            raise MediaError(f"{shown}: the host {host!r} resolves to a non-public address; only public hosts are "
                             "fetched (allow_private_fetch allows private ones)")


class _BoundedDecoder:
    """Decodes a response body's ``Content-Encoding`` (identity, gzip, deflate) chunk by chunk, raising
    :class:`MediaError` as soon as the *decoded* bytes pass ``max_bytes``: no step inflates more than
    ``max_bytes + 1`` bytes, so a decompression bomb costs at most about ``max_bytes`` of memory. Other
    encodings (br, zstd, ...) are refused: the request asked for ``identity``."""

    def __init__(self, encoding: str | None, max_bytes: int, shown: str, limit_name: str = "max_bytes") -> None:
        import zlib

        self.max_bytes = max_bytes
        self.limit_name = limit_name
        self.shown = shown
        self.total = 0  # decoded bytes
        self.raw_total = 0  # bytes as sent
        name = (encoding or "identity").strip().lower()
        if name in ("", "identity"):
            self._inflater: Any = None
        elif name in ("gzip", "x-gzip"):
            self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif name == "deflate":
            self._inflater = zlib.decompressobj()
        else:
            raise MediaError(f"{shown} was served with Content-Encoding {encoding!r} although only 'identity' was "
                             "asked for; compressed media bodies other than gzip/deflate are not decoded")
        self._raw_deflate_retry = name == "deflate"  # some servers send deflate without the zlib header

    def feed(self, chunk: bytes) -> list[bytes]:
        """The decoded bytes of ``chunk``; MediaError once more than ``max_bytes`` came out in all."""
        import zlib

        self.raw_total += len(chunk)
        if self._inflater is None:
            return [self._count(chunk)]
        out: list[bytes] = []
        data = chunk
        while data:
            try:
                piece = self._inflater.decompress(data, self.max_bytes - self.total + 1)
            except zlib.error as exc:
                if self._raw_deflate_retry:  # the first chunk failed as zlib: retry it as raw deflate
                    self._inflater, self._raw_deflate_retry = zlib.decompressobj(-zlib.MAX_WBITS), False
                    continue
                raise MediaError(f"{self.shown}: its compressed body is corrupt ({exc})") from None
            self._raw_deflate_retry = False
            out.append(self._count(piece))
            data = self._inflater.unconsumed_tail
            if self._inflater.eof:
                break
        return out

    def _count(self, piece: bytes) -> bytes:
        self.total += len(piece)
        if self.total > self.max_bytes:
            raise MediaError(f"{self.shown} is larger than {self.limit_name}={self.max_bytes} (decoded)")
        return piece


def _read_capped(resp: Any, decoder: _BoundedDecoder) -> bytes:
    """The decoded body of a response, read in pieces of at most 64 KiB, at most ``decoder.max_bytes`` bytes of it
    (a read ends when the download's deadline shuts the connection)."""
    parts: list[bytes] = []
    while part := resp.read1(65536):
        parts.extend(decoder.feed(part))
    return b"".join(parts)
