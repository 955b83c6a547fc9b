"""``image_resize``: the size rules (checked against their documented definitions and transformers' own Qwen2-VL
``smart_resize``), the rule parsing and validation, ``auto_rule``, and what the guard does with them."""

import importlib
import io
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from smoothguard import GuardConfig, Media, SmoothGuard, limits
from smoothguard.errors import ConfigError, MediaError
from smoothguard.image_resize import (
    NAMED_RULES,
    auto_rule,
    check_rule,
    fitter,
    parse_rule,
    resolve,
    target_size,
)

# The documented limits, restated here (not imported) so that a changed constant fails a test.
OPENAI_FIT, OPENAI_SHORT = 2048, 768
ANTHROPIC_LONG, ANTHROPIC_PIXELS = 1568, 1_150_000
QWEN_FACTOR, QWEN_MIN_PIXELS, QWEN_MAX_PIXELS = 28, 3136, 12845056

PHOTO_SIZE = (4032, 3024)  # a 12 MP phone photo, (width, height)

PROPERTY = settings(max_examples=300, deadline=None, database=None)
sides = st.integers(min_value=1, max_value=20_000)


# -- references written from the documented rules ----------------------------------------------------------


def exact_scale(rule, width, height):
    """The continuous scale the rule's definition gives (before rounding to whole pixels)."""
    if rule == "openai":  # fit within 2048 x 2048, then the shortest side at most 768
        fit = min(1.0, OPENAI_FIT / width, OPENAI_FIT / height)
        return fit * min(1.0, OPENAI_SHORT / (min(width, height) * fit))
    if rule == "anthropic":
        return min(1.0, ANTHROPIC_LONG / max(width, height), math.sqrt(ANTHROPIC_PIXELS / (width * height)))
    if isinstance(rule, int):
        return min(1.0, rule / max(width, height))
    bound_w, bound_h = rule
    return min(1.0, bound_w / width, bound_h / height)


def within_bounds(rule, w, h):
    if rule == "openai":
        return max(w, h) <= OPENAI_FIT and min(w, h) <= OPENAI_SHORT
    if rule == "anthropic":
        return max(w, h) <= ANTHROPIC_LONG and w * h <= ANTHROPIC_PIXELS
    if isinstance(rule, int):
        return max(w, h) <= rule
    return w <= rule[0] and h <= rule[1]


def rounding_tolerance(rule):
    """How far (px) a side may be from its exact scaled length: one rounding down to whole pixels, under 1 px
    (OpenAI's two documented steps are one scale, the smaller of the two)."""
    return 1.0


def assert_follows_rule(rule, width, height):
    w, h = target_size(rule, width, height)
    assert isinstance(w, int) and isinstance(h, int)
    assert 1 <= w <= width and 1 <= h <= height, f"{width}x{height} -> {w}x{h}: upscaled or empty"
    assert within_bounds(rule, w, h), f"{width}x{height} -> {w}x{h} breaks the {rule!r} bounds"
    scale = exact_scale(rule, width, height)
    if scale >= 1.0:
        assert (w, h) == (width, height), f"{width}x{height} already fits {rule!r}, yet became {w}x{h}"
    tol = rounding_tolerance(rule)
    for got, exact in ((w, width * scale), (h, height * scale)):
        if exact < 1:  # a side under a pixel is kept at one
            assert got == 1
        else:
            assert abs(got - exact) < tol, f"{width}x{height} -> {w}x{h}, aspect-exact {width * scale:.2f}x" \
                                           f"{height * scale:.2f}"
    assert target_size(rule, w, h) == (w, h), f"{rule!r} is not idempotent at {width}x{height} -> {w}x{h}"


# -- "openai" ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("source", "expected"), [
    ((4032, 3024), (1024, 768)),   # fit: 2048x1536; short side 1536 -> 768
    ((3024, 4032), (768, 1024)),   # portrait
    ((1024, 1024), (768, 768)),
    ((512, 512), (512, 512)),      # never upscaled
    ((4000, 1000), (2048, 512)),   # fit: 2048x512; 512 <= 768 already
    ((2048, 4096), (768, 1536)),   # OpenAI's own example: 1024x2048, then 768x1536
    ((768, 768), (768, 768)),
    ((769, 769), (768, 768)),
    ((2048, 768), (2048, 768)),    # exactly on both bounds
    ((1, 1), (1, 1)),
])
def test_openai_known_sizes(source, expected):
    assert target_size("openai", *source) == expected


