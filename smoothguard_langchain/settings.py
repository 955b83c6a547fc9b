"""GuardSettings: every GuardConfig setting as a pydantic field, validated by GuardConfig itself.

The LangChain wrappers are pydantic models, so each guard setting is a field (``configurable_fields``,
``model_copy`` and ``with_config`` work on them). Values are checked by :class:`smoothguard.GuardConfig` before
pydantic sees them, so an invalid setting is a :class:`~smoothguard.errors.ConfigError` at construction, with
the same message as everywhere else in SmoothGuard.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field

from smoothguard import GuardConfig, SmoothGuard
from smoothguard.config import DEFAULT_EMBEDDER, DEFAULT_REFUSAL
from smoothguard.errors import ConfigError

__all__ = ["CONFIG_FIELDS", "GuardSettings"]

#: Names of every GuardConfig setting, in declaration order.
CONFIG_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(GuardConfig))


class GuardSettings(BaseModel):
    """Mixin: the guard settings as fields. Meanings, units and defaults are those of :class:`GuardConfig`."""

    sigma: float = Field(0.1, description="Image noise std in normalised input units (paper band 0.1-0.2).")
    sigma_space: Literal["normalized", "pixel"] = Field("normalized", description="Unit of `sigma`.")
    channel_std: tuple[float, float, float] | None = Field(
        None, description="Per-channel (R, G, B) std converting `sigma` to pixels; None: CLIP's.")
    audio_sigma: float = Field(0.01, description="Waveform noise std in [-1, 1] full-scale units.")
    n_samples: int = Field(11, description="Candidates in all, the original included.")
    include_original: bool = Field(True, description="Candidate 0 is the untouched input.")
    seed: int | None = Field(None, description="None: fresh noise per call; an int: reproducible variants.")
    adaptive: bool = Field(False, description="Ask in rounds and stop once the winner is settled.")
    adaptive_round: int = Field(5, description="Candidates per adaptive round.")
    confidence: float = Field(0.95, description="Confidence of the Clopper-Pearson bound (adaptive stop, radius).")
    quorum: int | None = Field(None, description="Answered candidates needed; None: a majority of those asked.")
    max_concurrency: int | None = Field(None, description="Most concurrent inner calls; None: all at once.")
    time_budget: float | None = Field(None, description="Seconds to wait for the candidates; later ones are left "
                                      "out of the vote. None: wait for all.")
    embedder: str = Field(DEFAULT_EMBEDDER, description="sentence-transformers model name or path.")
    embedder_device: str | None = Field(None, description="Device of the embedder ('cpu', 'cuda', ...).")
    clustering: Literal["kmeans", "agglomerative"] = Field("kmeans", description="How answers are grouped.")
    n_clusters: int = Field(2, description="k for k-means.")
    cluster_threshold: float = Field(0.1, description="Cosine distance under which two clusters are one answer.")
    safety_weight: float = Field(0.15, description="Weight of the benign score in the vote; 0: plain majority.")
    min_agreement: float = Field(0.5, description="Winner share below which the result is flagged.")
    on_flag: Literal["answer", "refuse", "raise"] = Field("answer", description="What a flagged result does.")
    refusal_message: str = Field(DEFAULT_REFUSAL, description="The answer under on_flag='refuse'.")
    remote_media: Literal["fetch", "passthrough", "error"] = Field(
        "fetch", description="http(s) media: download and smooth, pass through unsmoothed, or refuse.")
    fetch_timeout: float = Field(10.0, description="Seconds allowed to fetch one remote medium.")
    max_media_bytes: int = Field(50 * 1024 * 1024, description="Largest encoded medium accepted, in bytes.")
    max_image_pixels: int = Field(25_000_000, description="Largest image accepted, in pixels.")
    image_resize: str | int | tuple[int, int] = Field(
        "auto", description="Size at which image noise is drawn: 'auto' (the wrapped model's provider), 'openai', "
        "'anthropic', 'qwen2-vl', a longest side, a (width, height) bound, or 'none' (the source size).")
    max_media_items: int = Field(8, description="Most images and audio clips in one request.")
    allow_private_fetch: bool = Field(False, description="Let remote_media='fetch' download from non-public "
                                      "addresses (off: no SSRF into the internal network).")
    max_request_pixels: int = Field(32_000_000, description="Most image pixels in one request, all images together.")
    unsmoothable_media: Literal["error", "passthrough"] = Field(
        "error", description="Media the guard cannot smooth (video, files, embeddings, file ids): refuse, or pass "
        "through unsmoothed (said in the notes).")

    #: Keyword arguments accepted for drop-in compatibility and ignored with a warning (subclasses extend it).
    _tolerated: ClassVar[frozenset[str]] = frozenset()
    #: Keyword arguments accepted and ignored silently (they cannot change anything here).
    _ignored: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, **data: Any) -> None:
        super().__init__(**_checked(type(self), data))

    @property
    def guard_config(self) -> GuardConfig:
        """The settings as one validated :class:`GuardConfig`."""
        return GuardConfig(**{name: getattr(self, name) for name in CONFIG_FIELDS})

    def _guard(self) -> SmoothGuard:
        """A guard for one request. Cheap: the embedder is shared process-wide, so nothing heavy is rebuilt."""
        return SmoothGuard(self.guard_config)


def _checked(cls: type[BaseModel], data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with the guard settings validated and normalised by GuardConfig; unknown keys are errors."""
    settings = {k: v for k, v in data.items() if k in CONFIG_FIELDS}
    config = GuardConfig(**settings)  # ConfigError names the setting and the allowed values
    out = dict(data)
    out.update({k: getattr(config, k) for k in settings})
    known = set(cls.model_fields) | {f.alias for f in cls.model_fields.values() if f.alias}
    tolerated: frozenset[str] = getattr(cls, "_tolerated", frozenset())
    ignored: frozenset[str] = getattr(cls, "_ignored", frozenset())
    for key in list(out):
        if key in known:
            continue
        if key in ignored:
            del out[key]
            continue
        if key in tolerated:
            _warn_ignored(cls.__name__, key)
            del out[key]
            continue
        close = difflib.get_close_matches(key, sorted(known), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{cls.__name__} got an unknown setting {key!r}{hint}")
    return out


def _warn_ignored(owner: str, key: str) -> None:
    import warnings

    warnings.warn(f"{owner} ignores {key!r}: set it on the wrapped model instead", UserWarning, stacklevel=4)
