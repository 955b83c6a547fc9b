"""Differentiable image preprocessing: [0, 1] pixels -> the ``pixel_values`` a model's processor would give.

The attack variable is an RGB image ``x`` of shape ``(3, H, W)`` in [0, 1] at the model's *post-resize*
resolution, the size at which the processor has nothing left to resize. :func:`preprocessor_for` finds that
resolution from the processor's own output for the user's image and returns a :class:`Preprocessor` that maps a
batch ``(B, 3, H, W)`` to ``pixel_values`` for ``B`` one-image samples, in torch, so gradients reach ``x``:

* Qwen2-VL / Qwen2.5-VL (``"patches"``): normalise, duplicate the frame ``temporal_patch_size`` times, cut
  ``patch_size`` patches with each row laid out ``(C, T, P, P)`` and the rows ordered by ``merge_size`` x
  ``merge_size`` windows, exactly as ``Qwen2VLImageProcessor``: ``(B * grid_h * grid_w, C * T * P * P)``.
* LLaVA-1.5, BLIP-2 (``"images"``): normalise: ``(B, 3, H, W)``.
* LLaVA-NeXT (anyres): the variable lives at the selected grid pinpoint (the processor's letterboxed view of the
  image); tiles are crops of it and the overview tile is a resize: ``(B, 1 + tiles, 3, h, w)``.
* Idefics3 / SmolVLM (image splitting): the variable is the image resized for the vision encoder (sides
  multiples of ``max_image_size``); tiles are crops, plus a resized global view: ``(B, tiles (+1), 3, h, w)``.

Resizes inside the graph (the LLaVA-NeXT overview, the Idefics3 global view) are :func:`pil_resize_matrix`
products, which reproduce PIL's resampling of float images (mode ``"F"``) to 1e-7; the processors resize
8-bit images, so there the match is to 8-bit precision (about one level, 1/255) instead of exact. Everything
else matches the processor to float precision. :meth:`Preprocessor.check` verifies the match against the real
processor before an attack starts, so a processor configuration this module does not reproduce is an error,
never a silently wrong gradient.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from smoothguard.errors import ConfigError
from smoothguard.media import Media

__all__ = ["SUPPORTED", "Preprocessor", "pil_resize_matrix", "preprocessor_for"]

#: families (``Family.name``) the attack supports, and how
SUPPORTED: dict[str, str] = {
    "Qwen2.5-VL": "exact (differentiable patchify)",
    "Qwen2-VL": "exact (differentiable patchify)",
    "LLaVA-1.5": "exact (normalisation)",
    "BLIP-2": "exact (normalisation)",
    "LLaVA-NeXT": "tiles exact, overview tile to 8-bit precision (PIL-exact float resize)",
    "Idefics3": "tiles exact, global view to 8-bit precision (PIL-exact float resize); image splitting on",
    "SmolVLM": "tiles exact, global view to 8-bit precision (PIL-exact float resize); image splitting on",
}

# -- PIL's resampling filters, as in Pillow's Resample.c -----------------------------------------------------


def _bicubic(x: float, a: float = -0.5) -> float:
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    if x < 2.0:
        return (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return 0.0


def _sinc(x: float) -> float:
    if x == 0.0:
        return 1.0
    x *= math.pi
    return math.sin(x) / x


def _lanczos(x: float) -> float:
    return _sinc(x) * _sinc(x / 3.0) if -3.0 <= x < 3.0 else 0.0


def _bilinear(x: float) -> float:
    x = abs(x)
    return 1.0 - x if x < 1.0 else 0.0


def _box(x: float) -> float:
    return 1.0 if -0.5 < x <= 0.5 else 0.0


def _hamming(x: float) -> float:
    x = abs(x)
    if x == 0.0:
        return 1.0
    if x >= 1.0:
        return 0.0
    x *= math.pi
    return math.sin(x) / x * (0.54 + 0.46 * math.cos(x))


# PIL resample code -> (filter, support): 1 LANCZOS, 2 BILINEAR, 3 BICUBIC, 4 BOX, 5 HAMMING (0 NEAREST: none)
_FILTERS = {1: (_lanczos, 3.0), 2: (_bilinear, 1.0), 3: (_bicubic, 2.0), 4: (_box, 0.5), 5: (_hamming, 1.0)}
_FILTER_NAMES = {0: "NEAREST", 1: "LANCZOS", 2: "BILINEAR", 3: "BICUBIC", 4: "BOX", 5: "HAMMING"}


@functools.cache
def pil_resize_matrix(in_size: int, out_size: int, resample: int) -> np.ndarray:
    """The ``(out_size, in_size)`` matrix of PIL's 1-D resampling (float64): ``out = M @ in`` along one axis.

    PIL resizes an image separably, so ``resize(x) = M_h @ x @ M_w.T`` per channel; for float images (mode
    ``"F"``) this reproduces ``Image.resize`` to float precision. resample: PIL's code (1 LANCZOS, 2 BILINEAR,
    3 BICUBIC, 4 BOX, 5 HAMMING).
    """
    if resample not in _FILTERS:
        raise ConfigError(f"the attack cannot differentiate PIL resample {_FILTER_NAMES.get(resample, resample)}; "
                          "supported: LANCZOS, BILINEAR, BICUBIC, BOX, HAMMING")
    kernel, base_support = _FILTERS[resample]
    scale = in_size / out_size
    filter_scale = max(scale, 1.0)
    support = base_support * filter_scale
    matrix = np.zeros((out_size, in_size))
    for out in range(out_size):
        center = (out + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        weights = [kernel((i - center + 0.5) / filter_scale) for i in range(lo, hi)]
        total = sum(weights)
        matrix[out, lo:hi] = [w / total for w in weights] if total != 0.0 else weights
    return matrix


def _resample_code(image_processor: Any) -> int:
    resample = getattr(image_processor, "resample", 3)
    return int(getattr(resample, "value", resample))


class _Resize:
    """Differentiable PIL resize of ``(..., H, W)`` tensors to ``(out_h, out_w)``."""

    def __init__(self, in_hw: tuple[int, int], out_hw: tuple[int, int], resample: int, device: Any) -> None:
        self.identity = in_hw == out_hw
        self.rows = torch.as_tensor(pil_resize_matrix(in_hw[0], out_hw[0], resample), dtype=torch.float32,
                                    device=device)
        self.cols = torch.as_tensor(pil_resize_matrix(in_hw[1], out_hw[1], resample), dtype=torch.float32,
                                    device=device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.identity:
            return x
        # PIL resamples the width first, then the height, clipping an 8-bit image to [0, 255] after each pass
        x = torch.matmul(x, self.cols.T).clamp(0.0, 1.0)
        return torch.matmul(self.rows, x).clamp(0.0, 1.0)


# -- the preprocessor ------------------------------------------------------------------------------------------


@dataclass
class Preprocessor:
    """Differentiable ``(B, 3, H, W)`` [0, 1] pixels -> ``pixel_values`` of ``B`` one-image samples.

    family: the family's name; size: ``(H, W)`` of the attack variable (the post-resize resolution); exact: the
    output matches the processor to float precision (False: to 8-bit precision, a resize is inside);
    mean, std: per-channel normalisation, shape ``(3, 1, 1)`` (None when the processor does not normalise);
    layout: ``"patches"`` (Qwen), ``"images"`` or ``"tiles"``; tile, grid: tile side and (rows, cols) of crops;
    overview: the differentiable resize giving the overview/global tile (first for LLaVA-NeXT, last for
    Idefics3); patch, merge, temporal: Qwen's patch size, merge size and temporal patch size.
    """

    family: str
    size: tuple[int, int]
    exact: bool
    mean: torch.Tensor | None = field(repr=False)
    std: torch.Tensor | None = field(repr=False)
    layout: str
    tile: int = 0
    grid: tuple[int, int] = (1, 1)
    overview: _Resize | None = field(default=None, repr=False)
    overview_first: bool = False
    patch: int = 14
    merge: int = 2
    temporal: int = 2

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.mean is None else (x - self.mean) / self.std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.mean is None else x * self.std + self.mean

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``pixel_values`` for the batch ``x`` (B, 3, H, W), float32 in [0, 1]."""
        if x.dim() != 4 or x.shape[1] != 3 or tuple(x.shape[-2:]) != self.size:
            raise ValueError(f"expected pixels of shape (B, 3, {self.size[0]}, {self.size[1]}), got {tuple(x.shape)}")
        if self.layout == "patches":
            return self._patchify(self.normalize(x))
        if self.layout == "images":
            return self.normalize(x)
        return self._tiles(x)

    # Qwen: (B, C, H, W) -> (B * gh * gw, C * T * P * P), rows ordered by merge windows, each row (C, T, P, P)
    def _patchify(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        p, m, t = self.patch, self.merge, self.temporal
        gh, gw = h // p, w // p
        x = x.unsqueeze(1).expand(b, t, c, h, w)
        x = x.reshape(b, t, c, gh // m, m, p, gw // m, m, p).permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
        return x.reshape(b * gh * gw, c * t * p * p)

    def _unpatchify(self, rows: torch.Tensor) -> torch.Tensor:
        h, w = self.size
        p, m, t = self.patch, self.merge, self.temporal
        gh, gw = h // p, w // p
        x = rows.reshape(gh // m, gw // m, m, m, 3, t, p, p)[:, :, :, :, :, 0]
        return x.permute(4, 0, 2, 5, 1, 3, 6).reshape(3, h, w)

    def _tiles(self, x: torch.Tensor) -> torch.Tensor:
        rows, cols = self.grid
        s = self.tile
        crops = [x[:, :, r * s:(r + 1) * s, c * s:(c + 1) * s] for r in range(rows) for c in range(cols)]
        if self.overview is not None:
            view = self.overview(x)
            crops = [view, *crops] if self.overview_first else [*crops, view]
        return self.normalize(torch.stack(crops, dim=1))

    def view(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The image ``(3, H, W)`` in [0, 1] that the processor's ``pixel_values`` of one image show (the inverse)."""
        pv = pixel_values.detach().float()
        if self.layout == "patches":
            x = self.denormalize(self._unpatchify(pv).unsqueeze(0))[0]
        elif self.layout == "images":
            x = self.denormalize(pv[:1])[0]
        else:
            rows, cols = self.grid
            tiles = self.denormalize(pv.reshape(-1, *pv.shape[-3:]))
            tiles = tiles[1:1 + rows * cols] if self.overview_first else tiles[:rows * cols]
            s = self.tile
            x = tiles.reshape(rows, cols, 3, s, s).permute(2, 0, 3, 1, 4).reshape(3, rows * s, cols * s)
        return x.clamp(0.0, 1.0)

    def check(self, x: torch.Tensor, reference: torch.Tensor) -> float:
        """Compare ``self(x[None])`` with the processor's ``pixel_values`` for the same image; return the largest
        difference in [0, 1] pixel units. Raises :class:`ConfigError` when it exceeds float precision (exact) or
        8-bit precision (a resize inside)."""
        with torch.no_grad():
            ours = self(x.unsqueeze(0).float())
            ref = reference.detach().float()
            if ours.shape != ref.shape:
                raise ConfigError(f"{self.family}: the attack's preprocessing gives pixel_values {tuple(ours.shape)} "
                                  f"but the processor gives {tuple(ref.shape)}; this processor configuration is not "
                                  f"supported by the attack ({_supported_text()})")
            ours = ours.to(reference.dtype).float()
            diff = (ours - ref).abs()
            if self.std is not None:
                diff = diff * _channel_last(self.std, diff, self.layout)
            worst = float(diff.max()) if diff.numel() else 0.0
        tolerance = 1e-5 if self.exact else 1.5 / 255
        if reference.dtype in (torch.float16, torch.bfloat16):
            tolerance += 4 * float(torch.finfo(reference.dtype).eps) * float(ref.abs().max() or 1.0)
        if worst > tolerance:
            raise ConfigError(f"{self.family}: the attack's differentiable preprocessing differs from the processor by "
                              f"{worst * 255:.2f}/255 (allowed {tolerance * 255:.3f}/255); this processor "
                              f"configuration is not supported by the attack ({_supported_text()})")
        return worst


def _channel_last(std: torch.Tensor, like: torch.Tensor, layout: str) -> torch.Tensor:
    """``std`` broadcastable to ``like``: per (C, T, P, P) row block of patches, else per channel (dim -3)."""
    if layout == "patches":
        per = like.shape[-1] // 3
        return std.reshape(3, 1).expand(3, per).reshape(1, -1)
    return std


def _supported_text() -> str:
    return "supported: " + "; ".join(f"{k}: {v}" for k, v in SUPPORTED.items())


def _stats(image_processor: Any, device: Any) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    if not getattr(image_processor, "do_normalize", True):
        return None, None
    mean = np.broadcast_to(np.asarray(image_processor.image_mean, dtype=np.float32), (3,))
    std = np.broadcast_to(np.asarray(image_processor.image_std, dtype=np.float32), (3,))
    return (torch.tensor(mean, device=device).reshape(3, 1, 1), torch.tensor(std, device=device).reshape(3, 1, 1))


def _hw(size: Any) -> tuple[int, int] | None:
    get = size.get if isinstance(size, dict) else lambda k, d=None: getattr(size, k, d)
    if get("height", None) and get("width", None):
        return int(get("height")), int(get("width"))
    if get("shortest_edge", None):
        return int(get("shortest_edge")), int(get("shortest_edge"))
    if get("longest_edge", None):
        return int(get("longest_edge")), int(get("longest_edge"))
    return None


def preprocessor_for(backend: Any, inputs: Any, image: Media) -> Preprocessor:
    """The :class:`Preprocessor` of ``backend`` for ``image``, from the processor's output ``inputs`` for it
    (``backend.build_inputs(prompt, [[image]])``). Raises :class:`ConfigError` for a family the attack does not
    support (audio models; see :data:`SUPPORTED`)."""
    family = backend.family
    if family.name not in SUPPORTED:
        raise ConfigError(f"the attack does not support {family.name} models; {_supported_text()}")
    image_processor = backend.processor.image_processor
    device = inputs["pixel_values"].device
    mean, std = _stats(image_processor, device)
    pv = inputs["pixel_values"]
    if family.layout == "patches":
        grid = inputs["image_grid_thw"][0].tolist()
        if int(grid[0]) != 1:
            raise ConfigError(f"{family.name}: expected one temporal patch for an image, got grid {grid}")
        patch = int(image_processor.patch_size)
        return Preprocessor(family.name, (int(grid[1]) * patch, int(grid[2]) * patch), True, mean, std, "patches",
                            patch=patch, merge=int(image_processor.merge_size),
                            temporal=int(image_processor.temporal_patch_size))
    if family.name in ("LLaVA-1.5", "BLIP-2"):
        if pv.dim() != 4:
            raise ConfigError(f"{family.name}: unexpected pixel_values shape {tuple(pv.shape)}")
        return Preprocessor(family.name, (int(pv.shape[-2]), int(pv.shape[-1])), True, mean, std, "images")
    if family.name == "LLaVA-NeXT":
        return _llava_next(backend, inputs, image, mean, std)
    return _idefics3(backend, inputs, image, mean, std)


def _llava_next(backend: Any, inputs: Any, image: Media, mean: Any, std: Any) -> Preprocessor:
    from transformers.image_processing_utils import select_best_resolution

    ip = backend.processor.image_processor
    pv = inputs["pixel_values"]
    tile = int(pv.shape[-1])
    if pv.shape[-2] != tile:
        raise ConfigError(f"LLaVA-NeXT: non-square tiles {tuple(pv.shape[-2:])} are not supported by the attack")
    best_h, best_w = select_best_resolution((image.height, image.width), ip.image_grid_pinpoints)
    if best_h % tile or best_w % tile:
        raise ConfigError(f"LLaVA-NeXT: pinpoint {best_h}x{best_w} is not a multiple of the {tile}-px tile")
    grid = (best_h // tile, best_w // tile)
    if pv.shape[1] != 1 + grid[0] * grid[1]:
        raise ConfigError(f"LLaVA-NeXT: expected {1 + grid[0] * grid[1]} tiles, the processor gave {pv.shape[1]}")
    size = _hw(ip.size) or (tile, tile)
    overview = _Resize((best_h, best_w), size, _resample_code(ip), pv.device)
    if size != (tile, tile):
        raise ConfigError(f"LLaVA-NeXT: overview size {size} differs from the tile size {tile}: not supported")
    return Preprocessor("LLaVA-NeXT", (best_h, best_w), overview.identity, mean, std, "tiles", tile=tile, grid=grid,
                        overview=overview, overview_first=True)


def _idefics3(backend: Any, inputs: Any, image: Media, mean: Any, std: Any) -> Preprocessor:
    ip = backend.processor.image_processor
    name = backend.family.name
    if not getattr(ip, "do_image_splitting", True):
        raise ConfigError(f"{name}: the attack needs image splitting (image_processor.do_image_splitting=True); "
                          "without it the processor resizes twice and the variable has no no-resize resolution")
    pv = inputs["pixel_values"]
    tile = int(pv.shape[-1])
    info = ip(images=[[image.to_array("uint8")]], return_row_col_info=True, return_tensors=None)
    rows, cols = int(info["rows"][0][0]), int(info["cols"][0][0])
    mask = inputs.get("pixel_attention_mask")
    real = int(mask[0].flatten(1).any(dim=1).sum()) if mask is not None else int(pv.shape[1])
    if rows == 0 or cols == 0:  # the resized image fits one tile: no split, no global view
        if real != 1 or _real_hw(mask, pv) != (tile, tile):
            raise ConfigError(f"{name}: an image that fits in less than one {tile}-px tile is not supported by the "
                              f"attack; use a larger image ({_supported_text()})")
        return Preprocessor(name, (tile, tile), True, mean, std, "tiles", tile=tile, grid=(1, 1))
    if real != rows * cols + 1:
        raise ConfigError(f"{name}: expected {rows * cols + 1} tiles, the processor gave {real}")
    size = (rows * tile, cols * tile)
    overview = _Resize(size, (tile, tile), _resample_code(ip), pv.device)
    return Preprocessor(name, size, False, mean, std, "tiles", tile=tile, grid=(rows, cols), overview=overview)


def _real_hw(mask: Any, pv: Any) -> tuple[int, int]:
    if mask is None:
        return int(pv.shape[-2]), int(pv.shape[-1])
    m = mask[0, 0].bool()
    return int(m.any(dim=1).sum()), int(m.any(dim=0).sum())
