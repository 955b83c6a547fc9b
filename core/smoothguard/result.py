"""GuardResult: the answer of a guarded request and everything that explains it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from smoothguard.aggregate import Cluster
from smoothguard.config import GuardConfig

__all__ = ["GuardResult", "NoiseSite", "Sample"]


@dataclass(frozen=True)
class Sample:
    """One candidate: its answer or error, and what the vote saw in it (None where it failed)."""

    index: int
    answer: str | None
    error: str | None = None
    cluster: int | None = None
    sentiment: float | None = None
    refusal: bool | None = None
    original: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "answer": self.answer, "error": self.error, "cluster": self.cluster,
                "sentiment": self.sentiment, "refusal": self.refusal, "original": self.original}


@dataclass(frozen=True)
class NoiseSite:
    """Where the noise of one medium was drawn.

    kind: ``"image"`` or ``"audio"``. source / drawn_at: images ``(width, height)`` in pixels, audio
    ``(sample_rate, channels)``: the medium as given, and the tensor the noise was added to. views: for images,
    how many tensors of that size the model sees it as (tiles and overview; None when a processor's tiles of
    several images cannot be told apart).
    """

    kind: str
    source: tuple[int, int]
    drawn_at: tuple[int, int]
    views: int | None = 1

    @property
    def resampled(self) -> bool:
        """True when the noise was drawn at another size or rate than the source's."""
        return self.source != self.drawn_at

    def to_dict(self) -> dict[str, Any]:
        keys = ("width", "height") if self.kind == "image" else ("sample_rate", "channels")
        out: dict[str, Any] = {"kind": self.kind, "source": dict(zip(keys, self.source, strict=True)),
                               "drawn_at": dict(zip(keys, self.drawn_at, strict=True))}
        if self.kind == "image":
            out["views"] = self.views
        return out


@dataclass(frozen=True)
class GuardResult:
    """The outcome of one guarded request.

    answer: the text to return (the representative of the winning cluster, or ``refusal_message`` when
        flagged under ``on_flag="refuse"``).
    samples: every candidate, in candidate order (candidate 0 is the original when ``include_original``).
    clusters: the clusters found; ``members`` are candidate indices.
    winner / representative: the winning cluster's label and the candidate index of the chosen answer.
    agreement: the winning cluster's share of the answered candidates, in [0, 1].
    consensus_lower_bound: one-sided Clopper-Pearson lower bound (at ``config.confidence``) on that share.
    radius: ``sigma * Phi^-1(consensus_lower_bound)`` (0 when the bound is <= 1/2): the randomized-smoothing
        radius in the units of ``sigma``, a heuristic for generated text.
    flagged: agreement < ``config.min_agreement``. refused: the answer was replaced by the refusal message.
    passthrough: the request had no image or audio and was answered by one unguarded call.
    n_used: model calls made. timings: seconds per stage (perturb, generate, aggregate, total).
    notes: anything the caller should know (e.g. remote media passed through unsmoothed).
    noise: per medium, in request order, where its noise was drawn (:class:`NoiseSite`).
    """

    answer: str
    samples: tuple[Sample, ...]
    clusters: tuple[Cluster, ...]
    winner: int | None
    representative: int | None
    agreement: float
    consensus_lower_bound: float | None
    radius: float | None
    flagged: bool
    n_used: int
    config: GuardConfig
    refused: bool = False
    passthrough: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    noise: tuple[NoiseSite, ...] = ()

    @property
    def answers(self) -> list[str | None]:
        """Every candidate's answer (None where it failed), in candidate order."""
        return [s.answer for s in self.samples]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable summary (no media bytes)."""
        return {
            "answer": self.answer,
            "agreement": self.agreement,
            "consensus_lower_bound": self.consensus_lower_bound,
            "radius": self.radius,
            "flagged": self.flagged,
            "refused": self.refused,
            "passthrough": self.passthrough,
            "winner": self.winner,
            "representative": self.representative,
            "n_used": self.n_used,
            "samples": [s.to_dict() for s in self.samples],
            "clusters": [c.to_dict() for c in self.clusters],
            "timings": dict(self.timings),
            "notes": list(self.notes),
            "noise": [site.to_dict() for site in self.noise],
            "config": self.config.to_dict(),
        }
