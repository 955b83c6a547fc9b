"""Noise on the tensors a model consumes: ``pixel_values`` after every geometric step of its processor.

A processor resizes, crops, tiles and patches an image before the model sees it; noise drawn before that is
averaged away by every resampling (a 4032x3024 photo brought to 336 px keeps a tenth of it). So the noise goes
on the processor's output, per view and tile, in normalised units: ``pixel_values + s_c * z`` with ``z ~ N(0, 1)``
and ``s_c`` the std per channel (``sigma``, or a [0, 1] pixel std divided by the processor's ``std_c``).

``clamp=True`` keeps every noisy value inside the image range, ``[(0 - mean_c) / std_c, (1 - mean_c) / std_c]``,
which is exactly ``clip(x + std_c * s_c * z, 0, 1)`` in [0, 1] pixels; ``clamp=False`` is the paper's unclamped
normalised-space noise. Qwen2-VL lays each patch out as ``(C, T, P, P)`` with the frame repeated over ``T``
(``temporal_patch_size``): one noise per patch is shared by its ``T`` copies, so both spaces mean the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["PixelNoise"]


class PixelNoise:
    """How one backend adds noise to a view of its ``pixel_values``.

    layout: the family's layout (``"patches"``, ``"images"``, ``"tiles"``); mean, std: the processor's
    normalisation per channel (R, G, B; None: no normalisation); temporal: Qwen's ``temporal_patch_size``.
    """

    def __init__(self, layout: str, mean: Sequence[float] | None, std: Sequence[float] | None,
                 temporal: int = 1) -> None:
        self.layout = layout
        self.mean = torch.tensor(list(mean) if mean is not None else [0.0] * 3, dtype=torch.float32)
        self.std = torch.tensor(list(std) if std is not None else [1.0] * 3, dtype=torch.float32)
        self.temporal = int(temporal)

    def scale(self, sigma: float, pixel_std: Sequence[float] | None) -> torch.Tensor:
        """The noise std per channel in normalised units, shape (3,): ``sigma``, or ``pixel_std / std_c``."""
        if pixel_std is None:
            return torch.full((3,), float(sigma), dtype=torch.float32)
        return torch.tensor(list(pixel_std), dtype=torch.float32) / self.std

    def draw(self, shape: Sequence[int], scale: torch.Tensor, generator: torch.Generator | None,
             device: Any = "cpu") -> torch.Tensor:
        """Noise of std ``scale`` (3,) per channel for pixel_values of ``shape`` (float32 on ``device``).

        ``shape``: ``(..., 3 * T * P * P)`` for patches (one draw per patch, repeated over ``T``), else
        ``(..., 3, H, W)``; any leading dimensions (samples, tiles) get independent noise.
        """
        shape = tuple(shape)
        if self.layout == "patches":
            per_frame = shape[-1] // (3 * self.temporal)
            z = torch.randn((*shape[:-1], 3, 1, per_frame), generator=generator, device=device)
            z = z.expand(*shape[:-1], 3, self.temporal, per_frame)
        else:
            z = torch.randn(shape, generator=generator, device=device)
        return (z * scale.to(device).view(3, 1, 1)).reshape(shape)

    def add(self, values: torch.Tensor, noise: torch.Tensor, *, clamp: bool) -> torch.Tensor:
        """``values + noise``, clamped per channel to the image range when ``clamp`` (differentiable in
        ``values``, so the attack's EOT uses it too); a new tensor of ``values``' shape and dtype."""
        out = values + noise.to(values.dtype)
        if not clamp:
            return out
        shaped = out.view(*out.shape[:-1], 3, self.temporal, -1) if self.layout == "patches" else out
        low = (-self.mean / self.std).to(out.device, out.dtype).view(3, 1, 1)
        high = ((1.0 - self.mean) / self.std).to(out.device, out.dtype).view(3, 1, 1)
        return torch.clamp(shaped, low, high).reshape(values.shape)

    @classmethod
    def for_processor(cls, layout: str, image_processor: Any) -> PixelNoise:
        """The noise of a family ``layout`` fed by ``image_processor`` (its mean, std and temporal patch size)."""
        normalize = getattr(image_processor, "do_normalize", True) is not False
        mean = _three(getattr(image_processor, "image_mean", None)) if normalize else None
        std = _three(getattr(image_processor, "image_std", None)) if normalize else None
        return cls(layout, mean, std, getattr(image_processor, "temporal_patch_size", 1) or 1)


def _three(values: Any) -> list[float] | None:
    if values is None:
        return None
    flat = [float(v) for v in (values if isinstance(values, (list, tuple)) else [values])]
    return flat * 3 if len(flat) == 1 else flat[:3]
