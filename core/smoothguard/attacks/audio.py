"""Targeted L-infinity PGD on the waveform of Hugging Face audio-language models (Qwen2-Audio), with EOT over the
guard's audio noise.

The variable is the clip ``x = x0 + delta`` in [-1, 1] units at the model's rate, mono (``x0``: the input mixed to
mono and resampled as the backend does, rounded to the 16-bit PCM grid so the adversarial clip survives a PCM16
WAV unchanged). Each step lowers the loss (mean teacher-forced NLL of the target texts, as
:class:`~smoothguard.attacks.objective.TargetObjective`) through :class:`LogMel`, a differentiable copy of the
Whisper feature extractor's log-mel front end that is checked against the real extractor before every attack:

    delta <- delta - step_size * sign(grad)          then   |delta| <= epsilon,  -1 <= x0 + delta <= 1

With ``eot_samples = K > 0`` the gradient is averaged over K noisy copies ``clip(x + eot_sigma * z, -1, 1)``: the
noise SmoothGuard adds to a guarded clip (``GuardConfig.audio_sigma``), drawn the same way: the adaptive attack.
The result reports the perturbation's L-infinity size and the clip's SNR over it, ``10 log10(sum x0^2 /
sum delta^2)`` dB.

>>> attack = AudioPGDAttack(backend, epsilon=0.005, step_size=0.0005, steps=100, early_stop=True)
>>> res = attack.run(clip, prompt="Is there a high tone?", target="Yes.")
>>> res.clip, res.success, res.snr_db, res.steps; res.save("adv.wav")
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from smoothguard.attacks.objective import TargetObjective
from smoothguard.attacks.result import PGDOutcome, hits
from smoothguard.attacks.targets import normalize_targets
from smoothguard.errors import ConfigError, check_int
from smoothguard.media import Media
from smoothguard.media.audio import to_mono_at

__all__ = ["AudioAttackResult", "AudioPGDAttack", "LogMel", "audio_testbed_target", "snr_db"]

_PCM16 = 32768.0
#: largest difference allowed between :class:`LogMel` and the real feature extractor (log-mel units)
FRONT_END_TOLERANCE = 1e-3


class LogMel(torch.nn.Module):
    """The Whisper feature extractor's log-mel front end, differentiable: waveform ``(batch, samples)`` at its rate
    -> ``(batch, mel_bins, frames)``, padded with zeros (or cut) to ``n_samples`` as the extractor does.

    STFT (Hann window ``n_fft``, hop ``hop_length``, last frame dropped), power, the extractor's own mel filters,
    ``log10(max(., 1e-10))``, floored at each clip's maximum - 8, then ``(x + 4) / 4``.
    """

    def __init__(self, feature_extractor: Any) -> None:
        super().__init__()
        self.n_fft = int(feature_extractor.n_fft)
        self.hop_length = int(feature_extractor.hop_length)
        self.n_samples = int(feature_extractor.n_samples)
        self.sampling_rate = int(feature_extractor.sampling_rate)
        if getattr(feature_extractor, "do_normalize", False) or getattr(feature_extractor, "dither", 0.0):
            raise ConfigError("the audio attack supports Whisper feature extractors without do_normalize or dither")
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)
        mel = np.asarray(feature_extractor.mel_filters, np.float32)  # (n_fft // 2 + 1, mel_bins)
        self.register_buffer("mel", torch.from_numpy(mel).T.contiguous(), persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """Log-mel features of ``wave`` ``(batch, samples)``, float32."""
        wave = wave.float()
        if wave.shape[-1] < self.n_samples:
            wave = torch.nn.functional.pad(wave, (0, self.n_samples - wave.shape[-1]))
        wave = wave[..., :self.n_samples]
        spec = torch.stft(wave, self.n_fft, self.hop_length, window=self.window, return_complex=True)[..., :-1]
        power = spec.real**2 + spec.imag**2  # |z|^2 without abs(), whose gradient is undefined at 0
        log_spec = torch.clamp(self.mel @ power, min=1e-10).log10()
        peak = log_spec.amax(dim=(1, 2), keepdim=True)
        return (torch.maximum(log_spec, peak - 8.0) + 4.0) / 4.0

    def frames(self, n_samples: int) -> int:
        """Mel frames the extractor marks as real (its attention mask) for a clip of ``n_samples``."""
        return min(n_samples, self.n_samples) // self.hop_length


def snr_db(original: np.ndarray, adversarial: np.ndarray) -> float:
    """``10 log10(sum original^2 / sum (adversarial - original)^2)`` in dB (inf for no change)."""
    noise = float(np.sum((np.asarray(adversarial, np.float64) - original) ** 2))
    signal = float(np.sum(np.asarray(original, np.float64) ** 2))
    return math.inf if noise == 0.0 else 10.0 * math.log10(max(signal, 1e-30) / noise)


def audio_testbed_target(answer: str) -> str:
    """A wrong answer in the audio testbed's own template, one step away: "Yes." <-> "No.", high <-> low, N -> N + 1
    beeps (4 -> 3) (:mod:`smoothguard.testbed.audio_data`). Raises :class:`ConfigError` for another answer."""
    from smoothguard.testbed.audio_data import AUDIO_ANSWERS, count_answer

    flips = {AUDIO_ANSWERS["yes"]: AUDIO_ANSWERS["no"], AUDIO_ANSWERS["no"]: AUDIO_ANSWERS["yes"],
             "The tone is high.": "The tone is low.", "The tone is low.": "The tone is high."}
    flips.update({count_answer(n): count_answer(n + 1 if n < 4 else 3) for n in range(1, 5)})
    if answer not in flips:
        raise ConfigError(f"{answer!r} is not an answer of the audio testbed; give the target yourself")
    return flips[answer]


@dataclass(kw_only=True)
class AudioAttackResult(PGDOutcome):
    """What :meth:`AudioPGDAttack.run` returns: the fields of :class:`~smoothguard.attacks.result.PGDOutcome` (in
    [-1, 1] waveform units; ``original`` is the clean clip as the model hears it: mono, the model's rate, on the
    16-bit PCM grid), and:

    clip: the adversarial clip (same rate, same grid); snr_db: the clip's SNR over the perturbation, dB.
    """

    clip: Media
    snr_db: float

    @property
    def delta(self) -> np.ndarray:
        """``clip - original`` as float32 samples."""
        return (self.clip.data - self.original.data).astype(np.float32)

    def save(self, path: str | os.PathLike[str], subtype: str = "pcm16") -> Path:
        """Write the adversarial clip as a WAV file (16-bit PCM by default: exact, the clip is on that grid)."""
        out = Path(path)
        out.write_bytes(self.clip.to_wav_bytes(subtype))
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (no samples)."""
        return {**self._summary(), "snr_db": self.snr_db if math.isfinite(self.snr_db) else None,
                "elapsed": round(self.elapsed, 3)}


