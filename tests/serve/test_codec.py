"""The OpenAI body codec, the serve settings and the redactor, without any server."""

from __future__ import annotations

import base64
import copy
import json

import numpy as np
import pytest
from serve_support import decode_data_url, image_message, png_url, wav_b64

from smoothguard import GuardConfig, Media, SmoothGuard
from smoothguard.errors import ConfigError, MediaError
from smoothguard.serve import ServeSettings, load_config_file
from smoothguard.serve.codec import answer_text, candidate_body, decode_slot, find_media, inline
from smoothguard.serve.errors import ProxyError, Redactor
from smoothguard.serve.settings import DEFAULT_LIMITS, apply_overrides


def body_with_all_dialects() -> dict:
    return {
        "model": "m",
        "messages": [
            {"role": "system", "content": "Be brief."},
            image_message(png_url(0.8), detail="low"),
            {"role": "user", "content": [
                {"type": "image_url", "image_url": png_url(0.3)},
                {"type": "input_audio", "input_audio": {"data": wav_b64(), "format": "wav"}},
                {"type": "audio_url", "audio_url": {"url": "https://example.com/a.wav"}},
                "a bare string part",
            ]},
        ],
        "smoothguard": {"n_samples": 3},
    }


def test_find_media_reads_every_dialect_in_order():
    slots = find_media(body_with_all_dialects())
    assert [(s.message, s.block, s.type, s.kind, s.source) for s in slots] == [
        (1, 1, "image_url", "image", "data"),
        (2, 0, "image_url", "image", "data"),
        (2, 1, "input_audio", "audio", "data"),
        (2, 2, "audio_url", "audio", "url"),
    ]
    assert slots[0].param == "messages[1].content[1]"
    assert find_media({"messages": [{"role": "user", "content": "just text"}]}) == []


@pytest.mark.parametrize(("body", "param"), [
    ({}, "messages"),
    ({"messages": []}, "messages"),
    ({"messages": ["hello"]}, "messages[0]"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
     "messages[0].content[0].image_url.url"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "ftp://x/y.png"}]}]},
     "messages[0].content[0].image_url.url"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": "abc"}]}]},
     "messages[0].content[0].input_audio"),
    ({"messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": "data:video/mp4,"}}]}]},
     "messages[0].content[0]"),
])
def test_malformed_bodies_are_400_naming_the_field(body, param):
    with pytest.raises(ProxyError) as info:
        find_media(body)
    assert info.value.status == 400 and info.value.param == param
    assert info.value.body()["error"]["type"] == "invalid_request_error"


def test_candidate_bodies_keep_the_original_and_replace_copies_without_touching_the_input():
    body = body_with_all_dialects()
    before = copy.deepcopy(body)
    config = GuardConfig(n_samples=3, seed=0)
    slots = [s for s in find_media(body) if s.source == "data"]
    media = [decode_slot(s, config) for s in slots]
    variants = SmoothGuard(config).perturb(media)
    original = candidate_body(body, slots, media, variants[0], set_fields={"temperature": 0},
                              drop_fields=("smoothguard",))
    assert original["messages"] is not body["messages"]
    for i, message in enumerate(body["messages"]):
        assert original["messages"][i] is message  # nothing copied: every block is the client's own
    assert original["temperature"] == 0 and "smoothguard" not in original

    noisy = candidate_body(body, slots, media, variants[1])
    assert noisy["messages"][0] is body["messages"][0]  # untouched messages are shared
    block = noisy["messages"][1]["content"][1]
    assert block["image_url"]["detail"] == "low" and block["image_url"]["url"].startswith("data:image/png;base64,")
    assert noisy["messages"][1]["content"][0] == body["messages"][1]["content"][0]  # text unchanged
    assert isinstance(noisy["messages"][2]["content"][0]["image_url"], str)  # the string form stays a string
    audio = noisy["messages"][2]["content"][1]["input_audio"]
    assert audio["format"] == "wav" and audio["data"] != wav_b64()
    assert noisy["messages"][2]["content"][2] is body["messages"][2]["content"][2]  # the URL slot is not smoothed
    pixels = decode_data_url(block["image_url"]["url"])
    assert pixels.shape == (16, 16, 3) and 0.005 < abs(pixels - 0.8).mean() < 0.08
    assert body == before
    json.dumps(noisy)


