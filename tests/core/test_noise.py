import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from smoothguard import Media, SmoothGuard
from smoothguard.config import CLIP_STD
from smoothguard.noise import add_audio_noise, add_image_noise, make_variants, pixel_sigma, variant_rng


def gray_image(h=64, w=64, value=128):
    return Media.image(np.full((h, w, 3), value, dtype=np.uint8))


def test_pixel_sigma_scales_by_channel_std():
    np.testing.assert_allclose(pixel_sigma(0.1), 0.1 * np.array(CLIP_STD), rtol=1e-6)
    np.testing.assert_allclose(pixel_sigma(0.1, channel_std=(0.5, 0.5, 0.5)), [0.05] * 3, rtol=1e-6)
    np.testing.assert_allclose(pixel_sigma(0.1, "pixel"), [0.1] * 3, rtol=1e-6)


def test_noise_std_per_channel_matches_sigma_times_std():
    pixels = np.full((256, 256, 3), 0.5, dtype=np.float32)
    std = pixel_sigma(0.2)
    noisy = add_image_noise(pixels, std, variant_rng(0, 1))
    measured = (noisy - pixels).reshape(-1, 3).std(axis=0)
    np.testing.assert_allclose(measured, std, rtol=0.03)


def test_variant_zero_is_the_untouched_original_and_others_differ():
    image = gray_image()
    variants = SmoothGuard(seed=0).perturb([image], n=5)
    assert len(variants) == 5 and all(len(v) == 1 for v in variants)
    assert variants[0][0] is image
    datas = [v[0].data for v in variants[1:]]
    assert all(not np.array_equal(d, image.data) for d in datas)
    assert all(not np.array_equal(datas[i], datas[j]) for i in range(4) for j in range(i + 1, 4))
    assert all(v[0].format == "png" and v[0].kind == "image" for v in variants[1:])  # noisy copies: lossless


def test_without_original_every_variant_is_noisy():
    image = gray_image()
    variants = SmoothGuard(seed=0, include_original=False).perturb([image], n=3)
    assert all(not np.array_equal(v[0].data, image.data) for v in variants)


def test_seed_reproduces_and_none_draws_fresh_noise():
    image = gray_image()
    a = SmoothGuard(seed=7).perturb([image], n=3)
    b = SmoothGuard(seed=7).perturb([image], n=3)
    assert all(np.array_equal(x[0].data, y[0].data) for x, y in zip(a, b, strict=True))
    c = SmoothGuard().perturb([image], n=3)
    d = SmoothGuard().perturb([image], n=3)
    assert not np.array_equal(c[1][0].data, d[1][0].data)


def test_variant_i_does_not_depend_on_how_many_are_drawn():
    image = gray_image()
    few = SmoothGuard(seed=3).perturb([image], n=3)
    many = SmoothGuard(seed=3).perturb([image], n=9)
    assert np.array_equal(few[2][0].data, many[2][0].data)


def test_no_global_random_state_is_used():
    np.random.seed(123)
    before = np.random.random()
    np.random.seed(123)
    SmoothGuard().perturb([gray_image()], n=4)
    assert np.random.random() == before


def test_images_and_audio_in_one_request_each_get_their_own_noise():
    image = gray_image(8, 8)
    clip = Media.audio(np.zeros(1600, dtype=np.float32), sample_rate=16000)
    variants = SmoothGuard(seed=1, audio_sigma=0.05).perturb([image, clip], n=2)
    noisy_image, noisy_clip = variants[1]
    assert noisy_clip.kind == "audio" and noisy_clip.sample_rate == 16000
    assert noisy_clip.data.shape == clip.data.shape
    assert abs(float(noisy_clip.data.std()) - 0.05) < 0.005
    assert noisy_image.data.shape == image.data.shape


def test_guard_uses_the_backend_std_when_given():
    image = gray_image(128, 128)
    wide = SmoothGuard(seed=0).perturb([image], n=2, channel_std=(1.0, 1.0, 1.0))[1][0]
    narrow = SmoothGuard(seed=0).perturb([image], n=2)[1][0]
    assert (wide.data - image.data).std() > 3 * (narrow.data - image.data).std()


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.float32, st.tuples(st.integers(1, 24), st.integers(1, 24), st.just(3)),
           elements=st.floats(0, 1, width=32)),
    st.floats(0, 1.0),
    st.integers(0, 2**32 - 1),
)
def test_image_noise_properties(pixels, sigma, seed):
    original = pixels.copy()
    std = pixel_sigma(sigma)
    noisy = add_image_noise(pixels, std, variant_rng(seed, 1))
    assert noisy.shape == pixels.shape and noisy.dtype == np.float32
    assert noisy.min() >= 0.0 and noisy.max() <= 1.0
    np.testing.assert_array_equal(pixels, original)  # input untouched
    if sigma == 0:
        np.testing.assert_array_equal(noisy, pixels)


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.float32, st.one_of(st.tuples(st.integers(1, 2000)), st.tuples(st.integers(1, 500), st.integers(1, 2))),
           elements=st.floats(-1, 1, width=32)),
    st.floats(0, 0.5),
    st.integers(0, 2**32 - 1),
)
def test_audio_noise_properties(wave, sigma, seed):
    original = wave.copy()
    noisy = add_audio_noise(wave, sigma, variant_rng(seed, 2))
    assert noisy.shape == wave.shape and noisy.dtype == np.float32
    assert noisy.min() >= -1.0 and noisy.max() <= 1.0
    np.testing.assert_array_equal(wave, original)


@pytest.mark.parametrize("sigma", [0.05, 0.1, 0.2])
def test_audio_noise_std_within_tolerance(sigma):
    wave = np.zeros(200_000, dtype=np.float32)
    noisy = add_audio_noise(wave, sigma, variant_rng(0, 1))
    assert abs(float(noisy.std()) - sigma) < 0.02 * sigma


def test_make_variants_leaves_media_untouched():
    image = gray_image(16, 16)
    before = image.data.copy()
    make_variants([image], range(4), entropy=1, image_std=pixel_sigma(0.5), audio_std=0.1)
    np.testing.assert_array_equal(image.data, before)


def test_make_variants_is_the_same_in_threads_and_in_one():
    """Large requests draw their variants in a thread pool; each variant's generator makes it irrelevant."""
    image = Media.image(np.random.default_rng(3).random((448, 448, 3), dtype=np.float32))
    audio = Media.audio(np.zeros(16_000, dtype=np.float32), sample_rate=16_000)
    kwargs = dict(entropy=7, image_std=pixel_sigma(0.1), audio_std=0.01)
    serial = make_variants([image, audio], range(6), workers=1, **kwargs)
    threaded = make_variants([image, audio], range(6), workers=4, **kwargs)
    automatic = make_variants([image, audio], range(6), **kwargs)  # 6 x 618k values: above the pool's threshold
    for a, b, c in zip(serial, threaded, automatic, strict=True):
        for x, y, z in zip(a, b, c, strict=True):
            np.testing.assert_array_equal(x.data, y.data)
            np.testing.assert_array_equal(x.data, z.data)
    assert serial[0][0] is image and not np.array_equal(serial[1][0].data, image.data)
    with pytest.raises(ValueError, match="workers"):
        make_variants([image], range(2), workers=0, **kwargs)
