"""Clustering of answer embeddings (scikit-learn), deterministic and total: any input gives labels."""

from __future__ import annotations

import warnings

import numpy as np

__all__ = ["cluster_embeddings"]


def cluster_embeddings(
    embeddings: np.ndarray,
    *,
    method: str = "kmeans",
    n_clusters: int = 2,
    threshold: float = 0.1,
    seed: int | None = 0,
) -> np.ndarray:
    """Cluster labels, shape (n,), for unit-norm ``embeddings`` of shape (n, d).

    kmeans: k-means with k = min(``n_clusters``, distinct answers), n_init=10, seeded (``seed`` None -> 0),
        on the distinct vectors weighted by their counts (Euclidean on unit vectors orders pairs as cosine
        does); clusters whose centroids lie within ``threshold`` cosine distance are then merged.
    agglomerative: average linkage on cosine distance, merging while the distance is below ``threshold``.

    Identical answers always share a label; a single distinct answer is one cluster. Labels are renumbered
    by first appearance, so label 0 is the cluster of answer 0.
    """
    n = len(embeddings)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    distinct, inverse, counts = np.unique(embeddings, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    if len(distinct) == 1:
        return np.zeros(n, dtype=np.int64)
    if method == "kmeans":
        labels = _kmeans(distinct, counts, n_clusters, threshold, 0 if seed is None else seed)[inverse]
    elif method == "agglomerative":
        labels = _agglomerative(embeddings, threshold)
    else:
        raise ValueError(f"unknown clustering method {method!r}")
    return _by_first_appearance(labels)


def _kmeans(points: np.ndarray, weights: np.ndarray, k: int, threshold: float, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    if len(points) <= k:  # one cluster per point is what k-means returns; skip its ten restarts
        labels = np.arange(len(points))
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # near-duplicate points may make fewer clusters: handled below
            labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(points, sample_weight=weights)
    return _merge_close(points, weights, labels, threshold)


def _merge_close(points: np.ndarray, weights: np.ndarray, labels: np.ndarray, threshold: float) -> np.ndarray:
    """Merge clusters whose weighted centroids are within ``threshold`` cosine distance (union-find)."""
    ids = np.unique(labels)
    centroids = np.stack([np.average(points[labels == i], axis=0, weights=weights[labels == i]) for i in ids])
    norms = np.linalg.norm(centroids, axis=1, keepdims=True)
    centroids = centroids / np.maximum(norms, 1e-12)
    parent = list(range(len(ids)))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    similarity = centroids @ centroids.T
    for a in range(len(ids)):
        for b in range(a + 1, len(ids)):
            if 1.0 - similarity[a, b] < threshold:
                parent[root(b)] = root(a)
    mapping = {label: root(i) for i, label in enumerate(ids)}
    return np.array([mapping[label] for label in labels], dtype=np.int64)


def _agglomerative(embeddings: np.ndarray, threshold: float) -> np.ndarray:
    from sklearn.cluster import AgglomerativeClustering

    model = AgglomerativeClustering(
        n_clusters=None, metric="cosine", linkage="average", distance_threshold=max(threshold, 1e-9)
    )
    return model.fit_predict(embeddings)


def _by_first_appearance(labels: np.ndarray) -> np.ndarray:
    order: dict[int, int] = {}
    for label in labels.tolist():
        order.setdefault(label, len(order))
    return np.array([order[label] for label in labels.tolist()], dtype=np.int64)
