"""Aggregation: embed the answers, cluster them, vote, and pick the representative answer."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from smoothguard.aggregate.cluster import cluster_embeddings
from smoothguard.aggregate.embed import Embedder, get_embedder
from smoothguard.aggregate.vote import benign_scores, is_refusal, sentiment_scores, vote
from smoothguard.config import GuardConfig

__all__ = ["Cluster", "Verdict", "aggregate", "normalize_answer", "structured_key"]


@dataclass(frozen=True)
class Cluster:
    """One group of answers. ``benign`` is the mean benign score in [0, 1]; ``score`` the vote score."""

    label: int
    size: int
    members: tuple[int, ...]
    benign: float
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "size": self.size, "members": list(self.members),
                "benign": self.benign, "score": self.score}


@dataclass(frozen=True)
class Verdict:
    """What the answers say together. ``answers``, ``labels``, ``sentiments`` and ``refusals`` hold one entry per
    answer, in the order given; ``indices`` names each answer (the ``indices`` given to :func:`aggregate`: by
    default its position), and ``Cluster.members`` and ``representative`` are such names."""

    answers: tuple[str, ...]
    indices: tuple[int, ...]
    labels: tuple[int, ...]
    clusters: tuple[Cluster, ...]
    winner: int
    representative: int
    agreement: float
    sentiments: tuple[float, ...]
    refusals: tuple[bool, ...]

    @property
    def answer(self) -> str:
        """The representative answer of the winning cluster."""
        return self.answers[self.indices.index(self.representative)]


def structured_key(text: str) -> str | None:
    """Canonical JSON (sorted keys, no spaces) of an answer that is a JSON object or array, else None."""
    stripped = text.strip()
    if not stripped.startswith(("{", "[")):
        return None
    try:
        return json.dumps(json.loads(stripped), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except ValueError:
        return None


def normalize_answer(text: str) -> str:
    """The form answers are compared and embedded in: whitespace collapsed, case folded, final ``.!?`` dropped."""
    return " ".join(text.split()).casefold().rstrip(".!?。 ")


def aggregate(answers: Sequence[str], config: GuardConfig | None = None, *,
              embedder: Embedder | None = None, indices: Sequence[int] | None = None) -> Verdict:
    """Embed, cluster and vote over ``answers`` (at least one string); see :mod:`smoothguard.aggregate.vote`.

    ``indices``: a name for each answer (distinct ints, e.g. the candidate each answer came from), used in the
    verdict's cluster members and representative; default ``0 .. len(answers) - 1``.

    The representative is the winning cluster's member nearest its centroid (cosine; ties go to the earliest).
    Agreement is the winning cluster's share of all answers.

    Structured answers (every answer a JSON object or array, e.g. tool calls) are grouped by exact equality
    of their canonical JSON instead: embeddings see ``{"city": "Paris"}`` and ``{"city": "London"}`` as near
    neighbours, but they are different answers.
    """
    config = config or GuardConfig()
    answers = tuple(answers)
    if not answers:
        raise ValueError("aggregate() needs at least one answer")
    for i, answer in enumerate(answers):
        if not isinstance(answer, str):
            raise TypeError(f"answer {i} is {type(answer).__name__}, not str")
    names = np.arange(len(answers)) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
    if len(names) != len(answers) or len(set(names.tolist())) != len(names):
        raise ValueError(f"indices must name each of the {len(answers)} answers once, got {list(indices or ())}")
    structured = [structured_key(a) for a in answers]
    keys = [normalize_answer(a) for a in answers]
    all_structured = all(key is not None for key in structured)
    if all_structured or len(set(keys)) == 1:  # exact grouping; no embedding needed
        labels = _exact_labels(structured if all_structured else keys)
        vectors = np.eye(int(labels.max()) + 1, dtype=np.float32)[labels]  # one unit vector per distinct answer
    else:
        embedder = embedder or get_embedder(config.embedder, config.embedder_device)
        vectors = embedder.encode(keys)
        labels = cluster_embeddings(vectors, method=config.clustering, n_clusters=config.n_clusters,
                                    threshold=config.cluster_threshold, seed=config.seed)
    compound = sentiment_scores(answers)
    refusals = np.array([is_refusal(a) for a in answers], dtype=bool)
    benign = benign_scores(compound, refusals)
    winner, scores = vote(labels, benign, config.safety_weight)

    members = np.flatnonzero(labels == winner)
    centroid = vectors[members].mean(axis=0)
    centroid /= max(float(np.linalg.norm(centroid)), 1e-12)
    representative = int(names[members[int(np.argmax(vectors[members] @ centroid))]])

    clusters = tuple(
        Cluster(label=c, size=int((labels == c).sum()), members=tuple(names[labels == c].tolist()),
                benign=float(benign[labels == c].mean()), score=float(scores[c]))
        for c in range(int(labels.max()) + 1)
    )
    return Verdict(answers=answers, indices=tuple(names.tolist()), labels=tuple(labels.tolist()), clusters=clusters,
                   winner=winner, representative=representative, agreement=clusters[winner].size / len(answers),
                   sentiments=tuple(compound.tolist()), refusals=tuple(refusals.tolist()))


def _exact_labels(keys: Sequence[str | None]) -> np.ndarray:
    """Labels grouping equal keys, numbered by first appearance."""
    order: dict[str | None, int] = {}
    return np.array([order.setdefault(key, len(order)) for key in keys], dtype=np.int64)
