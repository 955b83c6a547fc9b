"""The testbed: a tiny VLM that really looks at images, trained by the project on generated shape images.

- :mod:`~smoothguard.testbed.data` — the task: :func:`make_image`, :func:`make_example`, the exact question
  and answer templates (:data:`TASK_QUESTIONS`, :data:`ANSWER_TEMPLATES`). numpy + PIL only.
- :mod:`~smoothguard.testbed.model` — tokenizer, ``LlavaProcessor`` and ``LlavaForConditionalGeneration``
  built in code (configs ``"main"`` and ``"surrogate"``), fp16 export and offline loading.
- the trainer is outside the package: ``training/train.py`` (``PYTHONPATH=core python training/train.py``);
  ``training/train_gpu.sh`` trains both.
- :mod:`~smoothguard.testbed.evaluate` — held-out accuracy per question kind and under noise.
- :mod:`~smoothguard.testbed.audio_data` — the audio task: beep clips (:func:`make_clip`, :func:`make_audio_example`),
  the exact questions and answers (:data:`AUDIO_QUESTIONS`, :data:`AUDIO_ANSWERS`). numpy only.
- :mod:`~smoothguard.testbed.audio_model` — the audio testbed, a tiny ``Qwen2AudioForConditionalGeneration``
  (``load_testbed("audio")``); trained by ``training/audio_train.py``.
- :mod:`~smoothguard.testbed.shipped` — :func:`load_testbed` (``"main"`` or ``"surrogate"``: the shipped weights as
  an ``HFVisionLanguageModel``, offline, CPU), :func:`weights_available`, :func:`load_testbed_from` (any
  ``save_testbed`` directory).

Importing this package is light: torch and transformers load only when a model-side name is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from smoothguard.testbed.audio_data import (
        AUDIO_ANSWERS,
        AUDIO_KINDS,
        AUDIO_QUESTIONS,
        AudioExample,
        Clip,
        make_audio_example,
        make_clip,
    )
    from smoothguard.testbed.data import (
        ANSWER_TEMPLATES,
        COLOURS,
        KIND_WEIGHTS,
        KINDS,
        SHAPES,
        TASK_QUESTIONS,
        Example,
        Shape,
        all_texts,
        describe,
        make_example,
        make_image,
    )
    from smoothguard.testbed.model import CONFIGS, build_model, build_processor, build_tokenizer, load_testbed_dir
    from smoothguard.testbed.shipped import load_testbed, load_testbed_from, weights_available, weights_dir

_LAZY = {
    **{
        name: "audio_data"
        for name in ("AUDIO_ANSWERS", "AUDIO_KINDS", "AUDIO_QUESTIONS", "AudioExample", "Clip", "make_audio_example",
                     "make_clip")
    },
    **{
        name: "data"
        for name in (
            "ANSWER_TEMPLATES", "COLOURS", "KINDS", "KIND_WEIGHTS", "SHAPES", "TASK_QUESTIONS", "Example", "Shape",
            "all_texts", "describe", "make_example", "make_image",
        )
    },
    **{name: "model" for name in ("CONFIGS", "build_model", "build_processor", "build_tokenizer", "load_testbed_dir")},
    **{name: "shipped" for name in ("load_testbed", "load_testbed_from", "weights_available", "weights_dir")},
}

__all__ = [
    "ANSWER_TEMPLATES",
    "AUDIO_ANSWERS",
    "AUDIO_KINDS",
    "AUDIO_QUESTIONS",
    "COLOURS",
    "CONFIGS",
    "KINDS",
    "KIND_WEIGHTS",
    "SHAPES",
    "TASK_QUESTIONS",
    "AudioExample",
    "Clip",
    "Example",
    "Shape",
    "all_texts",
    "build_model",
    "build_processor",
    "build_tokenizer",
    "describe",
    "load_testbed",
    "load_testbed_dir",
    "load_testbed_from",
    "make_audio_example",
    "make_clip",
    "make_example",
    "make_image",
    "weights_available",
    "weights_dir",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'smoothguard.testbed' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"smoothguard.testbed.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
