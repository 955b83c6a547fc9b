"""Differentiable preprocessing: PIL-exact resize, per-family pixel_values matching the processor, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from attack_cases import PROMPT, backend, image
from PIL import Image

from smoothguard import Media
from smoothguard.attacks import SUPPORTED, preprocessor_for
from smoothguard.attacks.preprocess import pil_resize_matrix
from smoothguard.errors import ConfigError

EXACT = ["qwen2_5_vl", "qwen2_vl", "llava", "blip2"]
TILED = ["llava_next", "idefics3", "smolvlm"]


def _at_model_resolution(name: str, seed: int = 0):
    """(preprocessor, x0 (3, H, W) 8-bit exact, the processor's inputs for x0), x0 at the no-resize size."""
    b = backend(name)
    start = image(name, seed)
    inputs = b.build_inputs(PROMPT, [[start]])
    x0 = torch.round(preprocessor_for(b, inputs, start).view(inputs["pixel_values"]) * 255) / 255
    media = Media.image(x0.permute(1, 2, 0).numpy())
    reference = b.build_inputs(PROMPT, [[media]])
    return preprocessor_for(b, reference, media), x0, reference


@pytest.mark.parametrize("resample", [Image.Resampling.BICUBIC, Image.Resampling.LANCZOS, Image.Resampling.BILINEAR,
                                      Image.Resampling.BOX, Image.Resampling.HAMMING])
@pytest.mark.parametrize(("src", "dst"), [((64, 64), (32, 32)), ((30, 70), (32, 32)), ((20, 24), (45, 13))])
def test_pil_resize_matrix_reproduces_pil_float_resize(resample, src, dst):
    x = np.random.default_rng(1).random(src).astype(np.float32)
    expected = np.asarray(Image.fromarray(x, mode="F").resize(dst[::-1], resample=resample))
    ours = pil_resize_matrix(src[0], dst[0], int(resample)) @ x @ pil_resize_matrix(src[1], dst[1], int(resample)).T
    assert np.abs(ours - expected).max() < 1e-6


@pytest.mark.parametrize("name", EXACT)
def test_exact_families_match_the_processor_to_1e6(name):
    pre, x0, reference = _at_model_resolution(name)
    assert pre.exact and pre.size == tuple(x0.shape[-2:])
    ours = pre(x0.unsqueeze(0))
    assert ours.shape == reference["pixel_values"].shape
    assert (ours - reference["pixel_values"]).abs().max() < 1e-6
    # the inverse: pixel_values -> the image
    assert (pre.view(reference["pixel_values"]) - x0).abs().max() < 1e-6


@pytest.mark.parametrize("name", ["qwen2_5_vl", "qwen2_vl"])
def test_qwen_patchify_matches_the_stock_processor_on_an_8bit_image(name):
    """The user's own processor (not the backend's float copy) on a PIL image at a no-resize size (56x84)."""
    b = backend(name)
    pil = Image.fromarray(np.random.default_rng(3).integers(0, 256, (56, 84, 3), dtype=np.uint8))
    stock = b.processor(images=[pil], text=[b.family.prompt(b.processor, PROMPT, 1)], return_tensors="pt")
    assert stock["image_grid_thw"].tolist() == [[1, 4, 6]]
    pre = preprocessor_for(b, stock, Media.image(pil))
    x = torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255).permute(2, 0, 1)
    assert (pre(x.unsqueeze(0)) - stock["pixel_values"]).abs().max() < 1e-6
    # a batch stacks the images' patches in order
    batch = pre(torch.stack([x, 1 - x]))
    assert batch.shape == (2 * 24, 1176) and torch.equal(batch[:24], pre(x.unsqueeze(0)))


@pytest.mark.parametrize("name", TILED)
def test_tiled_families_match_the_processor_to_8bit_precision(name):
    pre, x0, reference = _at_model_resolution(name)
    ours = pre(x0.unsqueeze(0))
    ref = reference["pixel_values"]
    assert ours.shape == ref.shape and not pre.exact
    std = torch.tensor(backend(name).pixel_std).reshape(3, 1, 1)
    assert ((ours - ref).abs() * std).max() <= 1.5 / 255  # the resized overview / global tile
    crops = slice(1, None) if name == "llava_next" else slice(0, -1)  # the crops themselves are exact
    assert (ours[:, crops] - ref[:, crops]).abs().max() < 1e-6
    assert (pre.view(ref) - x0).abs().max() < 1e-6


def test_preprocessing_is_differentiable():
    pre, x0, _ = _at_model_resolution("qwen2_5_vl")
    x = x0.clone().requires_grad_(True)
    (pre(x.unsqueeze(0)) ** 2).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_unsupported_models_and_settings_raise_clear_errors():
    from fakes.tiny_models import tiny_idefics3, tiny_qwen2_audio

    from smoothguard.backends import HFAudioLanguageModel, HFVisionLanguageModel

    audio = HFAudioLanguageModel(*tiny_qwen2_audio())
    with pytest.raises(ConfigError, match="does not support Qwen2-Audio"):
        preprocessor_for(audio, {"pixel_values": torch.zeros(1)}, image())
    model, processor = tiny_idefics3()
    processor.image_processor.do_image_splitting = False
    b = HFVisionLanguageModel(model, processor)
    start = image("idefics3")
    with pytest.raises(ConfigError, match="image splitting"):
        preprocessor_for(b, b.build_inputs(PROMPT, [[start]]), start)
    assert set(SUPPORTED) == {"Qwen2.5-VL", "Qwen2-VL", "LLaVA-1.5", "BLIP-2", "LLaVA-NeXT", "Idefics3", "SmolVLM"}
