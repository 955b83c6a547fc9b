"""Shared inputs for the Hugging Face backend tests: tiny models (tests/fakes/tiny_models.py), images, clips."""

from __future__ import annotations

import functools

import numpy as np
from fakes.tiny_models import BUILDERS

from smoothguard import Media

#: (height, width) of a natural image for each family (multiples of 28 for Qwen: no resize)
SIZES = {"qwen2_5_vl": (56, 56), "qwen2_vl": (56, 56), "llava": (32, 32), "llava_next": (32, 48),
         "idefics3": (64, 64), "smolvlm": (64, 64), "blip2": (32, 32)}
PROMPT = "Describe the picture in detail, please."


@functools.cache
def tiny(name: str):
    """(model, processor) of the tiny ``name`` model, built once per session; do not patch it (use BUILDERS)."""
    return BUILDERS[name]()


def backend(name: str, **settings):
    from smoothguard.backends import HFVisionLanguageModel

    model, processor = tiny(name)
    return HFVisionLanguageModel(model, processor, **{"max_new_tokens": 8, **settings})


def image(name: str = "qwen2_vl", seed: int = 0, size: tuple[int, int] | None = None) -> Media:
    """A random RGB image (float32 in [0, 1]) of the family's natural size."""
    h, w = size or SIZES[name]
    return Media.image(np.random.default_rng(seed).random((h, w, 3), dtype=np.float32))


def clip(seed: int = 0, rate: int = 16000, seconds: float = 1.0, channels: int = 1) -> Media:
    """A random waveform in [-0.5, 0.5]."""
    shape = (int(rate * seconds),) if channels == 1 else (int(rate * seconds), channels)
    return Media.audio(np.random.default_rng(seed).uniform(-0.5, 0.5, shape).astype(np.float32), sample_rate=rate)


def one_by_one(b, prompt, variants, **kwargs):
    return [b.generate(prompt, [v], **kwargs)[0] for v in variants]
