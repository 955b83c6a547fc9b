"""Confidence in the vote: a Clopper-Pearson bound on the winner's share and the smoothing radius."""

from __future__ import annotations

__all__ = ["clopper_pearson_lower", "smoothing_radius"]


def clopper_pearson_lower(successes: int, trials: int, confidence: float = 0.95) -> float:
    """One-sided lower confidence bound on a binomial proportion: ``Beta(1 - confidence; k, n - k + 1)``.

    ``clopper_pearson_lower(5, 5)`` = 0.05 ** (1/5) ~= 0.549: five agreeing answers out of five already show,
    at 95%, that the leading answer holds a majority.
    """
    if trials <= 0 or successes <= 0:
        return 0.0
    from scipy.special import betaincinv

    return float(betaincinv(successes, trials - successes + 1, 1.0 - confidence))


def smoothing_radius(sigma: float, p_lower: float) -> float:
    """Randomized-smoothing radius ``sigma * Phi^-1(p_lower)`` (Cohen et al., 2019), 0 when p_lower <= 1/2.

    For classifiers this certifies an L2 ball in the units of ``sigma``. For generated text it is a heuristic:
    the "class" is a cluster of answers, the candidates are not independent when the original is among them,
    and the answers are decoded, not sampled.
    """
    if p_lower <= 0.5:
        return 0.0
    from scipy.special import ndtri

    return float(sigma * ndtri(min(p_lower, 1.0 - 1e-12)))