def test_openai_very_thin_image_keeps_a_pixel():
    w, h = target_size("openai", 20_000, 3)  # the fit scale 0.1024 takes the 3 px side below one pixel
    assert (w, h) == (2048, 1)


@PROPERTY
@given(sides, sides)
def test_openai_property(width, height):
    assert_follows_rule("openai", width, height)


# -- "anthropic" ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("source", "expected"), [
    ((1000, 800), (1000, 800)),    # 0.8 MP: unchanged
    ((2000, 500), (1568, 392)),    # the long edge decides (1568 x 392 = 0.61 MP)
    ((1568, 700), (1568, 700)),
    ((1072, 1072), (1072, 1072)),  # 1,149,184 px: just fits
])
def test_anthropic_known_sizes(source, expected):
    assert target_size("anthropic", *source) == expected


def test_anthropic_photo_is_limited_by_pixels():
    w, h = target_size("anthropic", *PHOTO_SIZE)
    assert w * h <= ANTHROPIC_PIXELS and max(w, h) < ANTHROPIC_LONG  # the area, not the long edge, decides
    assert w * h > 0.99 * ANTHROPIC_PIXELS                           # and it is not needlessly small
    assert abs(w / h - 4 / 3) < 2e-3


@PROPERTY
@given(sides, sides)
def test_anthropic_property(width, height):
    assert_follows_rule("anthropic", width, height)


# -- an int and a (width, height) bound ----------------------------------------------------------------------


@pytest.mark.parametrize(("rule", "source", "expected"), [
    (768, (4032, 3024), (768, 576)),
    (768, (3024, 4032), (576, 768)),
    (768, (700, 300), (700, 300)),        # never upscaled
    (100, (100, 100), (100, 100)),
    (1, (640, 480), (1, 1)),
    ((1024, 768), (4032, 3024), (1024, 768)),
    ((1024, 768), (2000, 2000), (768, 768)),  # the height bound decides
    ((1024, 768), (4000, 1000), (1024, 256)),  # the width bound decides
    ((1024, 768), (800, 600), (800, 600)),
])
def test_bounds_known_sizes(rule, source, expected):
    assert target_size(rule, *source) == expected


@PROPERTY
@given(sides, sides, st.integers(min_value=1, max_value=5000))
def test_longest_side_property(width, height, n):
    assert_follows_rule(n, width, height)


@PROPERTY
@given(sides, sides, st.integers(min_value=1, max_value=5000), st.integers(min_value=1, max_value=5000))
def test_box_property(width, height, bound_w, bound_h):
    assert_follows_rule((bound_w, bound_h), width, height)


@PROPERTY
@given(sides, sides)
def test_none_keeps_the_source_size(width, height):
    assert target_size("none", width, height) == (width, height)


def test_auto_has_no_size_of_its_own():
    with pytest.raises(ConfigError, match="auto"):
        target_size("auto", 640, 480)


# -- "qwen2-vl" against transformers' smart_resize -----------------------------------------------------------


@pytest.fixture(scope="module")
def hf_smart_resize():
    """transformers' own Qwen2-VL smart_resize, with the checkpoints' settings, as (width, height) -> (w, h)."""
    pytest.importorskip("transformers")
    smart_resize = None
    for module in ("transformers.models.qwen2_vl.image_processing_pil_qwen2_vl",  # transformers 5: no torchvision
                   "transformers.models.qwen2_vl.image_processing_qwen2_vl"):
        try:
            smart_resize = importlib.import_module(module).smart_resize
            break
        except (ImportError, AttributeError):
            continue
    if smart_resize is None:
        pytest.skip("transformers' Qwen2-VL smart_resize cannot be imported here")

    def reference(width, height):
        h, w = smart_resize(height, width, factor=QWEN_FACTOR, min_pixels=QWEN_MIN_PIXELS,
                            max_pixels=QWEN_MAX_PIXELS)
        return w, h

    return reference


@pytest.mark.parametrize("source", [
    (512, 512), PHOTO_SIZE, (3024, 4032), (4000, 3000), (8000, 6000), (12000, 9000), (1920, 1080), (1080, 1920),
    (640, 480), (28, 28), (56, 56), (30, 30), (1, 1), (10, 10), (15, 500), (100, 20_000), (20_000, 20_000),
])
def test_qwen_matches_transformers(hf_smart_resize, source):
    assert target_size("qwen2-vl", *source) == hf_smart_resize(*source)


