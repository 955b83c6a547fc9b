"""Targeted L-infinity PGD on Hugging Face vision-language models, with EOT over the defence's noise.

The variable is the image ``x = x0 + delta`` in [0, 1] pixels at the model's post-resize resolution (``x0``: the
input as the processor resizes it, rounded to 8 bits). Each step lowers the loss (mean teacher-forced NLL of
the target texts, :mod:`.objective`) through differentiable preprocessing (:mod:`.preprocess`):

    delta <- delta - step_size * sign(grad)          then   |delta| <= epsilon,  0 <= x0 + delta <= 1

With ``eot_samples = K > 0`` the gradient is averaged over K noisy copies of the preprocessed ``pixel_values``:
the noise SmoothGuard's backend adds to a guarded request, drawn by the same code
(:class:`~smoothguard.backends.model_noise.PixelNoise`: per view and tile, ``eot_sigma`` in normalised units,
clamped to the image range when the backend's ``noise_space`` is ``"pixel"``): the adaptive attack on the defence.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from smoothguard.attacks.objective import TargetObjective
from smoothguard.attacks.preprocess import Preprocessor, preprocessor_for
from smoothguard.attacks.result import AttackResult, AttackState, StepInfo, hits
from smoothguard.attacks.targets import normalize_targets
from smoothguard.errors import ConfigError, check_int
from smoothguard.media import Media

__all__ = ["PGDAttack"]


class PGDAttack:
    """Targeted PGD (L-infinity) on an ``HFVisionLanguageModel``; EOT-PGD with ``eot_samples > 0``.

    >>> attack = PGDAttack(backend, epsilon=16/255, step_size=1/255, steps=100, early_stop=False, seed=0)
    >>> res = attack.run(image, prompt="Is there a red circle in the image?", target="Yes.")
    >>> res.image, res.success, res.steps, res.loss_curve; res.save("adv.png")

    backend: a ``smoothguard.backends.HFVisionLanguageModel`` of a family in
        :data:`smoothguard.attacks.preprocess.SUPPORTED`.
    epsilon: L-infinity budget in [0, 1] pixel units (16/255 = 16 levels of an 8-bit image); None: unconstrained
        (only the [0, 1] box). step_size: per-step change in the same units. steps: the step budget.
    random_start: start from uniform noise in [-epsilon, epsilon] (default: from the clean image).
    early_stop: after each step (every ``check_every`` steps) decode greedily and stop at the first step whose
        answer contains the target (the minimal attack); False runs the whole budget (the confident attack).
    eot_samples: noisy copies per step whose gradients are averaged (0: plain PGD). eot_sigma: their noise std
        in the guard's units: with ``eot_space="normalized"`` (default, as ``GuardConfig.sigma``) the std on
        ``pixel_values`` is ``eot_sigma`` (``eot_sigma * pixel_std[c]`` in [0, 1] pixels); with ``"pixel"`` it is
        ``eot_sigma`` in [0, 1] pixels. The noise goes where the guard's backend adds it (every view and tile of
        ``pixel_values``), clamped to the image range under the backend's ``noise_space="pixel"``.
    universal: allow several prompts (one image for all of them, as Qi et al.); success needs every prompt.
    batch_size: (prompt, target) pairs per step; with more pairs, a fresh seeded sample each step.
    max_batch_size: sequences per forward pass (pairs x EOT copies are split into chunks; default: the
        backend's ``max_batch_size``). target_eos: append the end-of-sequence token to each target, so the
        answer stops after it. seed: seeds the random start, the pair sampling and the EOT noise.
    progress: called with a :class:`~smoothguard.attacks.StepInfo` after every step.
    """

    def __init__(self, backend: Any, epsilon: float | None = 16 / 255, step_size: float = 1 / 255, steps: int = 100,
                 *, random_start: bool = False, early_stop: bool = False, check_every: int = 1,
                 eot_samples: int = 0, eot_sigma: float = 0.1, eot_space: str = "normalized", universal: bool = False,
                 batch_size: int = 8, max_batch_size: int | None = None, target_eos: bool = True, seed: int = 0,
                 progress: Callable[[StepInfo], Any] | None = None) -> None:
        if getattr(backend, "family", None) is None or not hasattr(backend, "build_inputs"):
            raise ConfigError(f"PGDAttack needs an HFVisionLanguageModel, got {type(backend).__name__}")
        if epsilon is not None and 1.0 < epsilon <= 255.0:
            raise ConfigError(f"epsilon is in [0, 1] pixel units: write {epsilon:g}/255, not {epsilon:g}")
        if epsilon is not None and not (0.0 < epsilon <= 1.0):
            raise ConfigError(f"epsilon must be in (0, 1] (pixel units: 16/255 is 16 levels) or None, got {epsilon}")
        if not step_size > 0.0:
            raise ConfigError(f"step_size must be positive, got {step_size}")
        check_int("check_every", check_every, 1)
        check_int("batch_size", batch_size, 1)
        check_int("steps", steps, 0)
        check_int("eot_samples", eot_samples, 0)
        if max_batch_size is not None:
            check_int("max_batch_size", max_batch_size, 1)
        if eot_space not in ("normalized", "pixel"):
            raise ConfigError(f"eot_space must be 'normalized' or 'pixel', got {eot_space!r}")
        if eot_samples and not eot_sigma > 0.0:
            raise ConfigError(f"eot_sigma must be positive with eot_samples > 0, got {eot_sigma}")
        self.backend = backend
        self.epsilon = None if epsilon is None else float(epsilon)
        self.step_size = float(step_size)
        self.steps = int(steps)
        self.random_start = bool(random_start)
        self.early_stop = bool(early_stop)
        self.check_every = int(check_every)
        self.eot_samples = int(eot_samples)
        self.eot_sigma = float(eot_sigma)
        self.eot_space = eot_space
        self.universal = bool(universal)
        self.batch_size = int(batch_size)
        self.max_batch_size = int(max_batch_size or getattr(backend, "max_batch_size", 8))
        self.target_eos = bool(target_eos)
        self.seed = int(seed)
        self.progress = progress

    def __repr__(self) -> str:
        eps = "None" if self.epsilon is None else f"{self.epsilon * 255:g}/255"
        eot = f", eot_samples={self.eot_samples}, eot_sigma={self.eot_sigma}" if self.eot_samples else ""
        return (f"PGDAttack(epsilon={eps}, step_size={self.step_size * 255:g}/255, steps={self.steps}, "
                f"early_stop={self.early_stop}{eot}, seed={self.seed})")

    @property
    def config(self) -> dict[str, Any]:
        """The settings, JSON-serialisable."""
        return {"attack": "pgd", "epsilon": self.epsilon, "step_size": self.step_size, "steps": self.steps,
                "random_start": self.random_start, "early_stop": self.early_stop, "check_every": self.check_every,
                "eot_samples": self.eot_samples, "eot_sigma": self.eot_sigma, "eot_space": self.eot_space,
                "universal": self.universal, "batch_size": self.batch_size, "target_eos": self.target_eos,
                "seed": self.seed}

    # -- the attack ------------------------------------------------------------------------------------------

    def run(self, image: Any, prompt: str | Sequence[str], target: str | Sequence[str] | Sequence[Sequence[str]],
            *, resume: AttackState | None = None) -> AttackResult:
        """Attack ``image`` so that the answer to ``prompt`` contains ``target``.

        image: anything :meth:`Media.image <smoothguard.Media.image>` reads (PIL, array, path, bytes, Media).
        prompt: a question, or several with ``universal=True``. target: a text, a list of texts (any of them
        counts; a batch of them per step), or one list per prompt. resume: an :class:`AttackState` from an
        earlier run with the same inputs and settings (``StepInfo.state()``), continued up to ``steps``.
        Returns an :class:`AttackResult`; raises :class:`ConfigError` for unsupported models or bad arguments.
        """
        started = time.perf_counter()
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ConfigError("prompt must be a string or a non-empty list of strings")
        if len(prompts) > 1 and not self.universal:
            raise ConfigError(f"got {len(prompts)} prompts: a universal attack (one image for several prompts) "
                              "needs PGDAttack(..., universal=True)")
        targets = normalize_targets(target, len(prompts))
        x0, original, objective, pre = self._setup(Media.image(image), prompts, targets)
        fingerprint = self._fingerprint(original, prompts, targets)
        generator = torch.Generator().manual_seed(self.seed)
        curve: list[float] = []
        first_success: int | None = None
        step = 0
        if resume is not None:
            if resume.fingerprint != fingerprint:
                raise ConfigError("the saved attack state belongs to another image, prompt, target or settings; "
                                  "resume with exactly the same ones, or start afresh")
            delta = torch.as_tensor(resume.delta, device=x0.device).clone()
            generator.set_state(torch.from_numpy(resume.rng.copy()))
            step, curve, first_success = resume.step, list(resume.loss_curve), resume.first_success
        else:
            delta = torch.zeros_like(x0)
            if self.random_start and self.epsilon is not None:
                noise = torch.rand(x0.shape, generator=generator) * 2.0 - 1.0
                delta = self._project(x0, noise.to(x0.device) * self.epsilon)
        scale = self._eot_scale()
        if scale is not None:
            with torch.no_grad():
                reference = pre(x0.unsqueeze(0))
            sample_shape = tuple(reference.shape if pre.layout == "patches" else reference.shape[1:])
        checked: tuple[Media, list[str], list[bool]] | None = None

        def snapshot() -> AttackState:
            return AttackState(delta=delta.detach().cpu().numpy().copy(), step=step, loss_curve=list(curve),
                               rng=generator.get_state().numpy().copy(), fingerprint=fingerprint,
                               first_success=first_success)

        if self.early_stop and step == 0 and resume is None:
            checked = self._check(x0, delta, prompts, targets)
            if all(checked[2]):
                first_success = 0
        done = self.early_stop and first_success is not None
        while step < self.steps and not done:
            pairs = self._sample_pairs(objective.pairs, generator)
            noise = (self.backend.pixel_noise.draw((self.eot_samples, *sample_shape), scale, generator)
                     if scale is not None else None)
            loss, grad = self._gradient(objective, pre, x0, delta, pairs, noise)
            delta = self._project(x0, delta - self.step_size * grad.sign())
            step += 1
            curve.append(loss)
            success = answers = None
            if self.early_stop and (step % self.check_every == 0 or step == self.steps):
                checked = self._check(x0, delta, prompts, targets)
                answers, success = checked[1], all(checked[2])
                if success:
                    first_success, done = step, True
            if self.progress is not None:
                self.progress(StepInfo(step=step, steps=self.steps, loss=loss, linf=float(delta.abs().max()),
                                       success=success, answers=answers, elapsed=time.perf_counter() - started,
                                       _snapshot=snapshot))
        adversarial = self._quantize(x0, delta)
        media = _media(adversarial)
        if checked is None or checked[0] != media:
            checked = self._check(x0, delta, prompts, targets)
        _, answers_final, hit = checked
        with torch.no_grad():
            reference = self.backend.build_inputs(prompts[0], [[media]])["pixel_values"]
            final_loss = objective.mean_loss(reference, chunk=self.max_batch_size)
        config = {**self.config, "family": self.backend.family.name,
                  "model": str(getattr(self.backend.model, "name_or_path", "") or type(self.backend.model).__name__)}
        return AttackResult(image=media, original=original, success=all(hit), steps=step, loss_curve=curve,
                            final_loss=final_loss, prompts=prompts, targets=targets, answers=answers_final, hit=hit,
                            linf=float((adversarial - x0).abs().max()), epsilon=self.epsilon,
                            first_success=first_success, elapsed=time.perf_counter() - started, config=config)

    # -- internals -------------------------------------------------------------------------------------------

    def _setup(self, media: Media, prompts: list[str],
               targets: list[list[str]]) -> tuple[torch.Tensor, Media, TargetObjective, Preprocessor]:
        """The clean start ``x0`` (3, H, W) at the model's resolution, rounded to 8 bits; its Media; the loss; the
        preprocessing, checked against the processor."""
        backend = self.backend
        with torch.no_grad():
            inputs = backend.build_inputs(prompts[0], [[media]])
            x0 = _round8(preprocessor_for(backend, inputs, media).view(inputs["pixel_values"]))
        original = _media(x0)
        objective = TargetObjective(backend, original, prompts, targets, target_eos=self.target_eos)
        pre = preprocessor_for(backend, objective.reference, original)
        if pre.size != tuple(x0.shape[-2:]):
            raise ConfigError(f"{backend.family.name}: the processor resizes a {x0.shape[-2]}x{x0.shape[-1]} image "
                              f"again (to {pre.size[0]}x{pre.size[1]}); the attack needs a resolution it keeps")
        pre.check(x0, objective.reference["pixel_values"])
        return x0, original, objective, pre

    def _fingerprint(self, original: Media, prompts: list[str], targets: list[list[str]]) -> str:
        digest = hashlib.sha256(original.to_array("uint8").tobytes())
        settings = {k: v for k, v in self.config.items() if k not in ("steps", "early_stop", "check_every")}
        digest.update(json.dumps([prompts, targets, settings], sort_keys=True).encode())
        return digest.hexdigest()

    def _eot_scale(self) -> torch.Tensor | None:
        """The EOT noise std per channel (3,) in normalised units, or None without EOT."""
        if not self.eot_samples:
            return None
        pixel_std = None if self.eot_space == "normalized" else (self.eot_sigma,) * 3
        return self.backend.pixel_noise.scale(self.eot_sigma, pixel_std)

    def _sample_pairs(self, pairs: list[tuple[int, str]], generator: torch.Generator) -> list[tuple[int, str]]:
        if len(pairs) <= self.batch_size:
            return pairs
        order = torch.randperm(len(pairs), generator=generator)[:self.batch_size].tolist()
        return [pairs[i] for i in order]

    def _gradient(self, objective: TargetObjective, pre: Preprocessor, x0: torch.Tensor, delta: torch.Tensor,
                  pairs: list[tuple[int, str]], noise: torch.Tensor | None) -> tuple[float, torch.Tensor]:
        """Mean loss over ``pairs`` (x EOT copies: ``noise[k]`` on one sample's pixel_values) and its gradient with
        respect to ``delta``."""
        copies = 1 if noise is None else noise.shape[0]
        items = [(pair, k) for k in range(copies) for pair in pairs]
        dtype = objective.reference["pixel_values"].dtype
        if noise is not None:
            noise = noise.to(x0.device)
        total, grad = 0.0, torch.zeros_like(delta)
        for start in range(0, len(items), self.max_batch_size):
            chunk = items[start:start + self.max_batch_size]
            leaf = delta.detach().requires_grad_(True)
            x = (x0 + leaf).unsqueeze(0).expand(len(chunk), *x0.shape)
            values = pre(x)
            if noise is not None:
                picked = noise[[k for _, k in chunk]]
                noisy = self.backend.pixel_noise.add(values.reshape(picked.shape), picked,
                                                     clamp=self.backend.noise_space == "pixel")
                values = noisy.reshape(values.shape)
            loss = objective.losses(values.to(dtype), [pair for pair, _ in chunk]).sum() / len(items)
            (part,) = torch.autograd.grad(loss, leaf)
            grad += part
            total += float(loss.detach())
        return total, grad

    def _project(self, x0: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        if self.epsilon is not None:
            delta = delta.clamp(-self.epsilon, self.epsilon)
        return ((x0 + delta).clamp(0.0, 1.0) - x0).detach()

    def _quantize(self, x0: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """``x0 + delta`` rounded to 8 bits, kept within epsilon of ``x0`` (``x0`` is on the 8-bit grid)."""
        x = torch.round((x0 + delta) * 255.0)
        if self.epsilon is not None:
            levels = self.epsilon * 255.0
            base = torch.round(x0 * 255.0)
            x = torch.minimum(torch.maximum(x, base - math.floor(levels + 1e-4)), base + math.floor(levels + 1e-4))
        return x.clamp(0.0, 255.0) / 255.0

    def _check(self, x0: torch.Tensor, delta: torch.Tensor, prompts: list[str],
               targets: list[list[str]]) -> tuple[Media, list[str], list[bool]]:
        """Greedy answers for the 8-bit image through the backend's standard pipeline."""
        media = _media(self._quantize(x0, delta))
        answers = []
        for p in prompts:
            answer = self.backend.generate(p, [[media]])[0]
            if isinstance(answer, BaseException):
                raise answer
            answers.append(answer)
        return media, answers, [hits(a, t) for a, t in zip(answers, targets, strict=True)]


def _round8(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x.float() * 255.0) / 255.0


def _media(x: torch.Tensor) -> Media:
    """A ``(3, H, W)`` tensor in [0, 1] as an image Media (float32 HWC)."""
    return Media.image(np.ascontiguousarray(x.detach().float().cpu().permute(1, 2, 0).numpy()))
