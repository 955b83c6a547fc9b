"""GuardResult: the answer of a guarded request and everything that explains it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from smoothguard.aggregate import Cluster
from smoothguard.config import GuardConfig

__all__ = ["CertifyResult", "GuardResult", "NoiseSite", "Sample"]


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
    agreement: the winning cluster's share of the answered candidates, in [0, 1] (the plug-in share, no
        guarantee).
    consensus_lower_bound: a lower bound on the winner's true share among *noisy* answers (the original is not
        counted), valid at ``config.confidence`` whichever cluster won and, in adaptive mode, over every look
        (:mod:`smoothguard.consensus`); it is reported only when it shows a majority (> 1/2), else 0. None for a
        passthrough. It treats the clusters found as fixed classes: a statement about the clustering, not about
        the meaning of the text.
    radius: ``sigma * Phi^-1(consensus_lower_bound)`` (0 when the bound is 0), in the units of ``sigma``: the L2
        radius Cohen et al.'s theorem gives for that bound, under the same assumption, at the size the noise was
        drawn at. It is not a certificate: the clusters are refitted with every answer; use
        :meth:`SmoothGuard.certify` (fresh candidates, a membership rule fixed in advance) for one.
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


@dataclass(frozen=True)
class CertifyResult:
    """The outcome of :meth:`SmoothGuard.certify` (Cohen et al.'s CERTIFY over answer clusters).

    answer: the representative answer of the cluster chosen on the ``n0`` selection candidates, or None when
        the run abstained. abstained: the lower bound ``p_lower`` did not exceed 1/2 (a value, not an error).
    radius: certified L2 radius ``sigma * Phi^-1(p_lower)`` in the units of ``sigma`` (``unit``); 0 when abstained.
    p_lower: one-sided Clopper-Pearson lower bound at ``1 - alpha`` on the probability that a noisy copy's answer
        falls in the chosen cluster, from ``count`` of the ``n`` estimation candidates.
    count: estimation candidates whose answer the fixed rule assigned to the cluster; failed: estimation
        candidates whose call failed (counted outside the cluster).
    n0, n, alpha, sigma: the run's settings; unit: ``"normalized"`` (sigma in the model's normalised units, as
        ``sigma_space="normalized"``), ``"pixel"`` ([0, 1] pixels) or ``"waveform"`` (audio only).
    selection: the selection candidates' answers (None where one failed); top_answers: the most frequent
        estimation answers as ``(answer, count, in_cluster)``, at most 10.
    n_used: model calls made (n0 + n). timings: seconds (select, estimate, total). notes: caveats of this run.
    """

    answer: str | None
    abstained: bool
    radius: float
    p_lower: float
    count: int
    failed: int
    n0: int
    n: int
    alpha: float
    sigma: float
    unit: str
    selection: tuple[str | None, ...] = ()
    top_answers: tuple[tuple[str, int, bool], ...] = ()
    n_used: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable summary (no media bytes)."""
        return {
            "answer": self.answer, "abstained": self.abstained, "radius": self.radius, "p_lower": self.p_lower,
            "count": self.count, "failed": self.failed, "n0": self.n0, "n": self.n, "alpha": self.alpha,
            "sigma": self.sigma, "unit": self.unit, "selection": list(self.selection),
            "top_answers": [list(t) for t in self.top_answers], "n_used": self.n_used,
            "timings": dict(self.timings), "notes": list(self.notes),
        }
