"""σ means the std of the noise on the tensor the model consumes, at any source size and sample rate.

Measured as a user would: the std of noisy minus clean ``pixel_values`` (normalised units) through the backend's
own ``build_inputs`` and the real ``*ImageProcessorPil`` classes, from the model's own size up to a 12 MP photo,
in both noise spaces; audio at 8, 16, 44.1 and 48 kHz, mono and stereo, measured on the waveform the feature
extractor reads.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from fakes.tiny_models import IMAGE_FAMILIES
from hf_cases import PROMPT, SIZES, backend, clip, tiny

from smoothguard import Media, SmoothGuard
from smoothguard.backends.families import pixel_slices
from smoothguard.noise import TensorNoise

SIGMA = 0.1
#: (width, height): the model's own size (None), then what users upload, up to a 4032x3024 phone photo
SOURCES = [None, (224, 224), (512, 512), (1024, 1024), (2048, 2048), (4032, 3024)]


@functools.cache
def photo(size: tuple[int, int]) -> Media:
    """A mid-grey textured image (values in [0.25, 0.75], so clamping to [0, 1] rarely acts)."""
    w, h = size
    rng = np.random.default_rng(w * 7 + h)
    return Media.image(rng.integers(64, 192, (h, w, 3), dtype=np.uint8))


def channels_first(b, view: torch.Tensor) -> torch.Tensor:
    """A view of pixel_values as (3, values): patches are (rows, C, T, P * P), images and tiles (..., C, H, W)."""
    if b.family.layout == "patches":
        return view.reshape(view.shape[0], 3, -1).transpose(0, 1).reshape(3, -1)
    return view.transpose(0, -3).reshape(3, -1)


def effective_sigma(b, media: Media, noise: TensorNoise | None = None) -> torch.Tensor:
    """The std per channel (3,) of noisy minus clean pixel_values of one noisy copy, in normalised units, where
    the clean pixel lies away from the range's ends (clamping at 0 and 1, e.g. a letterbox's black bars, rightly
    narrows it)."""
    noise = noise or TensorNoise.for_variants(SIGMA, entropy=5, indices=range(2), include_original=True)
    clean = b.build_inputs(PROMPT, [[media]] * 2)
    noisy = b.build_inputs(PROMPT, [[media]] * 2, noise)
    clean_view, noisy_view = (pixel_slices(b.family, x, [1, 1])[1] for x in (clean, noisy))
    assert torch.equal(pixel_slices(b.family, noisy, [1, 1])[0], pixel_slices(b.family, clean, [1, 1])[0])
    ip = b.processor.image_processor
    mean, std = torch.tensor(ip.image_mean).view(3, 1), torch.tensor(ip.image_std).view(3, 1)
    pixels = channels_first(b, clean_view) * std + mean
    inside = (pixels > 0.15) & (pixels < 0.85)
    assert inside.float().mean() > 0.5
    delta = channels_first(b, noisy_view - clean_view)
    return torch.stack([delta[c][inside[c]].std() for c in range(3)])


@pytest.mark.parametrize("space", ["pixel", "normalized"])
@pytest.mark.parametrize("source", SOURCES, ids=lambda s: "model-size" if s is None else f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", IMAGE_FAMILIES)
def test_effective_sigma_is_sigma_at_any_source_size(name, source, space):
    b = backend(name, noise_space=space)
    size = source or SIZES[name][::-1]
    measured = effective_sigma(b, photo(size)).tolist()
    assert measured == pytest.approx([SIGMA] * 3, rel=0.05), f"{name} {size}: {measured}"


@pytest.mark.parametrize("name", IMAGE_FAMILIES)
def test_sigma_space_pixel_is_a_plain_pixel_std(name):
    """``sigma_space="pixel"``: the std in [0, 1] pixels, so std_c * pixel_values' noise == sigma per channel."""
    b = backend(name)
    noise = TensorNoise.for_variants(0.0, entropy=2, indices=range(2), include_original=True, pixel_std=(0.05,) * 3)
    measured = effective_sigma(b, photo((512, 384)), noise) * torch.tensor(b.pixel_std)
    np.testing.assert_allclose(measured.numpy(), [0.05] * 3, rtol=0.06)


