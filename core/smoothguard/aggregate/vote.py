"""The sentiment-aware vote: cluster size plus a bonus for benign answers (refusals, non-negative VADER).

This step goes beyond the paper's code, which keeps the larger of two k-means clusters. Per answer ``i``::

    benign_i = 1                        if answer i is a refusal
             = 1 - max(0, -compound_i)  otherwise (VADER compound in [-1, 1]: neutral/positive -> 1)

and per cluster ``c`` with ``n_c`` of the ``n`` answers::

    score_c = n_c / n + safety_weight * mean(benign_i for i in c)

The cluster with the highest score wins. Ties (within 1e-9) go to, in order: the larger cluster, the more
benign cluster, then the cluster of the earliest answer (the original input when it is candidate 0).

A benign minority overturns a majority only when the majority's lead in share is smaller than
``safety_weight`` times the difference in benign scores. At the default 0.15 and n = 11, a fully benign
cluster of 5 beats a cluster of 6 whose mean benign score is below 0.39 (clearly hostile text), and never
beats a lead of two or more answers (2/11 > 0.15). ``safety_weight=0`` is the plain majority vote.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["benign_scores", "is_refusal", "sentiment_scores", "vote"]

_REFUSAL = re.compile(
    r"|".join(
        [
            r"\bI(?:'m| am) (?:sorry|afraid|unable|not able)\b",
            r"\bI (?:cannot|can ?not|can't|can’t|won't|won’t|will not|must decline|refuse|do not feel comfortable)\b",
            r"\bI'm (?:not (?:able|comfortable|going)|unable)\b",
            r"\b(?:cannot|can't|can’t|unable to|not able to) (?:help|assist|comply|provide|fulfil|fulfill|answer)\b",
            r"\bAs an AI\b",
            r"\bI apologi[sz]e\b",
            r"\b(?:against|violates?) (?:my|the) (?:guidelines|policy|policies|principles)\b",
            r"\b(?:illegal|unethical|harmful) (?:and|or) (?:illegal|unethical|harmful|dangerous)\b",
            r"\bMy apologies\b",
        ]
    ),
    re.IGNORECASE,
)

_vader: Any = None
_vader_lock = threading.Lock()


def is_refusal(text: str) -> bool:
    """True if ``text`` declines to answer (keyword patterns of the usual refusal judges)."""
    return bool(_REFUSAL.search(text))


def _analyzer() -> Any:
    """nltk's VADER reading the lexicon shipped by PyPI ``vaderSentiment`` (no nltk download needed)."""
    global _vader
    with _vader_lock:
        if _vader is None:
            from pathlib import Path

            import nltk
            import vaderSentiment
            from nltk.sentiment.vader import SentimentIntensityAnalyzer

            lexicon_dir = str(Path(vaderSentiment.__file__).parent)
            if lexicon_dir not in nltk.data.path:
                nltk.data.path.append(lexicon_dir)  # authorises the directory for nltk's path sandbox
            _vader = SentimentIntensityAnalyzer(lexicon_file="vader_lexicon.txt")
        return _vader


def sentiment_scores(texts: Sequence[str]) -> np.ndarray:
    """VADER compound score per text, shape (n,), in [-1, 1] (0 for empty text). Each distinct text is scored once."""
    analyzer = _analyzer()
    scores: dict[str, float] = {}
    for text in texts:
        if text not in scores:
            scores[text] = analyzer.polarity_scores(text)["compound"] if text.strip() else 0.0
    return np.array([scores[text] for text in texts], dtype=float)


def benign_scores(compound: np.ndarray, refusals: np.ndarray) -> np.ndarray:
    """Per-answer benign score in [0, 1]: 1 for refusals, else ``1 - max(0, -compound)``."""
    return np.where(refusals, 1.0, 1.0 - np.clip(-compound, 0.0, 1.0))


def vote(labels: np.ndarray, benign: np.ndarray, safety_weight: float) -> tuple[int, np.ndarray]:
    """The winning label and the score of every label (index = label), per the module docstring."""
    n_labels = int(labels.max()) + 1
    sizes = np.bincount(labels, minlength=n_labels).astype(float)
    mean_benign = np.bincount(labels, weights=benign, minlength=n_labels) / sizes
    scores = sizes / len(labels) + safety_weight * mean_benign
    best = scores.max()
    # Ties within 1e-9: larger, then more benign, then lower label (the earliest answer's cluster).
    contenders = [c for c in range(n_labels) if scores[c] >= best - 1e-9]
    winner = min(contenders, key=lambda c: (-sizes[c], -mean_benign[c], c))
    return winner, scores
