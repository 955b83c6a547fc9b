"""What one request may decode: a bound on its media count and on its image pixels, checked before decoding.

Every adapter decodes a request's media one after the other while it reads the request. Within a
:meth:`MediaBudget.active` block, :func:`decode` gives each image at most ``min(max_image_pixels, pixels the
request has left)`` (read from the header, before the pixels are decoded) and refuses a medium past
``max_media_items``, so a request's decoded memory stays under ``max_request_pixels`` x 12 bytes (float32 RGB)
whatever it sends. Outside a block each call is a request of its own.

Remote media follow one policy (:func:`remote`: ``remote_media`` and the http(s)-only rule) and one fetch
(:func:`fetch`: the core's downloader under the same limits). A block opened with a ``fit`` decodes each image
straight to the size its noise will be drawn at, while the limits count the pixels sent.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from typing import Any

from smoothguard import media as media_lib
from smoothguard.config import GuardConfig
from smoothguard.errors import MediaError, shorten
from smoothguard.media import Media
from smoothguard.media.images import Fit

__all__ = ["MediaBudget", "admit", "check", "decode", "fetch", "passthrough_note", "pixels_left", "remote", "request"]


class MediaBudget:
    """The media one request has decoded so far, against ``config``'s ``max_media_items``, ``max_image_pixels``
    and ``max_request_pixels``."""

    def __init__(self, config: GuardConfig, fit: Fit | None = None) -> None:
        self.config = config
        self.fit = fit  # images are decoded straight to this size (image_resize.fitter), when smaller
        self.items = 0
        self.pixels = 0

    def pixels_left(self) -> int:
        """The most pixels the next image may have (at least 1, so that the error names the request's limit)."""
        c = self.config
        return max(1, min(c.max_image_pixels, c.max_request_pixels - self.pixels))

    def decode(self, x: Any, kind: str) -> Media:
        """``Media.image(x)`` / ``Media.audio(x)`` under the limits; :class:`MediaError` saying which one."""
        c = self.config
        self._count()
        if kind != "image":
            return self._spent(Media.audio(x, max_bytes=c.max_media_bytes))
        try:
            media = Media.image(x, max_pixels=self.pixels_left(), max_bytes=c.max_media_bytes, fit=self.fit)
        except MediaError as exc:
            if "max_pixels" in str(exc) and self.pixels_left() < c.max_image_pixels:
                raise MediaError(f"the request's images hold more than max_request_pixels={c.max_request_pixels} "
                                 f"pixels in all ({self.pixels} before this one, which is larger than what is "
                                 "left); send fewer or smaller images") from None
            raise
        return self._spent(media)

    def fetch(self, url: str, kind: str) -> Media:
        """``media.fetch(url)`` under the limits (``fetch_timeout``, ``max_media_bytes``, the pixels left, read from
        the header; ``allow_private_fetch``), decoded at the request's ``fit``. The remote-media *policy* is the
        caller's to apply first (``remote_media``). A fetched image is written back as PNG: it goes to the model
        inline in place of its URL, and lossless, as the noisy copies do."""
        c = self.config
        self._count()
        media = media_lib.fetch(url, kind, timeout=c.fetch_timeout, max_bytes=c.max_media_bytes,
                                max_pixels=self.pixels_left(), allow_private=c.allow_private_fetch,
                                limit_name="max_media_bytes", fit=self.fit)
        if media.kind == "image" and media.format != "png":
            media = Media._make("image", media.data, "png", source_size=media.source_size)
        return self._within(media)

    def admit(self, media: Media) -> Media:
        """Count a medium decoded elsewhere (a fetched one, decoded under :meth:`pixels_left`)."""
        self._count()
        return self._within(media)

    def _within(self, media: Media) -> Media:
        if media.kind == "image" and _pixels(media) > self.pixels_left():
            width, height = media.source_size or (media.width, media.height)
            raise MediaError(f"image is {width}x{height} pixels, over what this request has left "
                             f"(max_image_pixels={self.config.max_image_pixels}, "
                             f"max_request_pixels={self.config.max_request_pixels})")
        return self._spent(media)

    @contextlib.contextmanager
    def active(self) -> Iterator[MediaBudget]:
        """Within the block, :func:`decode` and :func:`pixels_left` count against this budget."""
        token = _ACTIVE.set(self)
        try:
            yield self
        finally:
            _ACTIVE.reset(token)

    def _count(self) -> None:
        if self.items >= self.config.max_media_items:
            raise MediaError(f"the request holds more than max_media_items={self.config.max_media_items} images "
                             "and audio clips; send fewer, or raise the limit")

    def _spent(self, media: Media) -> Media:
        self.items += 1
        if media.kind == "image":
            self.pixels += _pixels(media)
        return media


def _pixels(image: Media) -> int:
    """An image's pixels as it was sent (before a decode to a smaller ``fit``)."""
    width, height = image.source_size or (image.width, image.height)
    return width * height


_ACTIVE: ContextVar[MediaBudget | None] = ContextVar("smoothguard_media_budget", default=None)


@contextlib.contextmanager
def request(config: GuardConfig, fit: Fit | None = None) -> Iterator[MediaBudget]:
    """The scope of one request's decoding: a new budget, or the one already active (a request read in parts).
    ``fit``: decode images straight to this size (:func:`smoothguard.image_resize.fitter`); the pixel limits still
    count each image's size as sent."""
    budget = _ACTIVE.get()
    if budget is not None:
        yield budget
        return
    with MediaBudget(config, fit).active() as budget:
        yield budget


def _budget(config: GuardConfig) -> MediaBudget:
    return _ACTIVE.get() or MediaBudget(config)


def decode(x: Any, kind: str, config: GuardConfig) -> Media:
    """Decode one image or clip under the active request's budget (or ``config``'s limits alone)."""
    return _budget(config).decode(x, kind)


def remote(url: str, kind: str, config: GuardConfig) -> bool:
    """The remote-media policy for a medium given as a URL (not ``data:``): True to fetch it (``remote_media=
    "fetch"``), False to send it unsmoothed (``"passthrough"``; say so with :func:`passthrough_note`);
    :class:`MediaError` under ``"error"`` and for any scheme but http(s)."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme not in ("http", "https"):
        raise MediaError(f"cannot read the {kind} at {shorten(url)}: only data: and http(s) URLs are supported")
    if config.remote_media == "error":
        raise MediaError(f"remote {kind} {shorten(url)} refused (remote_media='error'); send it inline as base64, or "
                         "set remote_media='fetch' (or 'passthrough', unsmoothed)")
    return config.remote_media == "fetch"


def passthrough_note(url: str, kind: str) -> str:
    """The note for a remote medium sent unsmoothed under ``remote_media="passthrough"``."""
    return f"remote {kind} {shorten(url)} was passed through unsmoothed (remote_media='passthrough')"


def fetch(url: str, kind: str, config: GuardConfig) -> Media:
    """:meth:`MediaBudget.fetch` under the active request's budget (or ``config``'s limits alone)."""
    return _budget(config).fetch(url, kind)


def admit(media: Media, config: GuardConfig) -> Media:
    """Count a medium decoded elsewhere (fetched) against the active request's budget."""
    return _budget(config).admit(media)


def check(media: Sequence[Media], config: GuardConfig) -> None:
    """:class:`MediaError` when ``media`` (already decoded) exceed a request's limits."""
    budget = MediaBudget(config)
    for item in media:
        budget.admit(item)


def pixels_left(config: GuardConfig) -> int:
    """The most pixels the active request's next image may have (for fetches, which decode themselves)."""
    return _budget(config).pixels_left()
