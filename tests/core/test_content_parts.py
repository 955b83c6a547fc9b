"""smoothguard.content_parts: what each content part is, how media are written back, and the one policy."""

from __future__ import annotations

import base64
import copy
import dataclasses
import sys

import pytest

from smoothguard import GuardConfig
from smoothguard.content_parts import (
    ContentPart,
    UnsupportedContent,
    check_part,
    classify,
    unsmoothable,
    unsmoothable_policy,
    write_media,
)

DATA = "data:image/png;base64,iVBORw0KGgo="
B64 = "iVBORw0KGgo="
WAV = "UklGRiQAAABXQVZF"


@pytest.mark.parametrize(("part", "kind", "source", "smoothable"), [
    ("plain string", "text", "none", False),
    ({"type": "text", "text": "hi"}, "text", "none", False),
    ({"type": "input_text", "text": "hi"}, "text", "none", False),
    ({"type": "output_text", "text": "hi"}, "text", "none", False),
    ({"type": "refusal", "refusal": "no"}, "text", "none", False),
    ({"type": "thinking", "thinking": "hmm", "signature": "s"}, "text", "none", False),
    ({"type": "reasoning", "summary": []}, "text", "none", False),
    ({"type": "tool_use", "id": "t", "name": "f", "input": {}}, "text", "none", False),
    ({"type": "tool_call", "id": "t", "name": "f", "args": {}}, "text", "none", False),
    ({"type": "cache_point"}, "text", "none", False),
    ({"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}, "text", "none",
     False),
    ({"text": "a Gemini part"}, "text", "none", False),
    ({"type": "custom_text", "text": "hi"}, "text", "none", False),  # clearly text
    ({"type": "image_url", "image_url": {"url": DATA}}, "image", "data_url", True),
    ({"type": "image_url", "image_url": "https://x/y.png"}, "image", "url", True),
    ({"image_url": {"url": DATA}}, "image", "data_url", True),
    ({"image_url": "https://x/y.png"}, "image", "url", True),
    ({"type": "input_image", "image_url": DATA}, "image", "data_url", True),
    ({"type": "input_image", "image_url": "https://x/y.png"}, "image", "url", True),
    ({"type": "input_image", "file_id": "file-1"}, "image", "id", False),
    ({"type": "input_audio", "input_audio": {"data": WAV, "format": "wav"}}, "audio", "base64", True),
    ({"input_audio": {"data": WAV, "format": "wav"}}, "audio", "base64", True),
    ({"type": "audio_url", "audio_url": {"url": "data:audio/wav;base64," + WAV}}, "audio", "data_url", True),
    ({"audio_url": "https://x/a.wav"}, "audio", "url", True),
    ({"type": "input_file", "file_id": "file-1"}, "file", "id", False),
    ({"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE"}}, "file", "data_url", False),
    ({"type": "video_url", "video_url": {"url": "https://x/v.mp4"}}, "video", "url", False),
    ({"video_url": "https://x/v.mp4"}, "video", "url", False),
    ({"type": "image_embeds", "image_embeds": "AAAA"}, "embeds", "object", False),
    ({"image_embeds": {"a": "AAAA"}}, "embeds", "object", False),
    ({"type": "prompt_embeds", "data": "AAAA"}, "embeds", "object", False),
    ({"type": "image_pil", "image_pil": object()}, "image", "object", False),
    ({"type": "image_url", "image_url": None, "uuid": "u"}, "image", "id", False),
    ({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": B64}}, "image", "base64",
     True),
    ({"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}, "image", "url", True),
    ({"type": "image", "source": {"type": "file", "file_id": "f"}}, "image", "id", False),
    ({"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}}, "file",
     "base64", False),
    ({"type": "container_upload", "file_id": "f"}, "file", "id", False),
    ({"inline_data": {"mime_type": "image/png", "data": B64}}, "image", "base64", True),
    ({"inlineData": {"mimeType": "audio/wav", "data": WAV}}, "audio", "base64", True),
    ({"inline_data": {"mime_type": "application/pdf", "data": "JVBE"}}, "file", "base64", False),
    ({"file_data": {"mime_type": "video/mp4", "file_uri": "gs://b/v"}}, "video", "id", False),
    ({"type": "media", "mime_type": "image/png", "data": B64}, "image", "base64", True),
    ({"type": "image", "base64": B64, "mime_type": "image/png"}, "image", "base64", True),
    ({"type": "image", "url": DATA}, "image", "data_url", True),
    ({"type": "image", "file_id": "f"}, "image", "id", False),
    ({"type": "audio", "source_type": "base64", "data": WAV, "mime_type": "audio/wav"}, "audio", "base64", True),
    ({"type": "video", "base64": "AAAA", "mime_type": "video/mp4"}, "video", "base64", False),
    ({"type": "file", "source_type": "base64", "data": "JVBE", "mime_type": "application/pdf"}, "file", "object",
     False),
    ({"type": "text-plain", "text": "hello", "mime_type": "text/plain"}, "text", "none", False),
    ({"type": "non_standard", "value": {"type": "image_url", "image_url": DATA}}, "image", "object", False),
    ({"type": "non_standard", "value": {"foo": 1, "text": "x"}}, "text", "none", False),
    ({"image": {"format": "png", "source": {"bytes": B64}}}, "image", "object", False),
    ({"type": "hologram"}, "unknown", "none", False),
    ({"type": "x_picture", "data": B64}, "unknown", "none", False),
    ({"blob": B64}, "unknown", "none", False),
    ({}, "unknown", "none", False),
    ({"type": 5}, "unknown", "none", False),
    (42, "unknown", "none", False),
    (None, "unknown", "none", False),
    ({"type": "text", "text": "hi", "image_url": DATA}, "unknown", "none", False),  # a second medium inside
    ({"type": "text", "text": "hi", "uuid": "u", "image_url": None}, "unknown", "none", False),
    ({"image_url": DATA, "video_url": "https://x/v.mp4"}, "unknown", "none", False),
])
def test_classify(part, kind, source, smoothable):
    info = classify(part)
    assert (info.kind, info.source, info.smoothable) == (kind, source, smoothable), info
    assert isinstance(info.label, str) and info.label


@pytest.mark.parametrize("part", [
    {"type": "image_url", "image_url": {}},
    {"type": "image_url", "image_url": "ftp://x/y.png"},
    {"type": "image_url", "image_url": {"url": ["a"]}},
    {"type": "input_audio", "input_audio": "abc"},
    {"type": "input_image"},
    {"type": "image"},
    {"type": "image", "source": {"type": "base64"}},
    {"type": "image", "source_type": "nope"},
    {"inline_data": "x"},
])
def test_malformed_media_is_a_problem_never_an_exception(part):
    info = classify(part)
    assert info.problem and not info.smoothable
    with pytest.raises(UnsupportedContent) as error:
        unsmoothable(info, "messages[0].content[0]", "passthrough")  # malformed: refused whatever the policy
    assert error.value.code == "invalid_media" and "messages[0].content[0]" in str(error.value)


def test_tool_results_name_their_nested_content():
    info = classify({"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "x"}]})
    assert info.kind == "text" and info.nested == ("content",)
    bedrock = classify({"toolResult": {"toolUseId": "t", "content": [{"text": "x"}]}})
    assert bedrock.kind == "text" and bedrock.nested == ("toolResult", "content")


@pytest.mark.parametrize(("part", "expected"), [
    ({"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}, "uuid": "u"},
     {"type": "image_url", "image_url": {"url": "data:image/png;base64,QUJD", "detail": "low"}}),
    ({"image_url": "https://x/y.png"}, {"image_url": "data:image/png;base64,QUJD"}),
    ({"type": "input_image", "image_url": "https://x/y.png", "detail": "auto"},
     {"type": "input_image", "image_url": "data:image/png;base64,QUJD", "detail": "auto"}),
    ({"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
     {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "QUJD"}}),
    ({"inlineData": {"mimeType": "image/jpeg", "data": B64}},
     {"inlineData": {"mimeType": "image/png", "data": "QUJD"}}),
    ({"type": "media", "mime_type": "image/jpeg", "data": B64},
     {"type": "media", "mime_type": "image/png", "data": "QUJD"}),
    ({"type": "image", "url": "https://x/y.png", "mime_type": "image/jpeg"},
     {"type": "image", "base64": "QUJD", "mime_type": "image/png"}),
    ({"type": "image", "source_type": "url", "url": DATA, "mime_type": "image/png"},
     {"type": "image", "source_type": "url", "url": "data:image/png;base64,QUJD", "mime_type": "image/png"}),
])
def test_write_media_keeps_the_shape_and_drops_a_uuid(part, expected):
    before = copy.deepcopy(part)
    written = write_media(part, classify(part), "QUJD", "image/png")
    assert written == expected and part == before
    assert classify(written).smoothable and classify(written).source in ("data_url", "base64")


def test_audio_is_written_back_as_wav():
    part = {"input_audio": {"data": WAV, "format": "wav"}}
    assert write_media(part, classify(part), "QUJD", "audio/wav") == {"input_audio": {"data": "QUJD",
                                                                                      "format": "wav"}}
    part = {"type": "audio_url", "audio_url": {"url": "https://x/a.wav"}}
    assert write_media(part, classify(part), "QUJD", "audio/wav")["audio_url"]["url"] == "data:audio/wav;base64,QUJD"


def _passthrough() -> GuardConfig:
    config = GuardConfig()
    if "unsmoothable_media" in {f.name for f in dataclasses.fields(GuardConfig)}:
        return config.replace(unsmoothable_media="passthrough")
    object.__setattr__(config, "unsmoothable_media", "passthrough")
    return config


def test_the_policy_refuses_by_default_and_notes_a_pass_through():
    video = classify({"type": "video_url", "video_url": {"url": "https://x/v.mp4"}})
    assert unsmoothable_policy(GuardConfig(), video) == "error" and unsmoothable_policy(None) == "error"
    with pytest.raises(UnsupportedContent) as error:
        check_part(video, "messages[1].content[2]", GuardConfig())
    message = str(error.value)
    assert error.value.code == "unsupported_media" and error.value.kind == "video"
    assert "messages[1].content[2]" in message and "video_url" in message and "unsmoothable_media='passthrough'" in \
        message and "still frames" in message
    assert error.value.__cause__ is None and error.value.__suppress_context__
    note = check_part(video, "messages[1].content[2]", _passthrough())
    assert "messages[1].content[2]" in note and "passed through unsmoothed" in note and "https://x/v.mp4" in note
    assert check_part(classify("text"), "x", GuardConfig()) == ""
    assert check_part(classify({"type": "image_url", "image_url": DATA}), "x", GuardConfig()) == ""


def test_unknown_parts_are_refused_whatever_the_policy():
    for config in (GuardConfig(), _passthrough()):
        with pytest.raises(UnsupportedContent) as error:
            check_part(classify({"type": "hologram"}), "messages[0].content[0]", config)
        assert error.value.code == "unknown_content_part" and "'hologram'" in str(error.value)
        assert "fail closed" in str(error.value)


def test_provider_file_ids_also_follow_remote_media_passthrough():
    file_id = classify({"type": "image", "file_id": "file-abc"})
    note = check_part(file_id, "messages[0].content[0]", GuardConfig(remote_media="passthrough"))
    assert "file-abc" in note and "remote_media='passthrough'" in note
    with pytest.raises(UnsupportedContent, match="file id"):
        check_part(file_id, "messages[0].content[0]", GuardConfig())
    video = classify({"type": "video", "url": "https://x/v.mp4"})  # remote_media covers only images/audio by id
    with pytest.raises(UnsupportedContent):
        check_part(video, "messages[0].content[0]", GuardConfig(remote_media="passthrough"))


def test_the_core_imports_no_framework():
    import subprocess

    code = ("import sys, smoothguard.content_parts, smoothguard.serve.codec; "
            "print([m for m in sys.modules if m.startswith(('langchain', 'llama_index'))])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def test_content_part_is_a_value():
    info = classify({"type": "input_image", "image_url": DATA})
    assert info == ContentPart("image", "responses", "input_image", "data_url", DATA, ("image_url",))
    assert base64.b64decode(B64)[:4] == b"\x89PNG"


@pytest.mark.parametrize("part", [
    {"type": "image", "base64": "aGVsbG8=", "url": "https://example.com/other.png", "mime_type": "image/png"},
    {"type": "audio", "base64": "aGVsbG8=", "file_id": "file-1", "mime_type": "audio/wav"},
    {"type": "image", "source_type": "base64", "data": "aGVsbG8=", "url": "https://example.com/other.png",
     "mime_type": "image/png"},
])
def test_a_block_carrying_its_medium_two_ways_is_refused(part):
    """langchain-core's converters send a block's url before its base64: the guard must not smooth the other one."""
    info = classify(part)
    assert info.problem is not None and "keep one" in info.problem
    with pytest.raises(UnsupportedContent, match="holds both") as caught:
        check_part(info, "messages[0].content[0]", GuardConfig())
    assert caught.value.code == "invalid_media"


@pytest.mark.parametrize("part", [
    {"type": "image", "source": {"type": []}},  # found by the codec fuzz: a list is not a source type
    {"type": "image", "source": {"type": {"base64": 1}}, "data": B64},
    {"type": "image", "source_type": ["base64"], "data": B64},
])
def test_an_unhashable_source_type_is_a_malformed_part_not_a_type_error(part):
    info = classify(part)
    assert info.problem is not None and "source" in info.problem
    with pytest.raises(UnsupportedContent):
        check_part(info, "messages[0].content[0]", GuardConfig())
