"""Model backends: anything that answers one prompt for a batch of media variants.

``HFVisionLanguageModel`` and ``HFAudioLanguageModel`` (Hugging Face transformers, one batched ``generate`` for
all variants; :mod:`smoothguard.backends.hf`) are imported on first use, so importing this package loads
neither torch nor transformers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from smoothguard.media import Media

if TYPE_CHECKING:
    from smoothguard.backends.hf import HFAudioLanguageModel, HFVisionLanguageModel

__all__ = ["Backend", "HFAudioLanguageModel", "HFVisionLanguageModel"]

_LAZY = {"HFVisionLanguageModel": "smoothguard.backends.hf", "HFAudioLanguageModel": "smoothguard.backends.hf"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    try:
        value = getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise ImportError(f"{name} needs transformers and torch: pip install 'smoothguard[hf]' ({exc})") from exc
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


@runtime_checkable
class Backend(Protocol):
    """A model that answers ``prompt`` once per variant.

    ``variants[i]`` is the list of media (images, audio) of candidate ``i``, in the order the request gave
    them. Return one entry per variant: the answer text, or the exception that candidate raised (a backend
    may also raise, failing every candidate). A backend may expose ``pixel_std``: its processor's
    per-channel normalisation std (R, G, B), which gives ``sigma`` the paper's meaning.

    A backend whose ``adds_noise`` attribute is True (the Hugging Face backends) receives the clean media (the
    same objects for every variant) and a keyword ``tensor_noise`` (:class:`~smoothguard.noise.TensorNoise`),
    and adds the noise itself, after its own preprocessing, where its model looks; it may also implement
    ``noise_sites(prompt, media)`` (where it draws it, for :attr:`GuardResult.noise`). A backend whose
    ``noise_space`` is ``"normalized"`` (the older protocol) receives clean images and ``tensor_noise`` too, and
    noisy audio.
    """

    def generate(self, prompt: str, variants: Sequence[Sequence[Media]]) -> list[str | BaseException]: ...

    async def agenerate(self, prompt: str, variants: Sequence[Sequence[Media]]) -> list[str | BaseException]: ...
