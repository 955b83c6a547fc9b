"""Model backends: anything that answers one prompt for a batch of media variants.

``HFVisionLanguageModel`` (Hugging Face transformers, one batched ``generate`` for all variants) arrives in
``smoothguard.backends.hf``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from smoothguard.media import Media

__all__ = ["Backend"]


@runtime_checkable
class Backend(Protocol):
    """A model that answers ``prompt`` once per variant.

    ``variants[i]`` is the list of media (images, audio) of candidate ``i``, in the order the request gave
    them. Return one entry per variant: the answer text, or the exception that candidate raised (a backend
    may also raise, failing every candidate). A backend may expose ``pixel_std``: its processor's
    per-channel normalisation std (R, G, B), which gives ``sigma`` the paper's meaning.

    A backend whose ``noise_space`` attribute is ``"normalized"`` receives clean images and a keyword
    ``tensor_noise`` (:class:`~smoothguard.noise.TensorNoise`), and adds that noise to its processor's
    normalised tensor itself, unclamped, as the paper's code did.
    """

    def generate(self, prompt: str, variants: Sequence[Sequence[Media]]) -> list[str | BaseException]: ...

    async def agenerate(self, prompt: str, variants: Sequence[Sequence[Media]]) -> list[str | BaseException]: ...
