"""Measure an image on any backend: greedy answers per prompt, whether they contain the targets, target NLL.

Use it for transfer attacks (an image crafted on one model, evaluated on another, as in the paper, whose attack
image was made for MiniGPT-4) and to re-check a saved PNG. The image goes through the backend's standard
pipeline, resized by its processor as any user image would be.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from smoothguard.attacks.result import Evaluation, hits
from smoothguard.attacks.targets import normalize_targets
from smoothguard.errors import ConfigError
from smoothguard.media import Media

__all__ = ["evaluate"]


def evaluate(backend: Any, image: Any, prompt: str | Sequence[str],
             target: str | Sequence[str] | Sequence[Sequence[str]], *, loss: bool = True,
             target_eos: bool = True) -> Evaluation:
    """The greedy answers of ``backend`` to ``image`` for each prompt, and whether each contains a target.

    backend: an ``HFVisionLanguageModel`` (``loss=False``: any :class:`~smoothguard.backends.Backend`);
    image: anything ``Media.image`` reads (e.g. ``res.image`` or a saved PNG); prompt, target: as in
    ``PGDAttack.run``. loss: also compute the mean teacher-forced NLL of the targets (needs torch).
    """
    media = Media.image(image)
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    if not prompts:
        raise ConfigError("give at least one prompt")
    targets = normalize_targets(target, len(prompts))
    answers = []
    for p in prompts:
        answer = backend.generate(p, [[media]])[0]
        if isinstance(answer, BaseException):
            raise answer
        answers.append(answer)
    value = None
    if loss:
        from smoothguard.attacks.objective import TargetObjective

        objective = TargetObjective(backend, media, prompts, targets, target_eos=target_eos)
        value = objective.mean_loss(objective.reference["pixel_values"], chunk=getattr(backend, "max_batch_size", 8))
    return Evaluation(prompts=prompts, targets=targets, answers=answers,
                      hit=[hits(a, t) for a, t in zip(answers, targets, strict=True)], loss=value)