def test_qwen_known_sizes():
    assert target_size("qwen2-vl", 512, 512) == (504, 504)
    w, h = target_size("qwen2-vl", 8000, 6000)  # 48 MP: brought under the 12.8 MP cap
    assert w * h <= QWEN_MAX_PIXELS and w % QWEN_FACTOR == 0 and h % QWEN_FACTOR == 0


def test_qwen_matches_transformers_on_many_sizes(hf_smart_resize):
    rng = np.random.default_rng(2026)
    small = rng.integers(15, 600, size=(3000, 2))
    large = rng.integers(15, 20_000, size=(3000, 2))
    checked = 0
    for width, height in np.concatenate([small, large]).tolist():
        if max(width, height) / min(width, height) > 200:  # transformers refuses such images
            continue
        assert target_size("qwen2-vl", width, height) == hf_smart_resize(width, height), (width, height)
        checked += 1
    assert checked > 5000


@PROPERTY
@given(st.integers(min_value=15, max_value=20_000), st.integers(min_value=15, max_value=20_000))
def test_qwen_property(hf_smart_resize, width, height):
    if max(width, height) / min(width, height) > 200:
        return
    w, h = target_size("qwen2-vl", width, height)
    assert (w, h) == hf_smart_resize(width, height)
    assert w % QWEN_FACTOR == 0 and h % QWEN_FACTOR == 0
    assert QWEN_MIN_PIXELS <= w * h <= QWEN_MAX_PIXELS
    assert target_size("qwen2-vl", w, h) == (w, h)  # the model has nothing left to resize


@pytest.mark.parametrize("source", [(6, 701), (245, 4), (14, 434), (1, 98)])
def test_qwen_matches_transformers_on_thin_images(hf_smart_resize, source):
    assert target_size("qwen2-vl", *source) == hf_smart_resize(*source)


# -- check_rule, parse_rule and GuardConfig ------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [
    (768, 768), (1, 1), ((1024, 768), (1024, 768)), ([1024, 768], (1024, 768)),
    *((name, name) for name in ("auto", "openai", "anthropic", "qwen2-vl", "none")),
])
def test_check_rule_accepts(value, expected):
    got = check_rule(value)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize("value", [
    0, -1, True, False, 1.5, None, "big", "", (0, 5), (5, 0), (-1, 5), (1, 2, 3), (1,), [1.5, 2], (True, 5),
])
def test_check_rule_rejects(value):
    with pytest.raises(ConfigError, match="image_resize"):
        check_rule(value)


@pytest.mark.parametrize(("text", "expected"), [
    ("768", 768), (" 768 ", 768), ("1024x768", (1024, 768)), ("1024X768", (1024, 768)),
    ("1024 x 768", (1024, 768)), ("1024,768", (1024, 768)), ("OpenAI", "openai"), (" anthropic ", "anthropic"),
    *((name, name) for name in ("auto", "openai", "anthropic", "qwen2-vl", "none")),
])
def test_parse_rule_accepts(text, expected):
    assert parse_rule(text) == expected


@pytest.mark.parametrize("text", ["0", "-1", "1.5", "big", "", "1024x0", "0x768", "x768", "1024x", "1024x768x2"])
def test_parse_rule_rejects(text):
    with pytest.raises(ConfigError, match="image_resize"):
        parse_rule(text)


def test_named_rules_are_the_documented_ones():
    assert set(NAMED_RULES) == {"auto", "openai", "anthropic", "qwen2-vl", "none"}


def test_guard_config_image_resize():
    assert GuardConfig().image_resize == "auto"
    config = GuardConfig(image_resize=[1024, 768])
    assert config.image_resize == (1024, 768)
    dumped = json.loads(json.dumps(config.to_dict()))
    assert dumped["image_resize"] == [1024, 768]
    assert GuardConfig(**dumped).image_resize == (1024, 768)  # the JSON form reads back
    assert GuardConfig(image_resize=768).to_dict()["image_resize"] == 768
    assert config.replace(image_resize="openai").image_resize == "openai"
    assert SmoothGuard(image_resize="qwen2-vl").config.image_resize == "qwen2-vl"