def test_noisy_copies_of_a_jpeg_are_sent_lossless():
    body = {"messages": [image_message(png_url(0.5, fmt="JPEG"))]}
    slots = find_media(body)
    media = [decode_slot(slots[0], GuardConfig())]
    variant = SmoothGuard(n_samples=2, seed=1).perturb(media)[1]
    url = candidate_body(body, slots, media, variant)["messages"][0]["content"][1]
    raw = base64.b64decode(url["image_url"]["url"].removeprefix("data:image/png;base64,"))
    np.testing.assert_array_equal(Media.image(raw).data, variant[0].to_array("uint8") / np.float32(255))


def test_inline_replaces_a_url_with_the_fetched_bytes():
    body = {"messages": [image_message("https://example.com/cat.png")]}
    slot = find_media(body)[0]
    raw = Media.image(png_url(0.5)).to_png_bytes()
    new_body, new_slot = inline(body, slot, raw, Media.image(raw))
    assert new_slot.source == "data" and new_slot.value.startswith("data:image/png;base64,")
    assert new_body["messages"][0]["content"][1]["image_url"]["url"] == new_slot.value
    assert body["messages"][0]["content"][1]["image_url"]["url"] == "https://example.com/cat.png"


def test_inline_labels_the_fetched_bytes_by_their_own_format():
    """A fetched JPEG decoded straight to a smaller size (a PNG-written Media) is still inlined as the JPEG it is."""
    body = {"messages": [image_message("https://example.com/cat.jpg")]}
    slot = find_media(body)[0]
    raw = Media.image(np.full((600, 800, 3), 128, np.uint8)).to_bytes("jpeg")
    fitted = Media.image(raw, fit=lambda w, h: (w // 4, h // 4))
    assert fitted.format == "png" and fitted.source_size == (800, 600)
    _, new_slot = inline(body, slot, raw, fitted)
    assert new_slot.value.startswith("data:image/jpeg;base64,")


def test_decode_limits_and_formats():
    config = GuardConfig(max_media_bytes=64)
    big = find_media({"messages": [image_message(png_url(0.5, size=64))]})[0]
    with pytest.raises(MediaError, match=r"max_bytes|max_media_bytes"):
        decode_slot(big, config)
    mp3 = find_media({"messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "SUQz", "format": "mp3"}}]}]})[0]
    with pytest.raises(MediaError, match="only WAV"):
        decode_slot(mp3, GuardConfig())
    bad = find_media({"messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "!!notbase64!!", "format": "wav"}}]}]})[0]
    with pytest.raises(MediaError, match="base64"):
        decode_slot(bad, GuardConfig())


def test_answer_text():
    def completion(message):
        return {"choices": [{"index": 0, "message": message}]}

    assert answer_text(completion({"content": "A cat."})) == "A cat."
    assert answer_text(completion({"content": [{"type": "text", "text": "A "}, {"type": "text", "text": "cat."}]})) \
        == "A cat."
    calls = [{"id": "x", "type": "function", "function": {"name": "look", "arguments": '{"b": 1, "a": 2}'}}]
    assert json.loads(answer_text(completion({"content": None, "tool_calls": calls}))) == \
        [{"name": "look", "arguments": {"a": 2, "b": 1}}]
    assert answer_text(completion({"content": None})) == ""
    for bad in ({}, {"choices": []}, {"choices": [{"message": "x"}]}, []):
        with pytest.raises(ValueError):
            answer_text(bad)


# -- settings -------------------------------------------------------------------------------------------------


def test_settings_normalise_validate_and_hide_the_key():
    s = ServeSettings(upstream="http://127.0.0.1:8001", api_key="sk-operator-secret")
    assert s.upstream == "http://127.0.0.1:8001/v1"
    assert ServeSettings(upstream="https://h/v1/").upstream == "https://h/v1"
    assert "sk-operator-secret" not in repr(s) and "api_key" not in s.to_dict()
    assert s.limits["n_samples"] == DEFAULT_LIMITS["n_samples"]
    relaxed = s.replace(limits={"n_samples": (1, 64)})
    assert relaxed.limits["n_samples"] == (1, 64) and relaxed.limits["sigma"] == DEFAULT_LIMITS["sigma"]
    assert relaxed.api_key == "sk-operator-secret"
    for bad in ({"upstream": "ftp://x"}, {"upstream": ""}, {"upstream": "http://h", "max_body_bytes": 0},
                {"upstream": "http://h", "overridable": ("embedder",)},
                {"upstream": "http://h", "overridable": ("sigm",)},
                {"upstream": "http://h", "limits": {"sigma": (1, 0)}}, {"upstream": "http://h", "temperature": 3},
                {"upstream": "http://h", "image_format": "gif"}, {"upstream": "http://h", "bogus": 1}):
        with pytest.raises(ConfigError):
            ServeSettings.from_mapping(bad)


def test_api_key_env(monkeypatch):
    monkeypatch.setenv("SG_TEST_KEY", "sk-from-env-1234")
    assert ServeSettings(upstream="http://h", api_key_env="SG_TEST_KEY").resolve_api_key() == "sk-from-env-1234"
    monkeypatch.delenv("SG_TEST_KEY")
    with pytest.raises(ConfigError, match="SG_TEST_KEY"):
        ServeSettings(upstream="http://h", api_key_env="SG_TEST_KEY").resolve_api_key()
    assert ServeSettings(upstream="http://h").resolve_api_key() is None


def test_overrides_within_limits():
    settings = ServeSettings(upstream="http://h")
    base = GuardConfig(n_samples=11)
    assert apply_overrides(base, None, settings) is base
    changed = apply_overrides(base, {"sigma": 0.15, "n_samples": 7}, settings)
    assert (changed.sigma, changed.n_samples) == (0.15, 7)
    cases = [
        ({"n_samples": 100}, "smoothguard_override_out_of_limits", "smoothguard.n_samples"),
        ({"sigma": 0.0}, "smoothguard_override_out_of_limits", "smoothguard.sigma"),
        ({"n_samples": "7"}, "invalid_smoothguard_override", "smoothguard.n_samples"),
        ({"min_agreement": 0.1}, "smoothguard_override_not_allowed", "smoothguard.min_agreement"),
        ({"embedder": "evil/model"}, "smoothguard_override_not_allowed", "smoothguard.embedder"),
        ({"n_sample": 5}, "invalid_smoothguard_override", "smoothguard.n_sample"),
        ({"seed": 1}, "smoothguard_override_not_allowed", "smoothguard.seed"),  # clients may not choose the noise
        ({"adaptive": "yes"}, "invalid_smoothguard_override", "smoothguard"),
        ([1, 2], "invalid_smoothguard_override", "smoothguard"),
    ]
    for raw, code, param in cases:
        with pytest.raises(ProxyError) as info:
            apply_overrides(base, raw, settings)
        assert (info.value.status, info.value.code, info.value.param) == (400, code, param), raw
    with pytest.raises(ProxyError, match="did you mean 'n_samples'"):
        apply_overrides(base, {"n_sample": 5}, settings)
    timed = ServeSettings(upstream="http://h", overridable=("time_budget",))
    assert apply_overrides(base.replace(time_budget=30), {"time_budget": 5}, timed).time_budget == 5.0
    for value in (0.01, 3600):
        with pytest.raises(ProxyError, match="outside the operator's limits"):
            apply_overrides(base, {"time_budget": value}, timed)


def test_config_files(tmp_path):
    toml = tmp_path / "sg.toml"
    toml.write_text('sigma = 0.2\nn_samples = 7\n[serve]\nupstream = "http://h:1/v1"\n'
                    '[serve.limits]\nn_samples = [3, 9]\n')
    guard, serve = load_config_file(toml)
    assert guard == {"sigma": 0.2, "n_samples": 7}
    assert ServeSettings.from_mapping(serve).limits["n_samples"] == (3.0, 9.0)
    js = tmp_path / "sg.json"
    js.write_text(json.dumps({"seed": 3, "serve": {"upstream": "http://h"}}))
    assert load_config_file(js) == ({"seed": 3}, {"upstream": "http://h"})
    (tmp_path / "bad.toml").write_text("sigma = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config_file(tmp_path / "bad.toml")
    with pytest.raises(ConfigError, match="could not read"):
        load_config_file(tmp_path / "missing.toml")


def test_redactor():
    redact = Redactor(["sk-operator-secret", "client-token-xyz", None, ""])
    text = ("Incorrect API key provided: sk-operator-secret; header Authorization: Bearer abc.def and "
            "client-token-xyz and sk-proj-ABCDEF123456")
    clean = redact(text)
    for secret in ("sk-operator-secret", "abc.def", "client-token-xyz", "sk-proj-ABCDEF123456"):
        assert secret not in clean
    assert "Incorrect API key provided" in clean
