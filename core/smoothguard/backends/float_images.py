"""Feeding float [0, 1] images through transformers' PIL image processors without quantising them.

The ``*ImageProcessorPil`` classes (used when torchvision is absent) resize through PIL in 8 bits: a float image
is multiplied by 255 and truncated to uint8, so pixel noise would lose everything below 1/255 and be biased
down by half a step. :func:`float_resizing` returns a copy of such an image processor whose resize splits a float
image ``x`` into its nearest 8-bit image ``q = rint(255 x) / 255`` and the residual ``x - q`` (at most half a
step): ``q`` goes through the processor's own 8-bit resize, unchanged, and the residual through the same PIL
filter in float32 (mode ``"F"``), and the two are added. So a clean image (``x == q``) is processed bit for bit as
the stock processor processes it, and noise keeps its float values (exactly when no resize is needed, as for
Qwen images whose sides are multiples of 28; up to PIL's 8-bit rounding otherwise). Torch-backend image
processors already work in float and are returned unchanged.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

import numpy as np
from PIL import Image
from transformers.image_utils import PILImageResampling

try:
    from transformers.image_processing_backends import PilBackend
except ImportError:  # transformers without the PIL/torchvision backend split: processors are left as they are
    PilBackend = None

__all__ = ["float_resizing", "resize_float"]


def resize_float(image: np.ndarray, height: int, width: int, resample: Any) -> np.ndarray:
    """Resize a channel-first float image ``(C, H, W)`` to ``(C, height, width)`` in float32, unclipped."""
    if image.shape[-2:] == (height, width):
        return image.astype(np.float32, copy=True)
    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(c, dtype=np.float32), mode="F")
                                .resize((width, height), resample=resample)) for c in image])


class _FloatResize(PilBackend or object):  # type: ignore[misc]
    """Inserted between a PIL image processor class and ``PilBackend``: float images keep sub-8-bit detail."""

    def resize(self, image: np.ndarray, size: Any, resample: Any = None, reducing_gap: int | None = None,
               **kwargs: Any) -> np.ndarray:
        image = np.asarray(image)
        if not np.issubdtype(image.dtype, np.floating) or image.min() < 0.0 or image.max() > 1.0:
            return super().resize(image, size, resample=resample, reducing_gap=reducing_gap, **kwargs)
        steps = np.rint(image * 255.0)
        base = super().resize(steps.astype(np.uint8), size, resample=resample, reducing_gap=reducing_gap, **kwargs)
        out = np.asarray(base, dtype=np.float32) / np.float32(255.0)
        residual = (image - steps / 255.0).astype(np.float32)
        if np.any(residual):
            if not isinstance(resample, (PILImageResampling, int)):
                resample = PILImageResampling.BILINEAR
            out += resize_float(residual, *out.shape[-2:], resample)
            np.clip(out, 0.0, 1.0, out=out)
        return out


@functools.cache
def _float_class(cls: type) -> type:
    return type(cls.__name__, (cls, _FloatResize), {"__module__": cls.__module__, "__doc__": cls.__doc__})


def float_resizing(image_processor: Any) -> Any:
    """A shallow copy of ``image_processor`` whose resize keeps float images' sub-8-bit values (PIL backends
    only); any other image processor is returned as is."""
    if PilBackend is None or not isinstance(image_processor, PilBackend) or isinstance(image_processor, _FloatResize):
        return image_processor
    clone = copy.copy(image_processor)
    clone.__class__ = _float_class(type(image_processor))
    return clone
