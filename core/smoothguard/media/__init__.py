"""One image or one audio clip as an immutable value: decode almost anything, encode it back.

:class:`Media` turns PIL images, numpy arrays, torch tensors, encoded bytes, file paths and
``data:`` URLs into one canonical float32 array, and writes it back as PNG/JPEG/... or WAV.
Media never touches the network on its own: download with :func:`fetch` (or :func:`download` for the bytes).

Modules: :mod:`.value` (the value object), :mod:`.images` and :mod:`.audio` (codecs), :mod:`.sources` (paths,
``data:`` URLs, tensors), :mod:`.remote` (the downloader). torch is never imported by any of them.
"""

from smoothguard.media.remote import download, fetch, require_public
from smoothguard.media.value import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, DEFAULT_MAX_SECONDS, Media

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_MAX_PIXELS", "DEFAULT_MAX_SECONDS", "Media", "download", "fetch",
           "require_public"]