@pytest.mark.parametrize("value", ["bogus", 0, True, (0, 5), 1.5])
def test_guard_config_rejects_bad_image_resize(value):
    with pytest.raises(ConfigError, match="image_resize"):
        GuardConfig(image_resize=value)
    with pytest.raises(ConfigError, match="image_resize"):
        SmoothGuard(image_resize=value)


# -- auto_rule ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["Qwen/Qwen2.5-VL-7B-Instruct", "qwen2-vl-7b", "Qwen2_VL", "Qwen2-VL-72B-Instruct",
                                   "qwen2.5-vl", "qwen2.5vl:7b"])
@pytest.mark.parametrize("provider", [None, "openai", "anthropic"])
def test_auto_rule_qwen_whatever_the_provider(model, provider):
    assert auto_rule(provider, model) == "qwen2-vl"


@pytest.mark.parametrize(("provider", "model", "expected"), [
    (None, "claude-3-5-sonnet-latest", "anthropic"),
    ("openai", "claude-3-5-sonnet-latest", "anthropic"),  # e.g. behind an OpenAI-compatible gateway
    (None, "anthropic/claude-3-opus", "anthropic"),
    (None, "Claude-3-Haiku", "anthropic"),
    ("anthropic", None, "anthropic"),
    ("anthropic", "some-model", "anthropic"),
    ("openai", "gpt-4o", "openai"),
    (None, "gpt-4o", "openai"),
    (None, None, "openai"),
    (None, "", "openai"),
    (None, "llava-1.5-7b", "openai"),
])
def test_auto_rule(provider, model, expected):
    assert auto_rule(provider, model) == expected


def test_auto_rule_gives_a_rule_with_a_size():
    for provider, model in [(None, None), ("anthropic", None), (None, "Qwen2-VL-2B")]:
        rule = auto_rule(provider, model)
        assert rule in NAMED_RULES and rule not in ("auto", "none")
        target_size(rule, *PHOTO_SIZE)  # resolvable


# -- the guard --------------------------------------------------------------------------------------------------


def gradient(width, height):
    """A smooth uint8 image (R rises left to right, G top to bottom): its downscale is predictable."""
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[..., 0] = np.rint(np.broadcast_to(x, (height, width)))
    image[..., 1] = np.rint(np.broadcast_to(y, (height, width)))
    image[..., 2] = 100
    return image


@pytest.fixture(scope="module")
def photo_pixels():
    return gradient(*PHOTO_SIZE)


@pytest.fixture(scope="module")
def photo(photo_pixels):
    return Media.image(photo_pixels)


def sizes(variants):
    return [[(m.width, m.height) for m in variant] for variant in variants]


def test_perturb_openai_draws_the_noise_at_the_model_size(photo, photo_pixels):
    before = photo.data.copy()
    variants = SmoothGuard(image_resize="openai", seed=0, sigma=0.1).perturb([photo], n=3)
    assert sizes(variants) == [[(1024, 768)]] * 3
    original, noisy = variants[0][0], [v[0] for v in variants[1:]]
    assert original.format == "png" and all(m.format == "png" for m in noisy)

    # variant 0 is the original, resized (compare with an independent PIL resize of the pixels)
    expected = np.asarray(Image.fromarray(photo_pixels).resize((1024, 768), Image.Resampling.LANCZOS), np.int16)
    got = original.to_array("uint8").astype(np.int16)
    assert np.abs(got - expected).max() <= 2

    # variants 1 and 2 are noisy copies of it, each with its own noise
    clean = original.to_array("float32")
    diffs = [m.to_array("float32") - clean for m in noisy]
    for diff in diffs:
        assert 0.02 < diff.std() < 0.3
        assert abs(diff.mean()) < 0.02
    assert not np.array_equal(diffs[0], diffs[1])

    # the caller's media is untouched
    assert (photo.width, photo.height, photo.format) == (*PHOTO_SIZE, "array")
    assert np.array_equal(photo.data, before)


def test_perturb_auto_follows_the_model_rule(photo):
    guard = SmoothGuard(image_resize="auto", seed=0)
    variants = guard.perturb([photo], n=2, auto_resize="anthropic")
    w, h = variants[0][0].width, variants[0][0].height
    assert sizes(variants) == [[(w, h)]] * 2
    assert max(w, h) <= ANTHROPIC_LONG and w * h <= ANTHROPIC_PIXELS
    assert w * h > 0.99 * ANTHROPIC_PIXELS and abs(w / h - 4 / 3) < 2e-3
    assert (w, h) == target_size("anthropic", *PHOTO_SIZE)


