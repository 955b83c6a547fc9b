"""GuardConfig: every setting of the guard, validated once, at construction."""

from __future__ import annotations

import dataclasses
import inspect
import math
import numbers
from dataclasses import dataclass
from typing import Any, Literal

from smoothguard.audio_resample import check_resample
from smoothguard.errors import ConfigError, did_you_mean
from smoothguard.image_resize import check_rule
from smoothguard.media import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS

__all__ = ["CLIP_STD", "DEFAULT_EMBEDDER", "GuardConfig"]

DEFAULT_EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"
#: Per-channel std of OpenAI CLIP's normalisation (R, G, B): the unit of ``sigma`` when no backend says otherwise.
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
DEFAULT_REFUSAL = "I'm sorry, but I can't give a reliable answer to this request."

_CHOICES: dict[str, tuple[str, ...]] = {
    "sigma_space": ("normalized", "pixel"),
    "clustering": ("kmeans", "agglomerative"),
    "on_flag": ("answer", "refuse", "raise"),
    "remote_media": ("fetch", "passthrough", "error"),
    "unsmoothable_media": ("error", "passthrough"),
}


@dataclass(frozen=True)
class GuardConfig:
    """Settings of one :class:`~smoothguard.SmoothGuard`. Immutable; derive variants with :meth:`replace`.

    Noise
        sigma: image noise std in the model's *normalised* input units (paper band 0.1-0.2). Applied in
            [0, 1] pixel space as ``sigma * std_c`` per channel, then clamped to [0, 1].
        sigma_space: ``"normalized"`` (above) or ``"pixel"`` (``sigma`` is a plain [0, 1]-pixel std).
        channel_std: per-channel (R, G, B) std that converts ``sigma`` to pixels; None takes the backend's
            processor std, else :data:`CLIP_STD`.
        audio_sigma: waveform noise std in [-1, 1] full-scale units; the result is clipped to [-1, 1].
    Sampling
        n_samples: candidates in all, the original included (paper: 10 noisy + 1 original).
        include_original: candidate 0 is the untouched input.
        seed: None draws fresh noise per call; an int makes variants, clustering and the answer reproducible.
        adaptive: answer in rounds of ``adaptive_round`` candidates (``n_samples`` is the cap) and stop once the
            winning cluster holds a majority of the noisy candidates' answers at ``confidence``, by a rule whose
            chance of stopping on a cluster with a true share <= 1/2 is at most ``1 - confidence`` over all its
            looks and whichever cluster leads (:mod:`smoothguard.consensus`). With the defaults a stop needs all
            7 noisy candidates of the first round of 8 to agree; otherwise the request goes on to ``n_samples``.
        adaptive_round: candidates per adaptive round (default 8: with the original and confidence 0.95, the
            fewest that can stop validly after one round while keeping part of ``1 - confidence`` for the end).
        confidence: level of the adaptive stop and of ``GuardResult.consensus_lower_bound``.
        quorum: candidates that must be answered for a verdict; None means a majority of those attempted.
        max_concurrency: upper bound on concurrent model calls for adapters that fan out; None: unbounded.
        time_budget: seconds a request waits for its candidates, from its start. Adapters that fan out cancel
            (or abandon) the calls still running then; those count as failed, and the vote goes on over the
            answered ones if a quorum did. No adaptive round starts after it. None: wait for every candidate.
            An in-process backend answers all copies in one batched generate, which is not cut short.
    Aggregation
        embedder: any sentence-transformers name or path; the default resolves to the packaged offline copy.
        embedder_device: ``"cpu"``, ``"cuda"``, ...; None lets sentence-transformers choose.
        clustering: ``"kmeans"`` (k = ``n_clusters``, n_init=10, seeded) or ``"agglomerative"``
            (average linkage, cosine; the number of clusters found from ``cluster_threshold``).
        n_clusters: k for k-means.
        cluster_threshold: cosine distance under which two clusters are one answer: k-means clusters whose
            centroids are closer are merged; agglomerative stops merging above it.
        safety_weight: weight of the benign score in the vote; 0 is the plain majority vote.
        min_agreement: winner share below which the result is flagged.
        on_flag: ``"answer"`` (winner, flagged in metadata), ``"refuse"`` (``refusal_message``),
            ``"raise"`` (:class:`~smoothguard.GuardFlagged`).
    Media
        remote_media: http(s) media: ``"fetch"`` (size/time limits), ``"passthrough"`` (not smoothed), ``"error"``.
        fetch_timeout: seconds allowed to fetch one remote medium.
        allow_private_fetch: let ``remote_media="fetch"`` download from loopback, private, link-local and other
            non-public addresses. Off by default: an application that passes its users' URLs would otherwise
            fetch its own internal network for them (SSRF). Every redirect hop is checked, and the connection goes
            to the address that was checked.
        max_media_bytes: largest encoded medium accepted, in bytes.
        max_image_pixels: largest image accepted, in pixels (read from the header, before decoding).
        max_media_items: most images and audio clips in one request.
        max_request_pixels: most image pixels in one request, all images together (checked before each image is
            decoded, so a request's decoded images stay under this x 12 bytes of float32).
        image_resize: the size at which image noise is drawn for a remote model (:mod:`smoothguard.image_resize`):
            ``"auto"`` (the wrapped model's provider; in-process backends add the noise after their own
            processor), ``"openai"``, ``"anthropic"``, ``"qwen2-vl"``, a longest side (int), a ``(width, height)``
            bound, or ``"none"`` (the source size: a model that resizes sees weaker noise; said in the notes).
        audio_resample: the rate in Hz at which audio noise is drawn for a remote model
            (:mod:`smoothguard.audio_resample`): an int (the clip is mixed to mono and resampled to it, and every
            copy, the original included, is sent at that rate), ``"auto"`` (16000 for a wrapped model named
            qwen2-audio, qwen2.5-omni or whisper, else the source rate; in-process backends add the noise after
            their own resampling), or ``"none"`` (the source rate and channels: a model that resamples hears
            weaker noise; said in the notes for stereo clips and clips above 16 kHz).
        unsmoothable_media: media the guard cannot smooth (video, files and documents, precomputed embeddings,
            provider file ids and file URIs, in-process objects such as ``image_pil``): ``"error"`` refuses the
            request naming the part (HTTP 400 from the proxy, ``MediaError`` from the adapters); ``"passthrough"``
            sends them unchanged and unsmoothed, and says so in the result's notes. Unknown content parts are
            refused either way (:mod:`smoothguard.content_parts`).
    """

    sigma: float = 0.1
    sigma_space: Literal["normalized", "pixel"] = "normalized"
    channel_std: tuple[float, float, float] | None = None
    audio_sigma: float = 0.01
    n_samples: int = 11
    include_original: bool = True
    seed: int | None = None
    adaptive: bool = False
    adaptive_round: int = 8
    confidence: float = 0.95
    quorum: int | None = None
    max_concurrency: int | None = None
    embedder: str = DEFAULT_EMBEDDER
    embedder_device: str | None = None
    clustering: Literal["kmeans", "agglomerative"] = "kmeans"
    n_clusters: int = 2
    cluster_threshold: float = 0.1
    safety_weight: float = 0.15
    min_agreement: float = 0.5
    on_flag: Literal["answer", "refuse", "raise"] = "answer"
    refusal_message: str = DEFAULT_REFUSAL
    remote_media: Literal["fetch", "passthrough", "error"] = "fetch"
    fetch_timeout: float = 10.0
    max_media_bytes: int = DEFAULT_MAX_BYTES
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    time_budget: float | None = None  # new fields go last, so that the fields before them keep their positions
    image_resize: str | int | tuple[int, int] = "auto"
    unsmoothable_media: Literal["error", "passthrough"] = "error"
    max_media_items: int = 8
    max_request_pixels: int = 32_000_000
    allow_private_fetch: bool = False
    audio_resample: str | int = "auto"

    def __post_init__(self) -> None:
        _number(self, "sigma", low=0.0)
        _number(self, "audio_sigma", low=0.0)
        _number(self, "cluster_threshold", low=0.0, high=2.0)
        _number(self, "safety_weight", low=0.0)
        _number(self, "min_agreement", low=0.0, high=1.0)
        _number(self, "fetch_timeout", low=0.0, low_open=True)
        _number(self, "confidence", low=0.5, high=1.0, low_open=True, high_open=True)
        _number(self, "time_budget", low=0.0, low_open=True, optional=True)
        _integer(self, "n_samples", low=1)
        _integer(self, "adaptive_round", low=1)
        _integer(self, "n_clusters", low=2)
        _integer(self, "max_media_bytes", low=1)
        _integer(self, "max_image_pixels", low=1)
        _integer(self, "max_media_items", low=1)
        _integer(self, "max_request_pixels", low=1)
        _integer(self, "seed", low=0, optional=True)
        _integer(self, "quorum", low=1, optional=True)
        _integer(self, "max_concurrency", low=1, optional=True)
        for name in ("include_original", "adaptive", "allow_private_fetch"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be True or False, got {getattr(self, name)!r}")
        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                raise ConfigError(f"{name} must be one of {', '.join(map(repr, choices))}, got {getattr(self, name)!r}")
        for name in ("embedder", "refusal_message"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise ConfigError(f"{name} must be a non-empty string, got {getattr(self, name)!r}")
        if self.embedder_device is not None and not isinstance(self.embedder_device, str):
            raise ConfigError(
                f"embedder_device must be a string such as 'cpu' or 'cuda', or None; got {self.embedder_device!r}"
            )
        object.__setattr__(self, "image_resize", check_rule(self.image_resize))
        object.__setattr__(self, "audio_resample", check_resample(self.audio_resample))
        if self.quorum is not None and self.quorum > self.n_samples:
            raise ConfigError(f"quorum={self.quorum} exceeds n_samples={self.n_samples}: it could never be met")
        if self.channel_std is not None:
            std = self.channel_std
            if (
                not isinstance(std, (tuple, list))
                or len(std) != 3
                or not all(_is_real(s) and math.isfinite(s) and s > 0 for s in std)
            ):
                raise ConfigError(f"channel_std must be three positive numbers (R, G, B std), got {std!r}")
            object.__setattr__(self, "channel_std", tuple(float(s) for s in std))

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> GuardConfig:
        """Build a config, turning an unknown keyword into a :class:`ConfigError` that suggests the right one."""
        return cls(**kwargs)

    def replace(self, **changes: Any) -> GuardConfig:
        """A copy with ``changes`` applied (validated like the constructor)."""
        base = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        base.update(changes)
        return GuardConfig.from_kwargs(**base)

    def to_dict(self) -> dict[str, Any]:
        """Every setting as JSON-serialisable values."""
        out = dataclasses.asdict(self)
        for name in ("channel_std", "image_resize"):
            if isinstance(out[name], tuple):
                out[name] = list(out[name])
        return out


def _suggesting_init(init: Any) -> Any:
    """``GuardConfig.__init__`` that turns an unknown keyword into a :class:`ConfigError` naming the closest
    setting (the dataclass's own says only ``unexpected keyword argument``)."""

    def __init__(self: GuardConfig, *args: Any, **kwargs: Any) -> None:
        _check_names(kwargs)
        init(self, *args, **kwargs)

    __init__.__doc__ = init.__doc__
    __init__.__signature__ = inspect.signature(init)  # type: ignore[attr-defined]
    return __init__


def _check_names(kwargs: dict[str, Any]) -> None:
    known = {f.name for f in dataclasses.fields(GuardConfig)}
    for key in kwargs:
        if key not in known:
            hint = did_you_mean(key, known) or f"; known settings: {', '.join(sorted(known))}"
            raise ConfigError(f"unknown setting {key!r}{hint}")


GuardConfig.__init__ = _suggesting_init(GuardConfig.__init__)  # type: ignore[method-assign]


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _number(cfg: GuardConfig, name: str, *, low: float, high: float | None = None,
            low_open: bool = False, high_open: bool = False, optional: bool = False) -> None:
    value = getattr(cfg, name)
    if value is None and optional:
        return
    if not _is_real(value) or not math.isfinite(value):
        kind = "a finite number or None" if optional else "a finite number"
        raise ConfigError(f"{name} must be {kind}, got {value!r}")
    too_low = value <= low if low_open else value < low
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        raise ConfigError(f"{name} must lie in {lo}{low}, {high if high is not None else 'inf'}{hi}, got {value!r}")
    object.__setattr__(cfg, name, float(value))


def _integer(cfg: GuardConfig, name: str, *, low: int, optional: bool = False) -> None:
    value = getattr(cfg, name)
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        kind = "an integer or None" if optional else "an integer"
        raise ConfigError(f"{name} must be {kind}, got {value!r}")
    if value < low:
        raise ConfigError(f"{name} must be >= {low}, got {value}")
    object.__setattr__(cfg, name, int(value))
