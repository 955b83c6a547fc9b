"""Seeded Gaussian perturbation of images and audio.

Every variant draws from its own ``numpy.random.Generator`` derived from ``(entropy, variant index)``, so
variant ``i`` is the same whether it is drawn alone, in a batch, or in a later adaptive round, and no global
random state is ever touched.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from smoothguard.config import CLIP_STD
from smoothguard.media import Media

__all__ = ["LazyVariants", "TensorNoise", "add_audio_noise", "add_image_noise", "make_variants", "pixel_sigma",
           "variant_rng"]


def pixel_sigma(sigma: float, space: str = "normalized", channel_std: Sequence[float] | None = None) -> np.ndarray:
    """Noise std per channel in [0, 1] pixel units, shape (3,).

    ``space="normalized"``: ``sigma * std_c`` (``channel_std``, default CLIP's), so that ``sigma`` means what it
    means in the paper, where noise was added to the processor-normalised tensor. ``space="pixel"``: ``sigma``.
    """
    if space == "pixel":
        return np.full(3, sigma, dtype=np.float32)
    std = np.asarray(CLIP_STD if channel_std is None else channel_std, dtype=np.float32)
    return (sigma * std).astype(np.float32)


def add_image_noise(pixels: np.ndarray, std: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``clip(pixels + N(0, std_c^2), 0, 1)`` for ``pixels`` (H, W, 3) float32 in [0, 1]; a new array."""
    noisy = rng.standard_normal(pixels.shape, dtype=np.float32)
    noisy *= std
    noisy += pixels
    return np.clip(noisy, 0.0, 1.0, out=noisy)


def add_audio_noise(wave: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """``clip(wave + N(0, std^2), -1, 1)`` for a float32 waveform of any shape in [-1, 1]; a new array."""
    noisy = rng.standard_normal(wave.shape, dtype=np.float32)
    noisy *= np.float32(std)
    noisy += wave
    return np.clip(noisy, -1.0, 1.0, out=noisy)


def variant_rng(entropy: int, index: int) -> np.random.Generator:
    """The generator of variant ``index`` for a request whose noise entropy is ``entropy``."""
    return np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=(index,)))


#: below this many noise values per call, drawing them in one thread is faster than starting a pool
_PARALLEL_MIN_VALUES = 1 << 20


def make_variants(
    media: Sequence[Media],
    indices: Sequence[int],
    *,
    entropy: int,
    image_std: np.ndarray | None,
    audio_std: float,
    include_original: bool = True,
    workers: int | None = None,
) -> list[list[Media]]:
    """One list of media per variant index. Index 0 is the untouched input when ``include_original``.

    image_std: per-channel pixel std, shape (3,) (see :func:`pixel_sigma`), or None to leave images as they
    are (a backend adding :class:`TensorNoise` itself); audio_std: waveform std.
    The input media are never modified; noisy variants are new :class:`Media`: images as PNG (lossless, whatever
    the source format), audio in the source's format, rate and sample format.
    workers: threads drawing the variants (numpy's generators release the GIL); default: one per CPU, and one
    for calls of fewer than about a million noise values. Every variant has its own generator, so the result
    does not depend on it.
    """
    indices = list(indices)
    noisy = LazyVariants(media, indices, entropy=entropy, image_std=image_std, audio_std=audio_std,
                         include_original=include_original).variant

    if workers is None:
        values = sum(item.data.size for item in media) * len(indices)
        workers = (os.cpu_count() or 1) if values >= _PARALLEL_MIN_VALUES else 1
    elif isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer or None, got {workers!r}")
    workers = min(workers, len(indices))
    if workers <= 1:
        return [noisy(index) for index in indices]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="smoothguard-noise") as pool:
        return list(pool.map(noisy, indices))


class LazyVariants(Sequence[list[Media]]):
    """The variants ``indices`` of ``media`` (as :func:`make_variants`), each drawn when it is read and not kept.

    A consumer that reads each variant once (encodes it, sends it, drops it) holds one noisy copy at a time
    instead of all of them: for 15 copies of 32 MP of images, 0.4 GB of float32 instead of 5.8 GB. Reading a
    variant again draws it again, identically (its generator is seeded by ``(entropy, index)``).
    """

    def __init__(self, media: Sequence[Media], indices: Sequence[int], *, entropy: int, image_std: np.ndarray | None,
                 audio_std: float, include_original: bool = True) -> None:
        self.media, self.indices = list(media), list(indices)
        self.entropy, self.image_std, self.audio_std = entropy, image_std, audio_std
        self.include_original = include_original

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: Any) -> Any:
        if isinstance(k, slice):
            return [self.variant(index) for index in self.indices[k]]
        return self.variant(self.indices[k])

    def variant(self, index: int) -> list[Media]:
        """The media of variant ``index`` (the call's own index, not a position in this sequence)."""
        if index == 0 and self.include_original:
            return list(self.media)
        rng = variant_rng(self.entropy, index)
        out = []
        for item in self.media:
            if item.kind == "image" and self.image_std is None:
                out.append(item)
            elif item.kind == "image":  # written lossless whatever the source format: the noise arrives exactly
                out.append(Media._make("image", add_image_noise(item.data, self.image_std, rng), "png",
                                       source_size=item.source_size))
            else:
                out.append(Media._make("audio", add_audio_noise(item.data, self.audio_std, rng), item.format,
                                       sample_rate=item.sample_rate, wav_subtype=item.wav_subtype))
        return out


@dataclass(frozen=True)
class TensorNoise:
    """Noise a backend adds itself to the tensors its model consumes, after its processor's geometry.

    The guard passes clean media and this; the backend adds, to variant ``i``'s ``pixel_values``, noise of std
    ``sigma`` in normalised units (or ``pixel_std`` per channel in [0, 1] pixels, divided by its processor's
    std: ``sigma_space="pixel"`` or an explicit ``channel_std``), and ``audio_sigma`` to its waveforms after
    the mix to mono and the resampling to its feature extractor's rate. ``seeds[i]`` belongs to the ``i``-th
    variant of the call; None means leave it clean (the original).
    """

    sigma: float
    seeds: tuple[int | None, ...]
    pixel_std: tuple[float, float, float] | None = None
    audio_sigma: float = 0.0

    def sample(self, i: int, shape: tuple[int, ...]) -> np.ndarray | None:
        """The noise of variant ``i``, float32 of ``shape`` (std ``sigma``), or None for a clean variant."""
        seed = self.seeds[i]
        if seed is None:
            return None
        return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32) * np.float32(self.sigma)

    def generator(self, i: int, device: Any = "cpu") -> Any:
        """A ``torch.Generator`` on ``device`` seeded for variant ``i``, or None for a clean variant."""
        seed = self.seeds[i]
        if seed is None:
            return None
        import torch

        return torch.Generator(device=device).manual_seed(seed)

    @classmethod
    def for_variants(cls, sigma: float, entropy: int, indices: Sequence[int], include_original: bool, *,
                     pixel_std: Sequence[float] | None = None, audio_sigma: float = 0.0) -> TensorNoise:
        """The noise of the variants ``indices`` of a request with noise ``entropy``."""
        seeds = tuple(
            None if (index == 0 and include_original)
            else int(np.random.SeedSequence(entropy, spawn_key=(index, 1)).generate_state(1, np.uint64)[0])
            for index in indices
        )
        std = None if pixel_std is None else tuple(float(s) for s in pixel_std)
        return cls(sigma=sigma, seeds=seeds, pixel_std=std, audio_sigma=float(audio_sigma))
