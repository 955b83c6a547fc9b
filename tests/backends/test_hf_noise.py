"""Noise reaches pixel_values: the paper's normalised-space noise per variant, and float pixel-space noise."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fakes.tiny_models import IMAGE_FAMILIES
from hf_cases import PROMPT, backend, image, one_by_one, tiny

from smoothguard import Media, SmoothGuard
from smoothguard.backends.families import family_for, pixel_slices
from smoothguard.backends.float_images import float_resizing
from smoothguard.noise import TensorNoise


def _slices(b, inputs, counts):
    return [s.clone() for s in pixel_slices(b.family, inputs, counts)]


@pytest.mark.parametrize("name", IMAGE_FAMILIES)
def test_normalized_noise_is_added_to_each_variants_pixel_values(name):
    b = backend(name, noise_space="normalized")
    n_images = 1 if name == "blip2" else 2
    variants = [[image(name, seed=j) for j in range(n_images)]] * 3  # the guard sends clean copies
    noise = TensorNoise.for_variants(0.5, entropy=7, indices=range(3), include_original=True)
    clean = b.build_inputs(PROMPT, variants)
    noisy = b.build_inputs(PROMPT, variants, noise)
    counts = [n_images] * 3
    clean_views, noisy_views = _slices(b, clean, counts), _slices(b, noisy, counts)
    assert torch.equal(noisy_views[0], clean_views[0])  # the original stays clean
    deltas = [noisy_views[i] - clean_views[i] for i in (1, 2)]
    for delta in deltas:
        assert abs(float(delta.std()) - 0.5) < 0.05  # N(0, 0.5^2) in normalised units
    assert not torch.equal(deltas[0], deltas[1])
    # the slices partition pixel_values: nothing outside them changed
    assert sum(v.numel() for v in clean_views) == clean["pixel_values"].numel()
    assert (noisy["pixel_values"] - clean["pixel_values"]).abs().max() > 1.0  # unclamped N(0, 0.5^2)
    for key in clean:
        if key != "pixel_values":
            assert torch.equal(clean[key], noisy[key])
    # the noise of variant i does not depend on the batch it is in
    answers = b.generate(PROMPT, variants, noise)
    single = [b.generate(PROMPT, [variants[i]], TensorNoise(0.5, (noise.seeds[i],)))[0] for i in range(3)]
    assert answers == single


@pytest.mark.parametrize("name", ["qwen2_5_vl", "qwen2_vl"])
@pytest.mark.parametrize("space", ["pixel", "normalized"])
def test_qwen_temporal_copies_of_a_patch_share_their_noise(name, space):
    """Qwen repeats each frame over temporal_patch_size: one noise per patch, the same on every copy."""
    b = backend(name, noise_space=space)
    variants = [[image(name, seed=4)]] * 2
    noise = TensorNoise.for_variants(0.2, entropy=3, indices=range(2), include_original=True)
    delta = b.build_inputs(PROMPT, variants, noise)["pixel_values"] - b.build_inputs(PROMPT, variants)["pixel_values"]
    rows = delta[delta.shape[0] // 2:].reshape(-1, 3, 2, 14 * 14)  # variant 1's patches: (C, T, P * P)
    assert torch.equal(rows[:, :, 0], rows[:, :, 1]) and float(rows.abs().max()) > 0


@pytest.mark.parametrize("name", ["qwen2_5_vl", "qwen2_vl"])
def test_qwen_slices_follow_image_grid(name):
    """Qwen concatenates every image's patches: variant i owns rows by image_grid_thw, images of any size."""
    b = backend(name)
    variants = [[image(name, seed=1, size=(56, 56)), image(name, seed=2, size=(112, 84))],
                [image(name, seed=3, size=(28, 56))]]
    inputs = b.build_inputs(PROMPT, variants)
    views = pixel_slices(b.family, inputs, [2, 1])
    assert [v.shape[0] for v in views] == [16 + 48, 8]
    single = b.build_inputs(PROMPT, [variants[1]])["pixel_values"]
    assert torch.equal(views[1], single)


@pytest.mark.parametrize("name", ["idefics3", "smolvlm"])
def test_tiles_noise_leaves_padding_tiles_zero(name):
    """A wide image gives 3 tiles, a square one 5: the short sample is padded with empty tiles, which the model
    drops because they are all zero, so noise must not touch them."""
    b = backend(name, noise_space="normalized")
    variants = [[image(name, seed=1, size=(32, 64))], [image(name, seed=2, size=(64, 64))]]
    noise = TensorNoise(0.3, (11, 12))
    inputs = b.build_inputs(PROMPT, variants, noise)
    pv = inputs["pixel_values"]
    assert pv.shape[:2] == (2, 5)
    assert [v.shape[0] for v in pixel_slices(b.family, inputs, [1, 1])] == [3, 5]
    assert (pv[0, 3:] == 0).all() and (pv[0, :3] != 0).any()
    answers = b.generate(PROMPT, variants, noise)
    single = [b.generate(PROMPT, [v], TensorNoise(0.3, (s,)))[0] for v, s in zip(variants, noise.seeds, strict=True)]
    assert answers == single