def test_perturb_auto_without_a_model_keeps_the_source_size(photo):
    variants = SmoothGuard(image_resize="auto", seed=0).perturb([photo], n=2)
    assert sizes(variants) == [[PHOTO_SIZE]] * 2
    assert variants[0][0] == photo  # the original, as given
    assert variants[1][0].format == "png" and variants[1][0] != photo


@pytest.mark.parametrize(("rule", "expected"), [(100, (100, 66)), ((50, 50), (50, 33)), ("none", (300, 200)),
                                                ("openai", (300, 200))])
def test_perturb_small_image(rule, expected):
    image = Media.image(gradient(300, 200))
    guard = SmoothGuard(image_resize=rule, seed=3)
    variants = guard.perturb([image, image], n=3)
    for variant in variants:
        for m in variant:
            assert abs(m.width - expected[0]) <= 1 and abs(m.height - expected[1]) <= 1
            assert (m.width, m.height) == (variants[0][0].width, variants[0][0].height)
    again = guard.perturb([image, image], n=3)  # seeded: the same variants every call
    assert all(a == b for va, vb in zip(variants, again, strict=True) for a, b in zip(va, vb, strict=True))


def recording(log):
    def generate(variants):
        log.extend(tuple((m.width, m.height) for m in variant) for variant in variants)
        return ["A smooth colour gradient from dark to light."] * len(variants)
    return generate


def test_run_draws_the_noise_at_the_model_size(photo):
    log = []
    result = SmoothGuard(image_resize="openai", seed=0, n_samples=3).run([photo], recording(log))
    assert log == [((1024, 768),)] * 3
    (site,) = result.noise
    assert site.kind == "image"
    assert site.source == PHOTO_SIZE and site.drawn_at == (1024, 768)
    assert site.resampled
    assert not any("source size" in note for note in result.notes)
    assert result.to_dict()["noise"][0]["drawn_at"] == {"width": 1024, "height": 768}


def test_run_auto_with_a_model_rule(photo):
    log = []
    result = SmoothGuard(image_resize="auto", seed=0, n_samples=2).run([photo], recording(log),
                                                                         auto_resize="qwen2-vl")
    expected = target_size("qwen2-vl", *PHOTO_SIZE)
    assert expected[0] % QWEN_FACTOR == 0 and expected[1] % QWEN_FACTOR == 0
    assert log == [(expected,)] * 2
    assert result.noise[0].drawn_at == expected


def test_run_none_says_the_noise_is_at_the_source_size(photo):
    log = []
    result = SmoothGuard(image_resize="none", seed=0, n_samples=2).run([photo], recording(log))
    assert log == [(PHOTO_SIZE,)] * 2
    assert result.noise[0].source == result.noise[0].drawn_at == PHOTO_SIZE
    assert not result.noise[0].resampled
    assert any("source size" in note for note in result.notes), result.notes


def test_run_none_on_an_image_no_model_resizes_has_no_note():
    log = []
    image = Media.image(gradient(512, 384))  # within OpenAI's size: nothing would be averaged away
    result = SmoothGuard(image_resize="none", seed=0, n_samples=2).run([image], recording(log))
    assert log == [((512, 384),)] * 2
    assert not any("source size" in note for note in result.notes), result.notes


# -- decoding straight to the noise size (fitter, Media.image(fit=...), limits.request(fit=...)) ----------------


@PROPERTY
@given(width=sides, height=sides, rule=st.sampled_from(["openai", "anthropic", "qwen2-vl", 768, (1024, 512)]))
def test_every_rule_is_idempotent(width, height, rule):
    """An image decoded straight to its target must be left alone by the guard's own resize."""
    first = target_size(rule, width, height)
    assert target_size(rule, *first) == first


def test_fitter():
    assert fitter("none") is None and fitter("auto") is None and fitter("auto", None) is None
    assert fitter("auto", "openai")(*PHOTO_SIZE) == (1024, 768) == fitter("openai", "qwen2-vl")(*PHOTO_SIZE)
    assert resolve("auto", "anthropic") == "anthropic" and resolve(512, "openai") == 512


