"""The content-block codec: every dialect found, written back in its own dialect, nothing mutated."""

from __future__ import annotations

import base64
import copy

import numpy as np
import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.prompt_values import ChatPromptValue
from lc_fakes import png_b64

from smoothguard import GuardConfig, Media, SmoothGuard
from smoothguard.errors import MediaError
from smoothguard_langchain.blocks import find_media
from smoothguard_langchain.inputs import find_input_media

CONFIG = GuardConfig(seed=0, n_samples=3, allow_private_fetch=True)  # the tests' media server is on 127.0.0.1


def _message(block: dict) -> HumanMessage:
    return HumanMessage(content=[{"type": "text", "text": "What is this?"}, block])


def _payload(block: dict) -> str:
    """The base64 payload of a written block, whatever its dialect."""
    if block["type"] == "image_url":
        return block["image_url"]["url"].split(",", 1)[1]
    if block["type"] == "input_audio":
        return block["input_audio"]["data"]
    if "source" in block:
        return block["source"]["data"]
    return block.get("base64") or block["data"]


@pytest.mark.parametrize("name", ["v1_image", "openai_image", "v0_image", "anthropic_image", "v1_audio",
                                  "openai_audio"])
def test_each_dialect_is_found_and_written_back_in_the_same_dialect(blocks, name):
    block = blocks[name]
    messages = [SystemMessage("be brief"), _message(block)]
    before = copy.deepcopy(messages)
    found = find_media(messages, CONFIG)
    assert [(s.message, s.block, s.kind) for s in found.slots] == [(1, 1, "audio" if "audio" in name else "image")]
    assert "messages[1].content[1]" in found.slots[0].label

    variants = SmoothGuard(CONFIG).perturb(found.media)
    original, noisy = found.rebuild(variants[0]), found.rebuild(variants[1])
    block = messages[1].content[1]  # (the message holds its own copy of the dict)
    assert original[1].content[1] is block  # candidate 0: the very same block object
    written = noisy[1].content[1]
    assert written is not block and written.keys() == block.keys() and written["type"] == block["type"]
    for key in ("image_url", "input_audio", "source"):
        if key in block:
            assert written[key].keys() == block[key].keys()
    assert written.get("source_type") == block.get("source_type")
    assert noisy[1].content[0] is messages[1].content[0]  # the text block is shared, not copied
    assert noisy[0] is messages[0]  # a message without media is the same object
    decoded = Media.image(base64.b64decode(_payload(written))) if "image" in name else Media.audio(
        base64.b64decode(_payload(written)))
    step = 0.5 / 255 if "image" in name else 1 / 32768  # PNG / 16-bit PCM quantisation
    assert np.abs(decoded.data - variants[1][0].data).max() <= step + 1e-6
    assert messages == before  # the caller's messages and blocks are unchanged


def test_dict_and_tuple_messages_and_several_media(blocks):
    messages = [{"role": "user", "content": [blocks["openai_image"], blocks["v1_audio"]]},
                ("human", [{"type": "text", "text": "and this"}, blocks["anthropic_image"]])]
    before = copy.deepcopy(messages)
    found = find_media(messages, CONFIG)
    assert [s.kind for s in found.slots] == ["image", "audio", "image"]
    rebuilt = found.rebuild(SmoothGuard(CONFIG).perturb(found.media)[2])
    assert isinstance(rebuilt[0], dict) and rebuilt[0]["role"] == "user"
    assert isinstance(rebuilt[1], tuple) and rebuilt[1][0] == "human"
    assert rebuilt[0]["content"][0]["type"] == "image_url" and rebuilt[1][1][1]["source"]["type"] == "base64"
    assert messages == before


def test_text_only_messages_and_non_media_blocks_are_left_alone():
    cache = {"type": "cache_point", "ttl": 5}
    thinking = {"type": "thinking", "thinking": "hmm"}
    messages = [HumanMessage(content=[cache, thinking, "plain string", {"type": "text", "text": "hi"}]),
                AIMessage("plain text")]
    found = find_media(messages, CONFIG)
    assert found.slots == () and found.notes == ()
    assert found.rebuild([]) == messages and found.rebuild([])[0] is messages[0]


def _passthrough(config: GuardConfig) -> GuardConfig:
    """``config`` with unsmoothable_media='passthrough' (set directly while GuardConfig has no such field)."""
    import dataclasses

    if "unsmoothable_media" in {f.name for f in dataclasses.fields(GuardConfig)}:
        return config.replace(unsmoothable_media="passthrough")
    object.__setattr__(config, "unsmoothable_media", "passthrough")
    return config


@pytest.mark.parametrize(("block", "words"), [
    ({"type": "video", "url": "https://example.com/v.mp4"}, "video is not smoothed"),
    ({"type": "file", "base64": "JVBERi0=", "mime_type": "application/pdf"}, "files and documents"),
    ({"type": "x-unknown", "payload": 1}, "unknown part type"),
])
def test_video_files_and_unknown_blocks_are_refused_unless_passed_through(block, words):
    messages = [HumanMessage(content=[{"type": "text", "text": "hi"}, block])]
    with pytest.raises(MediaError, match=r"messages\[0\]\.content\[1\]") as info:
        find_media(messages, CONFIG)
    assert words in str(info.value)
    if block["type"] == "x-unknown":  # unknown blocks are refused whatever the policy
        with pytest.raises(MediaError, match="unknown part type"):
            find_media(messages, _passthrough(GuardConfig(seed=0, n_samples=3)))
        return
    found = find_media(messages, _passthrough(GuardConfig(seed=0, n_samples=3)))
    assert found.slots == () and "passed through unsmoothed" in found.notes[0] and "content[1]" in found.notes[0]