@pytest.mark.parametrize("name", IMAGE_FAMILIES)
def test_pixel_noise_reaches_pixel_values_unquantised(name):
    b = backend(name)
    clean = image(name, seed=5)
    guard = SmoothGuard(sigma=0.1, seed=0)
    variants = guard.perturb([clean], 2, channel_std=b.pixel_std)
    assert variants[0][0] is clean
    inputs = b.build_inputs(PROMPT, variants)
    views = pixel_slices(b.family, inputs, [1, 1])
    std = min(b.pixel_std)
    levels = ((views[1] - views[0]) * std * 255).numpy()  # the noise in 8-bit levels
    assert 4 < levels.std() < 12  # sigma 0.1 in normalised units is about 7 levels
    assert np.mean(np.abs(levels - np.rint(levels)) > 0.01) > 0.5  # not quantised to whole levels


@pytest.mark.parametrize("name", IMAGE_FAMILIES)
def test_clean_float_images_are_processed_as_the_stock_processor_does(name):
    """Through the float path a clean image gives exactly the stock processor's pixel_values, resize or not."""
    processor = tiny(name)[1]
    stock = processor.image_processor
    assert float_resizing(stock) is not stock and type(float_resizing(stock)).__name__ == type(stock).__name__
    for size in [(45, 61), (32, 32)]:
        clean = Media.image(np.random.default_rng(9).integers(0, 256, (*size, 3), dtype=np.uint8))  # a decoded file
        reference = stock(images=[clean.to_pil()], return_tensors="np")["pixel_values"]
        ours = float_resizing(stock)(images=[clean.data], do_rescale=False, return_tensors="np")["pixel_values"]
        np.testing.assert_array_equal(ours, reference)
    b = backend(name)
    assert type(b.processor.image_processor) is type(stock)  # the caller's processor is left alone


def test_pixel_noise_is_exact_without_resize():
    """A 56x56 image needs no resize for Qwen: pixel_values hold exactly (noisy - mean) / std."""
    b = backend("qwen2_vl")
    clean = image("qwen2_vl", seed=2)
    noisy = SmoothGuard(sigma=0.2, seed=1).perturb([clean], 2, channel_std=b.pixel_std)[1][0]
    delta = (b.build_inputs(PROMPT, [[noisy]])["pixel_values"] - b.build_inputs(PROMPT, [[clean]])["pixel_values"])
    # patch vector layout (C, T, 14, 14): channel 0 of the first patch is the top-left 14x14 block of R
    expected = (noisy.data[:14, :14, 0] - clean.data[:14, :14, 0]) / b.pixel_std[0]
    np.testing.assert_allclose(delta[0, :196].reshape(14, 14).numpy(), expected, atol=1e-5)


def test_guard_passes_clean_images_and_the_noise_to_either_noise_space():
    """Both spaces add the noise to pixel_values: the guard sends the clean image once and a TensorNoise."""
    pixel, normalized = backend("llava"), backend("llava", noise_space="normalized")
    assert family_for("llava") is pixel.family
    seen = {}

    def spy(b, key):
        original = b.generate

        def generate(prompt, variants, tensor_noise=None):
            seen[key] = (variants, tensor_noise)
            return original(prompt, variants, tensor_noise)

        return generate

    pixel.generate, normalized.generate = spy(pixel, "pixel"), spy(normalized, "normalized")
    img = image("llava", seed=3)
    SmoothGuard(seed=0, n_samples=3).ask(pixel, PROMPT, images=[img])
    SmoothGuard(seed=0, n_samples=3).ask(normalized, PROMPT, images=[img])
    for key in ("pixel", "normalized"):
        variants, noise = seen[key]
        assert noise is not None and noise.seeds[0] is None and all(v[0] is img for v in variants)
    assert one_by_one(normalized, PROMPT, variants[:1]) == normalized.generate(PROMPT, variants[:1])
    # the pixel space clamps to the image range: [(0 - mean) / std, (1 - mean) / std] per channel
    ip = pixel.processor.image_processor
    low = torch.tensor([-m / s for m, s in zip(ip.image_mean, ip.image_std, strict=True)]).view(3, 1, 1)
    high = torch.tensor([(1 - m) / s for m, s in zip(ip.image_mean, ip.image_std, strict=True)]).view(3, 1, 1)
    big = TensorNoise.for_variants(5.0, entropy=1, indices=range(2), include_original=True)
    for b, clamped in ((pixel, True), (normalized, False)):
        pv = b.build_inputs(PROMPT, [[img]] * 2, big)["pixel_values"][1]
        inside = bool(((pv >= low - 1e-5) & (pv <= high + 1e-5)).all())
        assert inside is clamped


