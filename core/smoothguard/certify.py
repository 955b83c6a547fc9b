"""CERTIFY (Cohen, Rosenfeld and Kolter, 2019) for generated answers, with the answer clusters as the classes.

The smoothed model: for an input ``x`` (the request's images and audio, at the size the noise is drawn at)
and the guard's Gaussian noise ``eps`` (std ``sigma`` in the units of ``sigma``; ``sigma * std_c`` per channel in
[0, 1] pixels under ``sigma_space="normalized"``, then clamped, the clamp belonging to the base model), the base
classifier ``f`` answers the prompt for ``x + eps`` and maps the answer to a class. ``g(x)`` is the class that
``f(x + eps)`` falls in most often.

Procedure (``n0`` selection candidates, ``n`` estimation candidates, level ``alpha``)::

    select:   answer n0 noisy copies; cluster and vote (the guard's own aggregation) -> cluster A
    fix:      the membership rule "is an answer in A?", decided from the selection alone: an answer whose
              normalised text (or canonical JSON) is one of A's is in A, one of another cluster's is not, any
              other is in A when A's centroid is its nearest selection centroid and within ``threshold`` cosine
              distance of it (JSON answers: exact match only); a failed call is not in A
    estimate: answer n fresh noisy copies (independent noise); count = how many the rule puts in A
    p_lower = Clopper-Pearson lower bound of count / n at level 1 - alpha (one-sided)
    if p_lower <= 1/2: abstain     else: radius = sigma * Phi^-1(p_lower)

Guarantee (Cohen et al., Theorem 1 and Proposition 2, with ``f`` = "is the answer in A"): with probability at
least ``1 - alpha`` over the noise of the run, if ``certify`` returns A with radius R, then for every
perturbation ``delta`` with ``||delta||_2 < R`` (in the units of ``sigma``, at the size the noise is drawn at),
a noisy copy of ``x + delta`` is answered inside A with probability above 1/2: the smoothed answer stays A.
The selection and the rule see none of the counted candidates, so neither the choice of A nor the clustering
biases the count.

What it does not cover:
- The class is a region of answer space (A's texts and a cosine ball around A's centroid in the embedder's
  space), not the meaning of the text: an answer can stay in A and change what it says, or leave A and mean
  the same. The guarantee is about the cluster.
- Only ``g`` is certified, not one call of the model on ``x + delta``, and not the guard's own answer (which
  includes the unperturbed original and refits its clusters).
- L2 in the units of ``sigma`` at the model's input geometry: an image perturbed at its source size is
  resized first; an L-inf attack of 16/255 on a 336x336x3 image has an L2 norm of about 36.5 in [0, 1] pixels,
  far beyond the radii reachable (``sigma * Phi^-1(alpha^(1/n))``, about 0.15 to 0.76 for sigma 0.1-0.2 and n
  from 100 to 100,000 at alpha 0.001).
- Independence: each copy's noise is drawn independently (seeded per candidate index); a backend must answer
  each copy as it would alone (greedy decoding, no cross-talk in the batch). With a fixed ``seed`` the run is
  reproducible and the probability is over the choice of seed.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from smoothguard.aggregate import Verdict, aggregate, normalize_answer, structured_key
from smoothguard.consensus import clopper_pearson_lower, smoothing_radius
from smoothguard.errors import ConfigError
from smoothguard.result import CertifyResult

if TYPE_CHECKING:
    from smoothguard.guard import SmoothGuard

__all__ = ["acertify", "certify", "clopper_pearson_lower", "smoothing_radius"]


def certify(guard: SmoothGuard, backend: Any, prompt: str, *, images: Sequence[Any] = (),
            audio: Sequence[Any] | Any = (), n0: int = 10, n: int = 1000, alpha: float = 0.001,
            batch_size: int = 1000, threshold: float | None = None) -> CertifyResult:
    """Cohen et al.'s CERTIFY over answer clusters (module docstring): the answer and its certified L2 radius.

    n0: selection candidates. n: estimation candidates. alpha: the run fails to hold with probability at most
    ``alpha``. batch_size: candidates per ``backend.generate`` call (the backend batches them further by its
    own ``max_batch_size``). threshold: cosine distance for answers not seen in the selection (default
    ``cluster_threshold``). Every candidate is noisy (``include_original`` is ignored). Returns a
    :class:`~smoothguard.result.CertifyResult`; abstaining is a value (``abstained=True``), not an exception.
    """
    def generate(prompt: str, variants: Any, **extra: Any) -> Any:
        return backend.generate(prompt, variants, **extra)

    return _certify(guard, generate, prompt, images=images, audio=audio, n0=n0, n=n, alpha=alpha,
                    batch_size=batch_size, threshold=threshold, backend=backend)


async def acertify(guard: SmoothGuard, backend: Any, prompt: str, *, images: Sequence[Any] = (),
                   audio: Sequence[Any] | Any = (), n0: int = 10, n: int = 1000, alpha: float = 0.001,
                   batch_size: int = 1000, threshold: float | None = None) -> CertifyResult:
    """:func:`certify` through ``backend.agenerate``: the same procedure, noise and result for the same seed.

    The noise, the vote and the membership rule run in a worker thread (the event loop stays free); each batch
    of candidates is one ``await backend.agenerate(...)`` on the caller's event loop.
    """
    loop = asyncio.get_running_loop()

    def generate(prompt: str, variants: Any, **extra: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(backend.agenerate(prompt, variants, **extra), loop).result()

    return await asyncio.to_thread(_certify, guard, generate, prompt, images=images, audio=audio, n0=n0, n=n,
                                   alpha=alpha, batch_size=batch_size, threshold=threshold, backend=backend)


def _certify(guard: SmoothGuard, generate: Any, prompt: str, *, images: Sequence[Any], audio: Sequence[Any] | Any,
             n0: int, n: int, alpha: float, batch_size: int, threshold: float | None,
             backend: Any) -> CertifyResult:
    """:func:`certify` with ``generate(prompt, variants[, tensor_noise=...])`` answering each batch."""
    from smoothguard.guard import SmoothGuard, _call, _collect_media, _failure

    for name, value in (("n0", n0), ("n", n), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"certify: {name} must be a positive integer, got {value!r}")
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"certify: alpha must lie in (0, 1), got {alpha!r} (e.g. 0.001)")
    config = guard.config.replace(include_original=False, adaptive=False)
    threshold = config.cluster_threshold if threshold is None else float(threshold)
    media = _collect_media(images, audio, config)
    if not media:
        raise ConfigError("certify needs at least one image or audio clip: there is nothing to smooth")
    started = time.perf_counter()
    request = SmoothGuard(config)._backend_request(backend, prompt, media)

    def answer(indices: list[int]) -> list[Any]:
        request.round = indices
        variants = request.variants(indices)
        if request.tensor_noise:
            fn = request.bind(lambda v, noise: generate(prompt, v, tensor_noise=noise))
        else:
            fn = request.bind(lambda v: generate(prompt, v))
        outputs = _call(fn, variants)
        if isinstance(outputs, (str, bytes)) or not isinstance(outputs, Sequence) or len(outputs) != len(indices):
            return [RuntimeError("the backend returned the wrong number of answers")] * len(indices)
        return list(outputs)

    selection = answer(list(range(n0)))
    chosen = [o.strip() for o in selection if _failure(o) is None]
    select_s = time.perf_counter() - started
    image = any(m.kind == "image" for m in media)
    sigma = config.sigma if image else config.audio_sigma
    unit = config.sigma_space if image else "waveform"
    notes = _notes(request, media, config)
    base = {"n0": n0, "n": n, "alpha": float(alpha), "sigma": sigma, "unit": unit,
            "selection": tuple(o.strip() if _failure(o) is None else None for o in selection)}
    if not chosen:
        return CertifyResult(answer=None, abstained=True, radius=0.0, p_lower=0.0, count=0, failed=0, n_used=n0,
                             timings={"select": select_s, "estimate": 0.0, "total": time.perf_counter() - started},
                             notes=(*notes, "every selection candidate failed"), **base)
    verdict = aggregate(chosen, config)
    rule = _Membership(verdict, config, threshold)

    count = failed = 0
    tally: Counter[str] = Counter()
    for start in range(n0, n0 + n, batch_size):
        for output in answer(list(range(start, min(start + batch_size, n0 + n)))):
            if _failure(output) is not None:
                failed += 1
                continue
            text = output.strip()
            tally[text] += 1
            count += rule(text)
    p_lower = clopper_pearson_lower(count, n, 1.0 - alpha)
    abstained = p_lower <= 0.5
    total = time.perf_counter() - started
    return CertifyResult(
        answer=None if abstained else verdict.answer, abstained=abstained,
        radius=0.0 if abstained else smoothing_radius(sigma, p_lower), p_lower=p_lower, count=count,
        failed=failed, top_answers=tuple((a, c, bool(rule(a))) for a, c in tally.most_common(10)),
        n_used=n0 + n, timings={"select": select_s, "estimate": total - select_s, "total": total},
        notes=notes, **base)


class _Membership:
    """'Is this answer in the selected cluster A?', fixed from the selection answers alone (module docstring)."""

    def __init__(self, verdict: Verdict, config: Any, threshold: float) -> None:
        self.config = config
        self.threshold = threshold
        keys = [_key(a) for a in verdict.answers]
        winner = verdict.clusters[verdict.winner]
        self.inside = {keys[i] for i in winner.members}
        self.outside = {k for k in keys if k not in self.inside}
        self.exact_only = all(structured_key(verdict.answers[i]) is not None for i in winner.members)
        self.labels = np.asarray(verdict.labels)
        self.winner = verdict.winner
        self.selection = [normalize_answer(a) for a in verdict.answers]
        self.centroids: np.ndarray | None = None
        self.seen: dict[str, bool] = {}

    def __call__(self, answer: str) -> bool:
        key = _key(answer)
        if key in self.inside:
            return True
        if key in self.outside or self.exact_only or structured_key(answer) is not None:
            return False
        if key not in self.seen:
            self.seen[key] = self._near(normalize_answer(answer))
        return self.seen[key]

    def _near(self, text: str) -> bool:
        from smoothguard.aggregate.embed import get_embedder

        embedder = get_embedder(self.config.embedder, self.config.embedder_device)
        if self.centroids is None:
            vectors = embedder.encode(self.selection)
            centroids = np.stack([vectors[self.labels == c].mean(axis=0) for c in range(int(self.labels.max()) + 1)])
            self.centroids = centroids / np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
        similarity = self.centroids @ embedder.encode([text])[0]
        return int(np.argmax(similarity)) == self.winner and 1.0 - float(similarity[self.winner]) <= self.threshold


def _key(answer: str) -> str:
    structured = structured_key(answer)
    return "json:" + structured if structured is not None else "text:" + normalize_answer(answer)


def _notes(request: Any, media: Sequence[Any], config: Any) -> tuple[str, ...]:
    notes = []
    for k, site in enumerate(request.sites):
        if site.kind == "image" and site.resampled:
            notes.append(f"image {k}: the radius is for the image at {site.drawn_at[0]}x{site.drawn_at[1]}, where the "
                         f"noise was drawn (source {site.source[0]}x{site.source[1]})")
    kinds = {m.kind for m in media}
    if kinds == {"image", "audio"}:
        notes.append("images and audio together: the radius bounds the joint L2 norm with image perturbations in "
                     "units of sigma and audio in units scaled by sigma / audio_sigma")
    if config.seed is not None:
        notes.append(f"seed={config.seed}: the noise is reproducible; the probability is over the choice of seed")
    return tuple(notes)