def jpeg(pixels, **save):
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=95, **save)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def photo_jpeg(photo_pixels):
    return jpeg(photo_pixels)


def test_a_jpeg_decodes_straight_to_its_fit(photo_jpeg):
    full = Media.image(photo_jpeg)
    fitted = Media.image(photo_jpeg, fit=fitter("openai"))
    assert (fitted.width, fitted.height) == (1024, 768) and fitted.source_size == PHOTO_SIZE
    assert fitted.format == "png"  # a resized image is written lossless
    reference = full.resized(1024, 768)
    assert reference.source_size == PHOTO_SIZE
    # the DCT-scaled decode then Lanczos is the full decode then Lanczos, to well under one level in 255
    assert np.abs(fitted.data - reference.data).mean() * 255 < 0.5
    assert Media.image(photo_jpeg, fit=lambda w, h: (w, h)).format == "jpeg"  # no smaller fit: as before


def test_fit_follows_the_exif_orientation(photo_pixels):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown: the photo is 3024 wide and 4032 high
    raw = jpeg(photo_pixels, exif=exif.tobytes())
    fitted = Media.image(raw, fit=fitter("openai"))
    assert fitted.source_size == (3024, 4032) and (fitted.width, fitted.height) == (768, 1024)
    upright = Media.image(raw).resized(768, 1024)
    assert np.abs(fitted.data - upright.data).mean() * 255 < 0.5


def test_fit_applies_to_every_input_form(photo_pixels):
    small = photo_pixels[::8, ::8]  # 504 x 378
    rgba = np.dstack([small, np.full(small.shape[:2], 255, np.uint8)])
    png = io.BytesIO()
    Image.fromarray(rgba).save(png, "PNG")
    for source in (small, Image.fromarray(small), png.getvalue(), Media.image(small)):
        fitted = Media.image(source, fit=fitter(256))
        assert (fitted.width, fitted.height) == (256, 192) and fitted.source_size == (504, 378)


def test_fit_keeps_source_size_through_copies_and_pickles(photo_jpeg):
    import pickle

    fitted = Media.image(photo_jpeg, fit=fitter("openai"))
    assert pickle.loads(pickle.dumps(fitted)).source_size == PHOTO_SIZE
    assert fitted.with_data(fitted.data * 0.5).source_size == PHOTO_SIZE


def test_the_request_budget_counts_the_size_sent(photo_jpeg):
    """Decoding smaller does not let a request through that sends more pixels than its limits allow."""
    config = GuardConfig(max_request_pixels=20_000_000)
    with limits.request(config, fitter("openai")) as budget:
        first = limits.decode(photo_jpeg, "image", config)
        assert (first.width, first.height) == (1024, 768) and budget.pixels == 4032 * 3024
        with pytest.raises(MediaError, match="max_request_pixels"):
            limits.decode(photo_jpeg, "image", config)


def test_the_guard_reports_the_source_and_sends_the_fitted_original(photo_jpeg):
    fitted = Media.image(photo_jpeg, fit=fitter("openai"))
    seen = []

    def generate(variants):
        seen.extend(variants)
        return ["A cat."] * len(variants)

    result = SmoothGuard(n_samples=3, seed=0).run([fitted], generate, auto_resize="openai")
    site = result.noise[0]
    assert site.source == PHOTO_SIZE and site.drawn_at == (1024, 768)
    original = seen[0][0]
    assert original is not fitted and original == fitted  # a new object: adapters write it, not the full block


def test_fit_keeps_the_decoders_checks():
    """With a fit, a header that lies about its size is still refused before decoding, and a corrupt PNG still
    fails (reading a PNG's EXIF would decode it first: only a JPEG's is read early)."""
    import struct
    import zlib

    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    lying = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 9000, 9000, 8, 2, 0, 0, 0))
             + chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b""))
    with pytest.raises(MediaError, match="max_pixels"):
        Media.image(lying, max_pixels=4_000_000, fit=fitter("openai"))
    good = io.BytesIO()
    Image.fromarray(np.full((24, 32, 3), 90, np.uint8)).save(good, "PNG")
    raw = bytearray(good.getvalue())
    raw[-20] ^= 0xFF  # inside IDAT: its CRC no longer matches
    with pytest.raises(MediaError):
        Media.image(bytes(raw), fit=fitter(8))