class AudioPGDAttack:
    """Targeted PGD (L-infinity, on the waveform) on an ``HFAudioLanguageModel``; EOT with ``eot_samples > 0``.

    backend: a ``smoothguard.backends.HFAudioLanguageModel`` (or ``HFVisionLanguageModel``) of an audio family
        whose feature extractor is Whisper's (Qwen2-Audio).
    epsilon: L-infinity budget in [-1, 1] waveform units (0.005 is about -46 dBFS); None: only the [-1, 1] box.
    step_size: per-step change in the same units (default epsilon / 10). steps: the step budget.
    early_stop: after each step (every ``check_every`` steps) decode greedily and stop at the first step whose answer
        contains the target (the minimal attack); False runs the whole budget (the full-budget attack).
    eot_samples: noisy copies per step whose gradients are averaged (0: plain PGD); eot_sigma: their noise std in
        [-1, 1] units, as ``GuardConfig.audio_sigma`` (default 0.01), clipped to [-1, 1] as the guard does.
    random_start: start from uniform noise in [-epsilon, epsilon]. target_eos: the target ends the answer.
    max_batch_size: sequences per forward pass (default: the backend's). seed: seeds the start and the EOT noise.
    """

    def __init__(self, backend: Any, epsilon: float | None = 0.005, step_size: float | None = None, steps: int = 100,
                 *, early_stop: bool = False, check_every: int = 1, eot_samples: int = 0, eot_sigma: float = 0.01,
                 random_start: bool = False, target_eos: bool = True, max_batch_size: int | None = None,
                 seed: int = 0) -> None:
        family = getattr(backend, "family", None)
        if family is None or not hasattr(backend, "build_inputs") or family.modality != "audio":
            raise ConfigError(f"AudioPGDAttack needs an HFAudioLanguageModel (Qwen2-Audio), got "
                              f"{type(backend).__name__}{'' if family is None else ' of ' + family.name}; "
                              "images are attacked with PGDAttack")
        if epsilon is not None and not 0.0 < epsilon <= 1.0:
            raise ConfigError(f"epsilon is in [-1, 1] waveform units and must be in (0, 1] or None, got {epsilon}")
        step = (epsilon / 10 if epsilon is not None else 1e-3) if step_size is None else step_size
        if not step > 0.0:
            raise ConfigError(f"step_size must be positive, got {step_size}")
        for name, value, low in (("steps", steps, 0), ("check_every", check_every, 1), ("eot_samples", eot_samples, 0)):
            check_int(name, value, low)
        if eot_samples and not eot_sigma > 0.0:
            raise ConfigError(f"eot_sigma must be positive with eot_samples > 0, got {eot_sigma}")
        self.backend = backend
        self.epsilon = None if epsilon is None else float(epsilon)
        self.step_size = float(step)
        self.steps = int(steps)
        self.early_stop = bool(early_stop)
        self.check_every = int(check_every)
        self.eot_samples = int(eot_samples)
        self.eot_sigma = float(eot_sigma)
        self.random_start = bool(random_start)
        self.target_eos = bool(target_eos)
        self.max_batch_size = int(max_batch_size or getattr(backend, "max_batch_size", 8))
        self.seed = int(seed)
        self.front_end = LogMel(backend.processor.feature_extractor)

    def __repr__(self) -> str:
        eot = f", eot_samples={self.eot_samples}, eot_sigma={self.eot_sigma}" if self.eot_samples else ""
        return (f"AudioPGDAttack(epsilon={self.epsilon}, step_size={self.step_size}, steps={self.steps}, "
                f"early_stop={self.early_stop}{eot}, seed={self.seed})")

    @property
    def config(self) -> dict[str, Any]:
        """The settings, JSON-serialisable."""
        return {"attack": "audio-pgd", "epsilon": self.epsilon, "step_size": self.step_size, "steps": self.steps,
                "early_stop": self.early_stop, "check_every": self.check_every, "eot_samples": self.eot_samples,
                "eot_sigma": self.eot_sigma, "random_start": self.random_start, "target_eos": self.target_eos,
                "seed": self.seed}

    def run(self, clip: Any, prompt: str | Sequence[str], target: str | Sequence[str] | Sequence[Sequence[str]]
            ) -> AudioAttackResult:
        """Attack ``clip`` (anything :meth:`Media.audio <smoothguard.Media.audio>` reads; arrays need a Media with
        its rate) so that the answer to ``prompt`` contains ``target`` (a text or a list of texts, any counts).

        Raises :class:`ConfigError` when the differentiable front end disagrees with the real feature extractor.
        """
        started = time.perf_counter()
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ConfigError("prompt must be a string or a non-empty list of strings")
        targets = normalize_targets(target, len(prompts))
        x0, original, objective = self._setup(Media.audio(clip), prompts, targets)
        generator = torch.Generator().manual_seed(self.seed)
        delta = torch.zeros_like(x0)
        if self.random_start and self.epsilon is not None:
            delta = self._project(x0, (torch.rand(x0.shape, generator=generator) * 2 - 1) * self.epsilon)
        curve: list[float] = []
        first_success: int | None = None
        checked: tuple[Media, list[str], list[bool]] | None = None
        if self.early_stop:
            checked = self._check(x0, delta, prompts, targets)
            first_success = 0 if all(checked[2]) else None
        step = 0
        while step < self.steps and not (self.early_stop and first_success is not None):
            noise = (torch.randn((self.eot_samples, x0.shape[0]), generator=generator) * self.eot_sigma
                     if self.eot_samples else None)
            loss, grad = self._gradient(objective, x0, delta, noise)
            delta = self._project(x0, delta - self.step_size * grad.sign())
            step += 1
            curve.append(loss)
            if self.early_stop and (step % self.check_every == 0 or step == self.steps):
                checked = self._check(x0, delta, prompts, targets)
                if all(checked[2]):
                    first_success = step
        adversarial = self._quantize(x0, delta)
        media = _media(adversarial, self.front_end.sampling_rate)
        if checked is None or checked[0] != media:
            checked = self._check(x0, delta, prompts, targets)
        _, answers, hit = checked
        with torch.no_grad():
            final_loss = float(objective.losses(self.front_end(adversarial.unsqueeze(0)).repeat(
                len(objective.pairs), 1, 1), objective.pairs).mean())
        config = {**self.config, "family": self.backend.family.name,
                  "model": str(getattr(self.backend.model, "name_or_path", "") or type(self.backend.model).__name__)}
        x0n, advn = x0.numpy(), adversarial.numpy()
        return AudioAttackResult(clip=media, original=original, success=all(hit), steps=step, loss_curve=curve,
                                 final_loss=final_loss, prompts=prompts, targets=targets, answers=answers, hit=hit,
                                 linf=float(np.abs(advn - x0n).max()), epsilon=self.epsilon, snr_db=snr_db(x0n, advn),
                                 first_success=first_success, elapsed=time.perf_counter() - started, config=config)

    # -- internals -------------------------------------------------------------------------------------------

    def _setup(self, media: Media, prompts: list[str],
               targets: list[list[str]]) -> tuple[torch.Tensor, Media, _AudioObjective]:
        """The clean start on the PCM16 grid at the model's rate, its Media, the loss; the front end checked."""
        rate = self.front_end.sampling_rate
        x0 = _round16(torch.from_numpy(to_mono_at(media, rate).copy()))
        original = _media(x0, rate)
        objective = _AudioObjective(self.backend, original, prompts, targets, target_eos=self.target_eos)
        self.check_front_end(x0, objective.reference)
        return x0, original, objective

    def check_front_end(self, wave: torch.Tensor, reference: Any) -> float:
        """The largest difference between :class:`LogMel` of ``wave`` and the real extractor's ``input_features``
        in ``reference``; raises :class:`ConfigError` above :data:`FRONT_END_TOLERANCE` (the attack would be
        optimising another model's input)."""
        real = reference["input_features"].float().cpu()
        with torch.no_grad():
            ours = self.front_end(wave.unsqueeze(0))
        if ours.shape != real.shape:
            raise ConfigError(f"the differentiable log-mel front end gives {tuple(ours.shape)}, the feature extractor "
                              f"{tuple(real.shape)}; this extractor is not supported by the audio attack")
        gap = float((ours - real).abs().max())
        if not gap <= FRONT_END_TOLERANCE:
            raise ConfigError(f"the differentiable log-mel front end differs from the feature extractor by {gap:.2e} "
                              f"(> {FRONT_END_TOLERANCE:g}); this extractor is not supported by the audio attack")
        return gap

    def _gradient(self, objective: _AudioObjective, x0: torch.Tensor, delta: torch.Tensor,
                  noise: torch.Tensor | None) -> tuple[float, torch.Tensor]:
        """Mean loss over every (prompt, target) pair x EOT copy, and its gradient with respect to ``delta``."""
        copies = 1 if noise is None else noise.shape[0]
        items = [(pair, k) for k in range(copies) for pair in objective.pairs]
        total, grad = 0.0, torch.zeros_like(delta)
        for start in range(0, len(items), self.max_batch_size):
            chunk = items[start:start + self.max_batch_size]
            leaf = delta.detach().requires_grad_(True)
            x = (x0 + leaf).unsqueeze(0).expand(len(chunk), -1)
            if noise is not None:
                x = (x + noise[[k for _, k in chunk]]).clamp(-1.0, 1.0)  # the guard's audio noise
            loss = objective.losses(self.front_end(x), [pair for pair, _ in chunk]).sum() / len(items)
            (part,) = torch.autograd.grad(loss, leaf)
            grad += part
            total += float(loss.detach())
        return total, grad

    def _project(self, x0: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        if self.epsilon is not None:
            delta = delta.clamp(-self.epsilon, self.epsilon)
        return ((x0 + delta).clamp(-1.0, 1.0) - x0).detach()

    def _quantize(self, x0: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """``x0 + delta`` on the PCM16 grid, kept within epsilon of ``x0`` (``x0`` is on the grid)."""
        x = torch.round((x0 + delta) * _PCM16)
        if self.epsilon is not None:
            base, levels = torch.round(x0 * _PCM16), math.floor(self.epsilon * _PCM16 + 1e-6)
            x = torch.minimum(torch.maximum(x, base - levels), base + levels)
        return x.clamp(-_PCM16, _PCM16 - 1) / _PCM16

    def _check(self, x0: torch.Tensor, delta: torch.Tensor, prompts: list[str],
               targets: list[list[str]]) -> tuple[Media, list[str], list[bool]]:
        """Greedy answers for the quantised clip through the backend's standard pipeline."""
        media = _media(self._quantize(x0, delta), self.front_end.sampling_rate)
        answers = []
        for p in prompts:
            answer = self.backend.generate(p, [[media]])[0]
            if isinstance(answer, BaseException):
                raise answer
            answers.append(answer)
        return media, answers, [hits(a, t) for a, t in zip(answers, targets, strict=True)]


class _AudioObjective(TargetObjective):
    """:class:`TargetObjective` for audio: the losses take ``input_features`` (one clip per pair)."""

    def losses(self, input_features: torch.Tensor, pairs: Sequence[tuple[int, str]]) -> torch.Tensor:  # type: ignore[override]
        """Per-pair mean NLL over the target tokens (nats per token), shape ``(len(pairs),)``."""
        batch, labels = self._batch(pairs)
        batch["input_features"] = input_features.to(self.reference["input_features"].dtype)
        n_target = labels.shape[1]
        kwargs: dict[str, Any] = {"use_cache": False}
        if self.keeps_logits:
            kwargs["logits_to_keep"] = n_target + 1
        logits = self.model(**batch, **kwargs).logits[:, -(n_target + 1):-1].float()
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                                ignore_index=-100, reduction="none").view(labels.shape)
        return nll.sum(dim=1) / (labels != -100).sum(dim=1).clamp(min=1)


def _round16(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x.float().clamp(-1.0, 1.0) * _PCM16).clamp(-_PCM16, _PCM16 - 1) / _PCM16


def _media(x: torch.Tensor, rate: int) -> Media:
    return Media.audio(np.ascontiguousarray(x.detach().float().cpu().numpy()), sample_rate=rate)
