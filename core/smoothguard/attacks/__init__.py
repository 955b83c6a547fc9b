"""Adversarial images for Hugging Face vision-language models: targeted PGD and EOT-PGD.

>>> from smoothguard.attacks import PGDAttack
>>> attack = PGDAttack(backend, epsilon=16/255, step_size=1/255, steps=100, early_stop=False, eot_samples=0, seed=0)
>>> res = attack.run(image, prompt="Is there a red circle in the image?", target="Yes.")
>>> res.image, res.success, res.steps, res.loss_curve
>>> res.save("adv.png")

- :class:`AudioPGDAttack` (:mod:`.audio`): the same on the waveform of audio-language models (Qwen2-Audio),
  L-infinity in [-1, 1] units with the SNR reported, through a differentiable log-mel front end (:class:`LogMel`).
- :class:`PGDAttack` (:mod:`.pgd`): L-infinity PGD in [0, 1] pixel space at the model's post-resize resolution,
  through differentiable preprocessing (:mod:`.preprocess`); EOT over the guard's noise with ``eot_samples``.
- :class:`AttackResult`, :class:`StepInfo`, :class:`AttackState`, :class:`Evaluation` (:mod:`.result`).
- :func:`evaluate`: answers and success of an image on any backend (transfer attacks, saved PNGs).
- :data:`DEFAULT_TARGETS`, :func:`load_targets` (:mod:`.targets`): a small target list and a CSV loader.

Supported families: Qwen2.5-VL, Qwen2-VL, LLaVA-1.5, BLIP-2 (exact preprocessing), LLaVA-NeXT, Idefics3 and
SmolVLM (tiles exact, the resized overview/global tile to 8-bit precision); see ``preprocess.SUPPORTED``.
Names load lazily: ``import smoothguard.attacks`` is light, torch loads with the first torch-side name.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from smoothguard.attacks.audio import AudioAttackResult, AudioPGDAttack, LogMel, audio_testbed_target
    from smoothguard.attacks.evaluate import evaluate
    from smoothguard.attacks.pgd import PGDAttack
    from smoothguard.attacks.preprocess import SUPPORTED, Preprocessor, preprocessor_for
    from smoothguard.attacks.result import AttackResult, AttackState, Evaluation, StepInfo
    from smoothguard.attacks.targets import DEFAULT_TARGETS, SHAPE_TARGETS, load_targets

__all__ = [
    "DEFAULT_TARGETS",
    "SHAPE_TARGETS",
    "SUPPORTED",
    "AttackResult",
    "AttackState",
    "AudioAttackResult",
    "AudioPGDAttack",
    "Evaluation",
    "LogMel",
    "PGDAttack",
    "Preprocessor",
    "StepInfo",
    "audio_testbed_target",
    "evaluate",
    "load_targets",
    "preprocessor_for",
]

_LAZY = {
    "AudioPGDAttack": "audio",
    "AudioAttackResult": "audio",
    "LogMel": "audio",
    "audio_testbed_target": "audio",
    "PGDAttack": "pgd",
    "evaluate": "evaluate",
    "SUPPORTED": "preprocess",
    "Preprocessor": "preprocess",
    "preprocessor_for": "preprocess",
    "AttackResult": "result",
    "AttackState": "result",
    "Evaluation": "result",
    "StepInfo": "result",
    "DEFAULT_TARGETS": "targets",
    "SHAPE_TARGETS": "targets",
    "load_targets": "targets",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    except ImportError as exc:
        raise ImportError(f"smoothguard.attacks.{name} needs torch and transformers: pip install 'smoothguard[hf]' "
                          f"({exc})") from exc
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
