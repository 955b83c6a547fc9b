"""Shared inputs for the attack tests: tiny random-weight models (tests/fakes/tiny_models.py) and images."""

from __future__ import annotations

import functools

import numpy as np
from fakes.tiny_models import BUILDERS

from smoothguard import Media

#: (height, width) of a test image per family: Qwen at a no-resize size, the others a little off their own size
SIZES = {"qwen2_5_vl": (56, 84), "qwen2_vl": (56, 56), "llava": (40, 40), "llava_next": (32, 64),
         "idefics3": (48, 64), "smolvlm": (64, 64), "blip2": (36, 30)}
PROMPT = "Is there a red circle in the image?"


@functools.cache
def tiny(name: str):
    """(model, processor) of the tiny ``name`` model, built once per session; do not modify it."""
    return BUILDERS[name]()


@functools.cache
def backend(name: str, max_new_tokens: int = 4):
    from smoothguard.backends import HFVisionLanguageModel

    model, processor = tiny(name)
    return HFVisionLanguageModel(model, processor, max_new_tokens=max_new_tokens)


def image(name: str = "llava", seed: int = 0, size: tuple[int, int] | None = None) -> Media:
    """A random 8-bit RGB image of the family's test size."""
    h, w = size or SIZES[name]
    return Media.image(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))
