"""How far the vote can be trusted: a majority bound that stays valid over every look and any winner.

The guard asks ``n`` candidates, clusters their answers and reports the winning cluster. Read the noisy
candidates as draws from the noise distribution: each noisy answer falls in cluster ``c`` with an unknown
*true share* ``p_c``. Two questions are asked of the counts, and both are answered by one rule.

- **Adaptive stop** (``adaptive=True``): after each round, may the guard stop because the leading cluster
  holds a true majority (``p_c > 1/2``)?
- **Consensus bound** (``GuardResult.consensus_lower_bound``): a lower bound on the winner's true share.

Neither may use the Clopper-Pearson bound of the winner as if the winner had been fixed in advance: the
winner is the cluster that came out largest, and the adaptive guard looks again after every round.

The rule
--------
The *looks* are planned before any answer is seen: the end of every adaptive round, the last at the cap
``n_samples`` (one look, at ``n_samples``, without ``adaptive``). Look ``t`` has seen ``m_t`` noisy candidates
(the original, candidate 0 under ``include_original``, is not a draw from the noise and is never counted; a
failed candidate counts as answering outside every cluster). Look ``t`` gets the share ``alpha_t`` of
``alpha = 1 - confidence`` (below). With ``k`` of the ``m_t`` noisy candidates in the winner, the bound is::

    L_t(k) = CP(k, m_t; alpha_t / 2)   if that exceeds 1/2,   else 0

where ``CP(k, m; a)`` is the one-sided Clopper-Pearson lower bound at level ``1 - a`` (the ``p`` with
``P_p(Bin(m, p) >= k) = a``). The adaptive guard stops at an interim look exactly when ``L_t > 1/2``, i.e.
when ``P_{1/2}(Bin(m_t, 1/2) >= k) < alpha_t / 2``; ``consensus_lower_bound`` is ``L_t`` at the look where the
request ended. Stopping happens only on a strict majority, so ``L_t > 0`` only for ``k > m_t / 2``.

Why it is valid
---------------
Claim: ``P(at some look, for some cluster c, L_t(N_c) > p_c) <= alpha``, whatever the number of clusters and
their shares. In particular the probability of stopping on a cluster whose true share is at most 1/2 is at
most ``alpha``, over every look and the choice of the leading cluster.

1. *Union over the looks*: the error probability is at most ``sum_t P(E_t)``, with ``E_t`` the error at look
   ``t``; it remains to show ``P(E_t) <= alpha_t``.
2. *One look, one cluster*: ``L_t(N_c) > p_c`` needs ``CP(N_c; alpha_t/2) > p_c``, which has probability at
   most ``alpha_t / 2`` (the Clopper-Pearson guarantee), and, when ``p_c < 1/2``, needs ``L_t > 1/2``, i.e.
   ``N_c >= b``, the smallest count with ``P_{1/2}(Bin(m, 1/2) >= b) < alpha_t / 2``; ``b > m/2``.
3. *The choice of the cluster*: write ``g(p) = P_p(Bin(m, p) >= b)``. ``g'(p)`` is the Beta(b, m - b + 1)
   density times a constant, ``p^(b-1) (1-p)^(m-b)``, increasing on ``[0, (b-1)/(m-1)]``, which contains
   ``[0, 1/2]`` because ``b >= (m+1)/2``. So ``g(p)/p``, the mean of ``g'`` over ``[0, p]``, is
   non-decreasing on ``(0, 1/2]`` and ``g(p) <= 2 p g(1/2) <= p alpha_t`` there.
   Sum over the clusters: at most one cluster has ``p_c > 1/2`` (error probability ``<= alpha_t / 2``), and the
   others share at most ``1 - p_c < 1/2`` between them, so they add at most ``alpha_t / 2``. Without such a
   cluster, the others add at most ``alpha_t * sum p_c <= alpha_t``; two clusters of exactly 1/2 add
   ``alpha_t / 2`` each. Hence ``P(E_t) <= alpha_t``.

The factor 2 is what the choice of the winner costs: with two answers at exactly 50/50, five of five noisy
candidates agreeing happens with probability ``2 * 0.5^5 = 0.0625``; the rule needs ``2 * 0.5^m < alpha_t``.

Spending ``alpha`` over the looks
---------------------------------
``alpha`` is split equally over the looks that could stop at all: an interim look where even a unanimous
count could not clear the bar (``2 * 0.5^m_t >= alpha / |looks|``) is dropped, and the split is redone until no
look is dropped; the final look is always kept (it reports the bound). All of this depends only on
``n_samples``, ``adaptive_round``, ``include_original`` and ``confidence``, never on the answers.
With the defaults (11 candidates, rounds of 8, the original included, confidence 0.95) the looks are at 8
calls (7 noisy, ``alpha_t = 0.025``: a stop needs all 7) and at 11 calls (10 noisy, ``alpha_t = 0.025``).

What it assumes
---------------
The noisy candidates are independent draws (independent noise per candidate, a model that answers each copy
on its own, deterministically or not), and the clusters are a fixed partition of the answers: the guard's
clustering is re-run over all answers at each look, so the statement is about the partition it finds, not
about the meaning of the text. :meth:`SmoothGuard.certify` fixes the membership rule before the counted
candidates are seen, and is the one to use for a certificate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Look", "clopper_pearson_lower", "look_schedule", "majority_lower_bound", "smoothing_radius",
           "stop_count"]


def clopper_pearson_lower(successes: int, trials: int, confidence: float = 0.95) -> float:
    """One-sided lower confidence bound on a binomial proportion: ``Beta(1 - confidence; k, n - k + 1)``.

    Valid for a proportion fixed before the data are seen (not for the largest of several clusters: see the
    module docstring). ``clopper_pearson_lower(10, 10)`` = ``0.05 ** (1/10)`` ~= 0.741.
    """
    if trials <= 0 or successes <= 0:
        return 0.0
    from scipy.special import betaincinv

    return float(betaincinv(successes, trials - successes + 1, 1.0 - confidence))


def smoothing_radius(sigma: float, p_lower: float) -> float:
    """Randomized-smoothing radius ``sigma * Phi^-1(p_lower)`` (Cohen et al., 2019), 0 when p_lower <= 1/2.

    With ``p_lower`` a valid lower bound on the probability that the noisy input's answer falls in class A
    (and the complement holding the rest), no perturbation of L2 norm below the radius, in the units of
    ``sigma``, can make A lose its majority under the noise.
    """
    if p_lower <= 0.5:
        return 0.0
    from scipy.special import ndtri

    return float(sigma * ndtri(min(p_lower, 1.0 - 1e-12)))


def majority_lower_bound(k: int, m: int, alpha: float) -> float:
    """``CP(k, m; alpha / 2)`` when it exceeds 1/2, else 0: a lower bound on the winner's true share that holds
    at level ``1 - alpha`` whichever cluster won (module docstring). k, m: winner's noisy members, noisy
    candidates. alpha: this look's share of ``1 - confidence``; 0 gives 0."""
    if alpha <= 0 or m <= 0 or 2 * k <= m or _tail_at_half(k, m) >= alpha / 2:
        return 0.0
    return clopper_pearson_lower(k, m, 1.0 - alpha / 2)  # > 1/2, since P_{1/2}(Bin(m, 1/2) >= k) < alpha / 2


