"""SmoothGuard: perturb -> generate -> aggregate -> decide, for one request.

For a request with media ``x`` and a model ``f``, the guard draws ``n`` variants ``x_0 = x`` (the original)
and ``x_i = clip(x + N(0, s^2))``, asks ``f`` once per variant, clusters the ``n`` answers by meaning and
returns the representative of the cluster that wins the sentiment-aware vote, together with how much the
copies agreed. The text of the request is never changed.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np

from smoothguard import limits
from smoothguard.aggregate import Verdict, aggregate
from smoothguard.audio_resample import source_rate_note, target_rate
from smoothguard.config import GuardConfig
from smoothguard.consensus import Look, look_schedule, majority_lower_bound, smoothing_radius
from smoothguard.errors import GenerationError, GuardFlagged
from smoothguard.image_resize import resolve, target_size
from smoothguard.media import Media
from smoothguard.media.audio import to_mono_at
from smoothguard.noise import LazyVariants, TensorNoise, make_variants, pixel_sigma
from smoothguard.result import CertifyResult, GuardResult, NoiseSite, Sample

__all__ = ["Generate", "SmoothGuard"]

Variants = list[list[Media]]
#: ``generate(variants) -> one answer (str) or exception per variant``; may be a coroutine for ``arun``.
Generate = Callable[[Variants], Sequence[Any]]


class SmoothGuard:
    """Defends one model call by answering noisy copies of its media and voting over the answers.

    ``SmoothGuard(sigma=0.1, n_samples=11, seed=0)`` or ``SmoothGuard(GuardConfig(...))``; every setting is
    documented on :class:`~smoothguard.GuardConfig`. The guard holds no per-request state: one instance can
    serve many threads and tasks at once.
    """

    def __init__(self, config: GuardConfig | None = None, /, **settings: Any) -> None:
        if config is not None and not isinstance(config, GuardConfig):
            raise TypeError(f"SmoothGuard takes a GuardConfig or keyword settings, not {type(config).__name__}")
        if config is None:
            config = GuardConfig.from_kwargs(**settings)
        elif settings:
            config = config.replace(**settings)
        self.config = config

    def __repr__(self) -> str:
        c = self.config
        return f"SmoothGuard(sigma={c.sigma}, n_samples={c.n_samples}, clustering={c.clustering!r}, seed={c.seed})"

    # -- the steps, usable on their own -------------------------------------------------------------------

    def perturb(self, media: Sequence[Media], n: int | None = None, *, channel_std: Sequence[float] | None = None,
                auto_resize: str | None = None, auto_resample: int | None = None) -> list[list[Media]]:
        """``n`` (default ``n_samples``) lists of media; ``[0]`` is the original when ``include_original``.

        Images are first brought to the ``image_resize`` size (``"auto"``: ``auto_resize``, else the source
        size), and every copy of a resized image, the original included, is at that size; clips likewise to the
        ``audio_resample`` rate, mono (``"auto"``: ``auto_resample`` in Hz, else the source rate). With ``seed``
        set, the same media give the same variants on every call.
        """
        media = _as_media_list(media)
        n = self.config.n_samples if n is None else n
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        return _Request(self.config, media, channel_std, auto_resize=auto_resize,
                        auto_resample=auto_resample).variants(range(n))

    def aggregate(self, answers: Sequence[str]) -> Verdict:
        """Cluster and vote over ``answers``; see :func:`smoothguard.aggregate.aggregate`."""
        return aggregate(answers, self.config)

    # -- whole requests -----------------------------------------------------------------------------------

    def run(self, media: Sequence[Media], generate: Generate, *, channel_std: Sequence[float] | None = None,
            tensor_noise: bool | str = False, deadline: float | None = None, auto_resize: str | None = None,
            auto_resample: int | None = None, lazy: bool = False) -> GuardResult:
        """Guard one request: ``generate(variants)`` answers a list of variants (one str or exception each).

        Without media, ``generate([[]])`` is called once and its answer passed through unguarded.
        ``channel_std``: the model's per-channel normalisation std (see ``GuardConfig.channel_std``).
        ``tensor_noise=True``: images are passed clean and ``generate(variants, noise)`` gets a
        :class:`~smoothguard.noise.TensorNoise` to add to its normalised tensor itself (audio stays noisy in the
        waveform); ``"all"``: audio too is passed clean, for a model that adds its waveform noise itself.
        ``auto_resize``: what ``image_resize="auto"`` means for this model (:func:`~smoothguard.image_resize.auto_rule`
        of the wrapped model; adapters pass it). Without it, "auto" draws the noise at the source size, since a
        bare ``generate`` does not say what its model resizes to; the notes say so for images larger than
        OpenAI's input size.
        ``auto_resample``: what ``audio_resample="auto"`` means for this model, a rate in Hz
        (:func:`~smoothguard.audio_resample.auto_rate` of the wrapped model; adapters pass it), or None: the clips
        keep their rate and channels, and the notes say so for stereo clips and clips above 16 kHz.
        ``lazy=True``: ``variants`` is a :class:`~smoothguard.noise.LazyVariants` that draws each copy when it is
        read and keeps none, so a ``generate`` that encodes and sends the copies one by one holds one noisy copy at
        a time (the fan-out adapters and the proxy do); read each once.
        ``deadline``: the ``time.monotonic()`` instant at which ``time_budget`` runs out (default: now +
        ``time_budget``). No adaptive round starts after it (the first always runs); a ``generate`` that fans
        out is the one to stop waiting for slow candidates then (:meth:`deadline_from_now` gives callers theirs).
        Raises :class:`GenerationError` when fewer candidates than the quorum are answered, and
        :class:`GuardFlagged` when flagged under ``on_flag="raise"``.
        """
        return self._drive(self._request(media, channel_std, tensor_noise, deadline, auto_resize, lazy=lazy,
                                         auto_resample=auto_resample), generate)

    async def arun(self, media: Sequence[Media], generate: Callable[..., Any], *,
                   channel_std: Sequence[float] | None = None, tensor_noise: bool | str = False,
                   deadline: float | None = None, auto_resize: str | None = None, auto_resample: int | None = None,
                   lazy: bool = False) -> GuardResult:
        """:meth:`run` for an async ``generate`` (a sync one also works). Resizing, noise, embedding and
        clustering run in worker threads, so the event loop stays free."""
        return await self._arun(self._request(media, channel_std, tensor_noise, deadline, auto_resize, lazy=lazy,
                                              auto_resample=auto_resample), generate)

    async def _arun(self, request: _Request, generate: Callable[..., Any]) -> GuardResult:
        while (variants := await asyncio.to_thread(request.next_round)) is not None:
            outputs = _call(request.bind(generate), variants)
            if inspect.isawaitable(outputs):
                outputs = await _awaited(outputs, len(variants))
            await asyncio.to_thread(request.record, variants, outputs)
        return await asyncio.to_thread(request.finish)

    def _request(self, media: Sequence[Media], channel_std: Sequence[float] | None, tensor_noise: bool | str,
                 deadline: float | None, auto_resize: str | None, sites: Sequence[NoiseSite] | None = None, *,
                 lazy: bool = False, auto_resample: int | None = None) -> _Request:
        media = _as_media_list(media)
        limits.check(media, self.config)  # max_media_items, max_image_pixels, max_request_pixels
        return _Request(self.config, media, channel_std, tensor_noise,
                        deadline if deadline is not None else self.deadline_from_now(), auto_resize, sites, lazy,
                        auto_resample)

    def warmup(self) -> SmoothGuard:
        """Load what the vote needs (the sentence embedder, the clustering, the VADER lexicon) now, quietly, by
        voting once over two stock answers, instead of on the first request (which otherwise pays for it: 3-15 s
        on CPU). Idempotent; returns ``self``."""
        from smoothguard.aggregate.embed import get_embedder

        get_embedder(self.config.embedder, self.config.embedder_device).load()
        self.aggregate(["The guard is warming up.", "I'm sorry, but I can't help with that."])
        return self

    def deadline_from_now(self) -> float | None:
        """``time.monotonic()`` + ``time_budget`` (seconds), or None without a budget."""
        budget = self.config.time_budget
        return None if budget is None else time.monotonic() + budget

    def ask(self, backend: Any, prompt: str, *, images: Sequence[Any] = (),
            audio: Sequence[Any] | Any = ()) -> GuardResult:
        """Guard ``backend.generate(prompt, variants)`` for a prompt with images and/or audio clips.

        ``images`` and ``audio`` take anything :meth:`Media.image` / :meth:`Media.audio` take (audio as
        ``Media`` or WAV bytes/paths/data URLs; arrays need ``Media.audio(x, sample_rate)`` first). A backend
        that adds the noise itself (``adds_noise``, as the Hugging Face backends) gets the clean media once and
        draws the noise at its model's input size; under ``image_resize="none"`` the guard draws it at the
        source size instead (the previous behaviour, weaker on large images).
        """
        request = self._backend_request(backend, prompt, _collect_media(images, audio, self.config))
        if request.tensor_noise:
            return self._drive(request, lambda variants, noise: backend.generate(prompt, variants,
                                                                                     tensor_noise=noise))
        return self._drive(request, lambda variants: backend.generate(prompt, variants))

    async def aask(self, backend: Any, prompt: str, *, images: Sequence[Any] = (),
                   audio: Sequence[Any] | Any = ()) -> GuardResult:
        """Async :meth:`ask`, through ``backend.agenerate``."""
        media = _collect_media(images, audio, self.config)
        request = await asyncio.to_thread(self._backend_request, backend, prompt, media)
        if request.tensor_noise:
            return await self._arun(request, lambda variants, noise: backend.agenerate(prompt, variants,
                                                                                       tensor_noise=noise))
        return await self._arun(request, lambda variants: backend.agenerate(prompt, variants))

    def certify(self, backend: Any, prompt: str, *, images: Sequence[Any] = (), audio: Sequence[Any] | Any = (),
                n0: int = 10, n: int = 1000, alpha: float = 0.001, batch_size: int = 1000,
                threshold: float | None = None) -> CertifyResult:
        """Cohen et al.'s CERTIFY with the answer clusters as classes: the answer and its certified L2 radius.

        Chooses the cluster A on ``n0`` noisy copies, fixes the rule "is an answer in A?" from them, answers
        ``n`` fresh noisy copies through ``backend.generate`` (``batch_size`` per call) and bounds A's share
        ``p_lower`` (one-sided Clopper-Pearson at ``1 - alpha``). With probability at least ``1 - alpha`` over the
        noise, if it returns A with radius ``R = sigma * Phi^-1(p_lower)``, then for every perturbation of L2 norm
        below ``R`` (in the units of ``sigma``, at the size the noise is drawn at) a noisy copy of the perturbed
        input is still answered inside A with probability above 1/2. Abstains (``abstained=True``, a value) when
        ``p_lower <= 1/2``. The guarantee is about the cluster (answer texts and an embedding ball), not the
        text's meaning, and about the smoothed model, not one call; details in :mod:`smoothguard.certify`.
        """
        from smoothguard.certify import certify

        return certify(self, backend, prompt, images=images, audio=audio, n0=n0, n=n, alpha=alpha,
                       batch_size=batch_size, threshold=threshold)

    async def acertify(self, backend: Any, prompt: str, *, images: Sequence[Any] = (),
                       audio: Sequence[Any] | Any = (), n0: int = 10, n: int = 1000, alpha: float = 0.001,
                       batch_size: int = 1000, threshold: float | None = None) -> CertifyResult:
        """Async :meth:`certify`, through ``backend.agenerate`` (``batch_size`` candidates per call): the same
        procedure, guarantee and, for the same ``seed``, the same result. The noise, vote and counting run in a
        worker thread, so the event loop stays free."""
        from smoothguard.certify import acertify

        return await acertify(self, backend, prompt, images=images, audio=audio, n0=n0, n=n, alpha=alpha,
                              batch_size=batch_size, threshold=threshold)

    def _backend_request(self, backend: Any, prompt: str, media: list[Media]) -> _Request:
        channel_std = getattr(backend, "pixel_std", None)
        if getattr(backend, "adds_noise", False) and self.config.image_resize != "none":
            request = self._request(media, channel_std, "all", None, None)
            if hasattr(backend, "noise_sites"):  # the backend's one pass of its processor over the clean media
                start = time.perf_counter()
                request.sites = tuple(backend.noise_sites(prompt, media))
                request.timings["perturb"] += time.perf_counter() - start
            return request
        if _adds_tensor_noise(backend):
            return self._request(media, channel_std, True, None, None)
        return self._request(media, channel_std, False, None, None)

    @staticmethod
    def _drive(request: _Request, generate: Callable[..., Any]) -> GuardResult:
        while (variants := request.next_round()) is not None:
            outputs = _call(request.bind(generate), variants)
            if inspect.isawaitable(outputs):
                _close(outputs)
                raise TypeError("generate returned a coroutine: use `await guard.arun(...)` for async models")
            request.record(variants, outputs)
        return request.finish()


# -- one request's state ------------------------------------------------------------------------------------


class _Request:
    """The state of one guarded request: which candidates were asked, what they answered, the verdict."""

    def __init__(self, config: GuardConfig, media: list[Media], channel_std: Sequence[float] | None = None,
                 tensor_noise: bool | str = False, deadline: float | None = None, auto_resize: str | None = None,
                 sites: Sequence[NoiseSite] | None = None, lazy: bool = False,
                 auto_resample: int | None = None) -> None:
        self.config = config
        self.deadline = deadline
        self.media = media
        self.entropy = config.seed if config.seed is not None else np.random.SeedSequence().entropy
        self.tensor_noise = tensor_noise
        self.pixel_std = _pixel_std(config, channel_std)
        self.image_std = None if tensor_noise else pixel_sigma(config.sigma, config.sigma_space,
                                                               config.channel_std or channel_std)
        self.auto_resize = auto_resize
        self.auto_resample = auto_resample
        self.sites: tuple[NoiseSite, ...] = tuple(sites) if sites is not None else ()
        self.notes: list[str] = []
        self.noisy_media: list[Media] | None = None  # the media at the size the noise is drawn at
        self.lazy = lazy  # variants as a LazyVariants (each copy drawn when read)
        self.round: list[int] = []
        self.outputs: list[Any] = []
        self.timings = {"perturb": 0.0, "generate": 0.0, "aggregate": 0.0}
        self.started = time.perf_counter()
        self.last_round_end = self.started
        self.verdict: Verdict | None = None
        self.settled = False

    @property
    def passthrough(self) -> bool:
        return not self.media

    def _at_noise_size(self) -> list[Media]:
        """The media brought to the size (images) or rate and channels (audio) the noise is drawn at (once per
        request), with where that is."""
        if self.noisy_media is not None:
            return self.noisy_media
        if self.tensor_noise:  # the backend draws it after its own processor, and said where
            self.noisy_media = self.media
            return self.media
        rule = resolve(self.config.image_resize, self.auto_resize)
        rate = target_rate(self.config.audio_resample, self.auto_resample)
        out, sites = [], []
        for k, item in enumerate(self.media):
            if item.kind == "audio":
                clip = self._at_rate(k, item, rate)
                out.append(clip)
                sites.append(NoiseSite("audio", (item.sample_rate or 0, item.n_channels),
                                       (clip.sample_rate or 0, clip.n_channels)))
                continue
            size = target_size(rule, item.width, item.height)
            resized = item.resized(*size)
            if resized is item and item.source_size != size:  # decoded straight to its size (limits.request's fit):
                # a new object (sharing the read-only pixels), so adapters send it, not the caller's full-size block
                resized = Media._make("image", item.data, "png", source_size=item.source_size)
            out.append(resized)
            sites.append(NoiseSite("image", item.source_size or size, size))
            if rule == "none":
                model = self.auto_resize or "openai"
                seen = target_size(model, item.width, item.height)
                if seen != size:
                    self.notes.append(
                        f"image {k}: noise drawn at its source size {size[0]}x{size[1]} (image_resize="
                        f"{self.config.image_resize!r}); a model that resizes it ({model!r}: to {seen[0]}x{seen[1]}) "
                        f"averages most of that noise away; set image_resize to the size the model sees")
        self.sites = tuple(sites)
        self.noisy_media = out
        return out

    def _at_rate(self, k: int, clip: Media, rate: int | None) -> Media:
        """Clip ``k`` mixed to mono at ``rate`` Hz (itself when it already is); as it is, with a note when a model
        that resamples would hear less noise, when ``rate`` is None."""
        source = clip.sample_rate or 0
        if rate is None:
            if note := source_rate_note(k, source, clip.n_channels, self.config.audio_resample):
                self.notes.append(note)
            return clip
        if source == rate and clip.n_channels == 1:
            return clip
        return Media._make("audio", to_mono_at(clip, rate), "wav", sample_rate=rate, wav_subtype=clip.wav_subtype)

    def variants(self, indices: Sequence[int]) -> Variants:
        start = time.perf_counter()
        media = self._at_noise_size()
        if self.tensor_noise == "all":
            variants: Variants = [list(media) for _ in indices]
        elif self.lazy:  # each copy drawn when the model's caller reads it, and dropped once it is sent
            variants = LazyVariants(media, list(indices), entropy=self.entropy, image_std=self.image_std,
                                    audio_std=self.config.audio_sigma, include_original=self.config.include_original)
        else:
            variants = make_variants(media, list(indices), entropy=self.entropy, image_std=self.image_std,
                                     audio_std=self.config.audio_sigma, include_original=self.config.include_original)
        self.timings["perturb"] += time.perf_counter() - start
        return variants

    def next_round(self) -> Variants | None:
        """The variants to ask next, or None when the request is decided."""
        done = len(self.outputs)
        if self.passthrough:
            return [[]] if done == 0 else None
        total = self.config.n_samples
        if done >= total or self.settled or (done and self.deadline is not None and time.monotonic() >= self.deadline):
            return None
        size = self.config.adaptive_round if self.config.adaptive else total
        self.round = list(range(done, min(done + size, total)))
        variants = self.variants(self.round)
        self.last_round_end = time.perf_counter()
        return variants

    def bind(self, generate: Callable[..., Any]) -> Callable[[Variants], Any]:
        """``generate`` as a function of the variants alone (with this round's tensor noise bound in)."""
        if not self.tensor_noise:
            return generate
        if self.passthrough:
            return lambda variants: generate(variants, None)
        noise = TensorNoise.for_variants(self.config.sigma, self.entropy, self.round, self.config.include_original,
                                         pixel_std=self.pixel_std, audio_sigma=self.config.audio_sigma)
        return lambda variants: generate(variants, noise)

    def record(self, variants: Variants, outputs: Sequence[Any]) -> None:
        """Store one round's answers (checking their number); in adaptive mode, test whether to stop."""
        self.timings["generate"] += time.perf_counter() - self.last_round_end
        if isinstance(outputs, (str, bytes)) or not isinstance(outputs, Sequence) or len(outputs) != len(variants):
            got = len(outputs) if isinstance(outputs, Sequence) and not isinstance(outputs, str) else type(outputs)
            error = GenerationError(f"generate returned {got!r} answers for {len(variants)} variants; "
                                    "it must return one answer (or exception) per variant, in order")
            outputs = [error] * len(variants)
        self.outputs.extend(outputs)
        look = self._look()
        if self.config.adaptive and not self.passthrough and look is not None and not look.final:
            ok = [i for i, a in enumerate(self.outputs) if _failure(a) is None]
            if len(ok) >= self._quorum():
                verdict = self._aggregate(ok)
                self.settled = self._bound(verdict, look) > 0.5  # a valid stop: smoothguard.consensus

    def _look(self) -> Look | None:
        """The planned look at the current number of candidates (None between looks or at a dropped one)."""
        c = self.config
        schedule = look_schedule(c.n_samples, c.confidence, adaptive=c.adaptive, adaptive_round=c.adaptive_round,
                                 include_original=c.include_original)
        return next((look for look in schedule if look.calls == len(self.outputs)), None)

    def _bound(self, verdict: Verdict, look: Look | None) -> float:
        """The winner's majority bound at ``look`` over the noisy candidates (the original not counted)."""
        if look is None:
            return 0.0
        members = verdict.clusters[verdict.winner].members  # candidate indices
        noisy = sum(1 for i in members if not (i == 0 and self.config.include_original))
        return majority_lower_bound(noisy, look.noisy, look.alpha)

    def _quorum(self) -> int:
        attempted = len(self.outputs)
        return self.config.quorum if self.config.quorum is not None else attempted // 2 + 1

    def _aggregate(self, ok: list[int]) -> Verdict:
        """The verdict over the answered candidates ``ok`` (named by their candidate index)."""
        start = time.perf_counter()
        self.verdict = aggregate([self.outputs[i].strip() for i in ok], self.config, indices=ok)
        self.timings["aggregate"] += time.perf_counter() - start
        return self.verdict

    def finish(self) -> GuardResult:
        """The verdict as a :class:`GuardResult`, with the flag policy applied."""
        config = self.config
        failures = [(i, _failure(out)) for i, out in enumerate(self.outputs)]
        causes = [(i, f) for i, f in failures if f is not None]
        ok = [i for i, f in failures if f is None]
        need = 1 if self.passthrough else min(self._quorum(), len(self.outputs))
        if len(ok) < need:
            detail = "; ".join(f"candidate {i}: {_describe(c)}" for i, c in causes[:5])
            more = f" (+{len(causes) - 5} more)" if len(causes) > 5 else ""
            raise GenerationError(
                f"only {len(ok)} of {len(self.outputs)} candidates were answered, {need} needed: {detail}{more}. "
                "Check the model, or lower `quorum`.", causes,
                answers={i: self.outputs[i] for i in ok})
        original = 0 if config.include_original and not self.passthrough else None
        if self.passthrough:
            answer = self.outputs[0].strip()
            return self._result(answer=answer, samples=(Sample(0, answer, original=False),),
                                clusters=(), winner=None, representative=None, agreement=1.0,
                                lower=None, radius=None, passthrough=True,
                                notes=("no image or audio in the request: one unguarded call",))

        verdict = self.verdict
        if verdict is None or verdict.indices != tuple(ok):  # the adaptive stop's verdict, when it saw them all
            verdict = self._aggregate(ok)
        slot = {candidate: k for k, candidate in enumerate(ok)}
        samples = []
        for i, failure in failures:
            if failure is not None:
                samples.append(Sample(i, None, error=_describe(failure), original=i == original))
            else:
                k = slot[i]
                samples.append(Sample(i, verdict.answers[k], cluster=verdict.labels[k],
                                      sentiment=verdict.sentiments[k], refusal=verdict.refusals[k],
                                      original=i == original))
        lower = self._bound(verdict, self._look())
        sigma = config.sigma if any(m.kind == "image" for m in self.media) else config.audio_sigma
        return self._result(answer=verdict.answer, samples=tuple(samples), clusters=verdict.clusters,
                            winner=verdict.winner, representative=verdict.representative,
                            agreement=verdict.agreement, lower=lower, radius=smoothing_radius(sigma, lower))

    def _result(self, *, answer: str, samples: tuple[Sample, ...], clusters: tuple[Any, ...], winner: int | None,
                representative: int | None, agreement: float, lower: float | None, radius: float | None,
                passthrough: bool = False, notes: tuple[str, ...] = ()) -> GuardResult:
        flagged = agreement < self.config.min_agreement
        refused = flagged and self.config.on_flag == "refuse"
        timings = dict(self.timings, total=time.perf_counter() - self.started)
        result = GuardResult(
            answer=self.config.refusal_message if refused else answer, samples=samples, clusters=clusters,
            winner=winner, representative=representative, agreement=agreement, consensus_lower_bound=lower,
            radius=radius, flagged=flagged, refused=refused, passthrough=passthrough, n_used=len(self.outputs),
            config=self.config, timings=timings, notes=(*notes, *self.notes), noise=self.sites)
        if flagged and self.config.on_flag == "raise":
            raise GuardFlagged(result)
        return result


# -- helpers ------------------------------------------------------------------------------------------------


def _call(generate: Callable[..., Any], variants: Variants) -> Sequence[Any] | Awaitable[Sequence[Any]]:
    """One round's outputs, for :meth:`SmoothGuard.run` and :meth:`~SmoothGuard.arun` alike: ``generate(variants)``,
    or, when the whole call raises, that exception for every candidate (the round failed). An async ``generate``'s
    awaitable is returned as it is: :func:`_awaited` applies the same rule to it."""
    try:
        return generate(variants)
    except Exception as exc:
        return [exc] * len(variants)


async def _awaited(outputs: Awaitable[Sequence[Any]], n: int) -> Sequence[Any]:
    """The outputs of an async ``generate``; the exception for every one of its ``n`` candidates when it raises."""
    try:
        return await outputs
    except Exception as exc:
        return [exc] * n


def _pixel_std(config: GuardConfig, channel_std: Sequence[float] | None) -> tuple[float, float, float] | None:
    """The [0, 1]-pixel noise std per channel a backend that adds the noise must use, or None for ``sigma`` in
    its own normalised units (the default: the backend's processor std is the unit)."""
    if config.sigma_space == "pixel":
        return (config.sigma,) * 3
    if config.channel_std is not None:
        return tuple(float(config.sigma * s) for s in config.channel_std)  # type: ignore[return-value]
    return None


def _adds_tensor_noise(backend: Any) -> bool:
    """True for a backend that adds image noise to its normalised tensor itself (``noise_space="normalized"``)."""
    return getattr(backend, "noise_space", "pixel") == "normalized"


def _close(awaitable: Awaitable[Any]) -> None:
    close = getattr(awaitable, "close", None)
    if close is not None:
        close()


def _failure(output: Any) -> Any:
    """None if ``output`` is a usable answer, else why not (the exception or a message)."""
    if isinstance(output, BaseException):
        return output
    if not isinstance(output, str):
        return f"the model returned {type(output).__name__}, not text"
    if not output.strip():
        return "the model returned an empty answer"
    return None


def _describe(failure: Any) -> str:
    if isinstance(failure, BaseException):
        return f"{type(failure).__name__}: {failure}"
    return str(failure)


def _as_media_list(media: Sequence[Media] | Media) -> list[Media]:
    if isinstance(media, Media):
        return [media]
    items = list(media)
    for i, item in enumerate(items):
        if not isinstance(item, Media):
            raise TypeError(f"media[{i}] is {type(item).__name__}: wrap it with Media.image(...) or Media.audio(...)")
    return items


def _collect_media(images: Sequence[Any] | Any, audio: Sequence[Any] | Any, config: GuardConfig) -> list[Media]:
    """Media for ``ask``: one item or a sequence of each kind, decoded under the config's size limits."""

    def items(x: Any) -> list[Any]:
        return [x] if isinstance(x, (str, bytes, Media)) or not isinstance(x, Sequence) else list(x)

    with limits.request(config):
        return ([limits.decode(x, "image", config) for x in items(images)]
                + [limits.decode(x, "audio", config) for x in items(audio)])