def test_guard_ask_uses_the_models_geometry_and_reports_it():
    """Through the guard: one processing of the clean photo, noise at the model's views, sites in the result."""
    b = backend("llava_next")
    calls = []
    original = b._processor

    def counting(*args, **kwargs):
        calls.append(len(kwargs.get("images", [])))
        return original(*args, **kwargs)

    b._processor = counting
    result = SmoothGuard(sigma=SIGMA, n_samples=5, seed=0).ask(b, PROMPT, images=[photo((2048, 1536))])
    assert calls == [1]  # the clean photo went through the processor once for all five candidates
    (site,) = result.noise
    assert site.kind == "image" and site.source == (2048, 1536) and site.drawn_at == (32, 32) and site.views > 1
    assert result.to_dict()["noise"][0]["drawn_at"] == {"width": 32, "height": 32}
    assert not any("source size" in note for note in result.notes)


def test_adaptive_and_one_shot_draw_the_same_noise_for_variant_i():
    b = backend("qwen2_vl")
    media = photo((1024, 768))
    seen = {}

    def spy(mode):
        original = b.build_inputs

        def build_inputs(prompt, variants, tensor_noise=None, indices=None):
            inputs = original(prompt, variants, tensor_noise, indices)
            for j, view in enumerate(pixel_slices(b.family, inputs, [1] * len(variants))):
                seen.setdefault(mode, {})[tensor_noise.seeds[j]] = view.clone()
            return inputs

        return build_inputs

    for mode, settings in (("one-shot", {}), ("adaptive", {"adaptive": True, "adaptive_round": 2})):
        b.build_inputs = spy(mode)
        SmoothGuard(sigma=SIGMA, n_samples=6, seed=3, **settings).ask(b, PROMPT, images=[media])
        del b.build_inputs
    common = set(seen["one-shot"]) & set(seen["adaptive"])
    assert len(common) >= 2
    for seed in common:
        assert torch.equal(seen["one-shot"][seed], seen["adaptive"][seed])


def test_image_resize_none_draws_at_the_source_size_and_says_so():
    b = backend("llava")
    result = SmoothGuard(sigma=SIGMA, n_samples=3, seed=0, image_resize="none").ask(b, PROMPT,
                                                                                   images=[photo((2048, 1536))])
    (site,) = result.noise
    assert site.source == site.drawn_at == (2048, 1536)
    assert any("source size 2048x1536" in note for note in result.notes)


# -- audio -----------------------------------------------------------------------------------------------------


class Recording:
    """The processor, recording the waveforms it is given."""

    def __init__(self, processor):
        self.processor, self.waves = processor, []

    def __getattr__(self, name):
        return getattr(self.processor, name)

    def __call__(self, *args, **kwargs):
        self.waves.append([np.asarray(w) for w in kwargs["audio"]])
        return self.processor(*args, **kwargs)


def audio_backend():
    from smoothguard.backends import HFAudioLanguageModel

    model, processor = tiny("qwen2_audio")
    return HFAudioLanguageModel(model, processor, max_new_tokens=4)


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("rate", [8000, 16000, 44100, 48000])
def test_audio_noise_is_drawn_after_the_mix_to_mono_and_the_resampling(rate, channels):
    b = audio_backend()
    feature_rate = int(b.processor.feature_extractor.sampling_rate)
    media = clip(seed=rate, rate=rate, seconds=1.0, channels=channels)
    b._processor = recording = Recording(b._processor)
    sigma = 0.01
    noise = TensorNoise.for_variants(0.0, entropy=1, indices=range(2), include_original=True, audio_sigma=sigma)
    b.build_inputs(PROMPT, [[media]] * 2, noise)
    clean, noisy = recording.waves[0]
    assert clean.ndim == 1 and len(clean) == feature_rate  # one second, mono, at the feature extractor's rate
    assert float(np.std(noisy - clean)) == pytest.approx(sigma, rel=0.05)
    (site,) = b.noise_sites(PROMPT, [media])
    assert site.kind == "audio" and site.source == (rate, channels) and site.drawn_at == (feature_rate, 1)


def test_guard_ask_on_audio_passes_the_clean_clip_and_reports_the_rates():
    b = audio_backend()
    media = clip(seed=2, rate=48000, seconds=0.5, channels=2)
    result = SmoothGuard(n_samples=3, seed=0).ask(b, "What is it?", audio=[media])
    assert result.noise[0].to_dict() == {"kind": "audio", "source": {"sample_rate": 48000, "channels": 2},
                                         "drawn_at": {"sample_rate": 16000, "channels": 1}}