@pytest.mark.parametrize(("block", "expected"), [
    ({"type": "image", "base64": "not base64 at all!", "mime_type": "image/png"}, "not valid base64"),
    ({"type": "image", "base64": base64.b64encode(b"hello world").decode(), "mime_type": "image/png"},
     "could not decode"),
    ({"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}, "could not decode"),
    ({"type": "image_url", "image_url": {"url": "data:text/plain;base64,AAAA"}}, "MIME type"),
    ({"type": "image", "source": {"type": "base64", "media_type": "image/png"}}, "unsupported source type"),
    ({"type": "image", "source_type": "base64", "mime_type": "image/png"}, "source_type"),
    ({"type": "image"}, "no 'base64', 'url' or 'file_id'"),
    ({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "mp3"}}, "only WAV"),
    ({"type": "audio", "base64": png_b64(), "mime_type": "audio/wav"}, "only WAV audio"),
    ({"type": "image_url", "image_url": {"url": "gs://bucket/cat.png"}}, "only data: and http(s)"),
    ({"type": "image", "base64": 12345}, "must be a string"),
    ({"type": "image_url", "image_url": {"url": ["not", "a", "url"]}}, "must be a string"),
])
def test_bad_blocks_raise_media_error_naming_the_block(block, expected):
    with pytest.raises(MediaError) as info:
        find_media([HumanMessage("hi"), _message(block)], CONFIG)
    assert "messages[1].content[1]" in str(info.value) and expected in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no PIL/base64 traceback


def test_size_limits_apply(image_b64):
    with pytest.raises(MediaError, match="max_media_bytes"):
        find_media([_message({"type": "image", "base64": image_b64 * 50})], GuardConfig(max_media_bytes=1000))
    with pytest.raises(MediaError, match="max_pixels"):
        find_media([_message({"type": "image", "base64": image_b64})], GuardConfig(max_image_pixels=100))


def test_remote_media_fetch_passthrough_and_error(media_server):
    url = f"{media_server}/img.png"
    for block in ({"type": "image_url", "image_url": {"url": url}}, {"type": "image", "url": url},
                  {"type": "image", "source_type": "url", "url": url},
                  {"type": "image", "source": {"type": "url", "url": url}}):
        messages = [_message(block)]
        found = find_media(messages, CONFIG)
        assert len(found.slots) == 1 and found.slots[0].media.width == 32
        variants = SmoothGuard(CONFIG).perturb(found.media)
        original = found.rebuild(variants[0])[0].content[1]  # candidate 0 goes inline too: what the guard saw
        assert url not in str(original) and base64.b64decode(_payload(original))[:4] == b"\x89PNG"
        written = found.rebuild(variants[1])[0].content[1]
        assert written["type"] == block["type"] and url not in str(written)  # the noisy copy is inline
        assert base64.b64decode(_payload(written))[:4] == b"\x89PNG"

    block = {"type": "image_url", "image_url": {"url": url}}
    found = find_media([_message(block)], GuardConfig(remote_media="passthrough"))
    assert found.slots == () and "passed through unsmoothed" in found.notes[0] and url in found.notes[0]
    with pytest.raises(MediaError, match=r"messages\[0\]\.content\[1\].*remote_media='error'"):
        find_media([_message(block)], GuardConfig(remote_media="error"))
    with pytest.raises(MediaError, match=r"messages\[0\]\.content\[1\].*HTTP 404"):
        find_media([_message({"type": "image_url", "image_url": {"url": f"{media_server}/missing"}})], CONFIG)


def test_provider_file_ids_cannot_be_smoothed():
    block = {"type": "image", "file_id": "file-abc"}
    with pytest.raises(MediaError, match="file id"):
        find_media([_message(block)], CONFIG)
    found = find_media([_message(block)], GuardConfig(remote_media="passthrough"))
    assert found.slots == () and "file-abc" in found.notes[0]


def test_runnable_inputs_prompt_values_dicts_and_raw_media_keys(blocks, image_b64):
    messages = [_message(blocks["v1_image"])]
    for value in (messages, tuple(messages), messages[0], ChatPromptValue(messages=messages),
                  {"messages": messages, "topic": "cats"}):
        before = copy.deepcopy(value)
        found = find_input_media(value, CONFIG)
        assert len(found.media) == 1
        variants = SmoothGuard(CONFIG).perturb(found.media)
        rebuilt = found.rebuild(variants[1])
        assert type(rebuilt) is type(value) and rebuilt != value and value == before

    raw = {"image": image_b64, "url": f"data:image/png;base64,{image_b64}", "data": base64.b64decode(image_b64),
           "question": "what?"}
    found = find_input_media(raw, CONFIG, {"image": "image", "url": "image", "data": "image"})
    assert len(found.media) == 3
    noisy = found.rebuild(SmoothGuard(CONFIG).perturb(found.media)[1])
    assert noisy["question"] == "what?" and isinstance(noisy["data"], bytes)
    assert noisy["url"].startswith("data:image/png;base64,") and not noisy["image"].startswith("data:")
    assert noisy["image"] != image_b64
    assert abs(Media.image(noisy["url"]).data.mean() - Media.image(base64.b64decode(noisy["image"])).data.mean()) < 0.01
    assert find_input_media("just text", CONFIG).media == []
    with pytest.raises(MediaError, match=r"input\['image'\]"):
        find_input_media({"image": "%%%"}, CONFIG, {"image": "image"})