def stop_count(m: int, alpha: float) -> int | None:
    """The smallest winner count out of ``m`` noisy candidates with ``majority_lower_bound > 1/2`` (None if none)."""
    for k in range(m // 2 + 1, m + 1):
        if _tail_at_half(k, m) < alpha / 2:
            return k
    return None


def _tail_at_half(k: int, m: int) -> float:
    """``P(Bin(m, 1/2) >= k)``."""
    from scipy.special import bdtrc

    return float(bdtrc(k - 1, m, 0.5))


@dataclass(frozen=True)
class Look:
    """One planned look: after ``calls`` candidates (``noisy`` of them noisy), with its share ``alpha`` of
    ``1 - confidence``; ``final`` for the look at the cap."""

    calls: int
    noisy: int
    alpha: float
    final: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"calls": self.calls, "noisy": self.noisy, "alpha": self.alpha, "final": self.final}


def look_schedule(n_samples: int, confidence: float, *, adaptive: bool = False, adaptive_round: int = 8,
                  include_original: bool = True) -> tuple[Look, ...]:
    """The planned looks and their ``alpha`` shares (module docstring), in call order; the last is final."""
    alpha = 1.0 - confidence
    step = adaptive_round if adaptive else n_samples
    ends = [*range(step, n_samples, step), n_samples]
    noisy = {c: c - 1 if include_original else c for c in ends}
    kept = ends
    while True:
        share = alpha / len(kept)
        keep = [c for c in kept if c == n_samples or 2 * 0.5 ** noisy[c] < share]
        if keep == kept:
            break
        kept = keep
    share = alpha / len(kept)
    return tuple(Look(c, noisy[c], share, c == n_samples) for c in kept)
