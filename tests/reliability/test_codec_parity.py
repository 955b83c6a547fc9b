"""The LangChain block codec and the proxy's body codec are one codec (smoothguard.content_codec): the same content
parts, top-level and nested, in every dialect, are found at the same places and written back in kind, the same."""

from __future__ import annotations

import base64
import copy
import io
import wave

import numpy as np
import pytest
from PIL import Image

from smoothguard import GuardConfig, SmoothGuard
from smoothguard.content_parts import classify
from smoothguard.serve.codec import candidate_body, decode_slot
from smoothguard.serve.codec import find_media as proxy_find_media
from smoothguard.serve.errors import ProxyError
from smoothguard_langchain.blocks import find_media as lc_find_media


def _png_b64() -> str:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), 100, np.uint8)).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _wav_b64() -> str:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes((np.sin(np.arange(1600) / 8) * 8000).astype("<i2").tobytes())
    return base64.b64encode(buf.getvalue()).decode("ascii")


PNG, WAV = _png_b64(), _wav_b64()
PNG_URL = f"data:image/png;base64,{PNG}"
PARTS = {
    "openai-image_url": {"type": "image_url", "image_url": {"url": PNG_URL, "detail": "low"}},
    "openai-image_url-string": {"type": "image_url", "image_url": PNG_URL},
    "openai-image_url-typeless": {"image_url": {"url": PNG_URL}},
    "openai-input_audio": {"type": "input_audio", "input_audio": {"data": WAV, "format": "wav"}},
    "responses-input_image": {"type": "input_image", "image_url": PNG_URL, "detail": "auto"},
    "vllm-audio_url": {"type": "audio_url", "audio_url": {"url": f"data:audio/wav;base64,{WAV}"}},
    "vllm-image_url-uuid": {"type": "image_url", "image_url": {"url": PNG_URL}, "uuid": "img-1"},
    "anthropic-image": {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
    "gemini-inline_data": {"inline_data": {"mime_type": "image/png", "data": PNG}},
    "gemini-inlineData": {"inlineData": {"mimeType": "image/png", "data": PNG}},
    "gemini-media": {"type": "media", "mime_type": "image/png", "data": PNG},
    "v1-image": {"type": "image", "base64": PNG, "mime_type": "image/png"},
    "v1-image-data-url": {"type": "image", "url": PNG_URL},
    "v1-audio": {"type": "audio", "base64": WAV, "mime_type": "audio/wav"},
    "v0-image": {"type": "image", "source_type": "base64", "data": PNG, "mime_type": "image/png"},
}
#: containers and the keys from the container to its nested content list
CONTAINERS = {
    "tool_result": (lambda inner: {"type": "tool_result", "tool_use_id": "t1", "content": [inner]}, ("content",)),
    "bedrock-toolResult": (lambda inner: {"toolResult": {"toolUseId": "t1", "content": [inner]}},
                           ("toolResult", "content")),
}
CONFIG = GuardConfig(image_resize="none")


def _messages(part: dict) -> list[dict]:
    return [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "What is it?"}, part]}]


def _variant(media: list) -> list:
    """One noisy copy of ``media`` (every item new)."""
    return SmoothGuard(CONFIG.replace(seed=0)).perturb(media, n=2)[1]


def _leaf(part: dict, keys: tuple[str, ...]) -> dict:
    for key in keys:
        part = part[key]
    return part[0] if keys else part


@pytest.mark.parametrize("name", sorted(PARTS))
def test_top_level_part_found_at_the_same_place_and_written_back_the_same(name: str) -> None:
    messages = _messages(PARTS[name])
    before = copy.deepcopy(messages)
    lc = lc_find_media(messages, CONFIG)
    proxy = proxy_find_media({"model": "m", "messages": messages}, CONFIG)
    assert [(s.message, s.block, s.path, s.kind, s.part.type) for s in lc.slots] == \
        [(s.message, s.block, (), s.kind, s.type) for s in proxy]
    assert [(s.message, s.block, s.kind) for s in proxy] == [(1, 1, classify(PARTS[name]).kind)]
    originals = [decode_slot(s, CONFIG) for s in proxy]
    assert all(np.array_equal(a.data, b.data) for a, b in zip(originals, lc.media, strict=True))

    variant = _variant(lc.media)
    lc_part = lc.rebuild(variant)[1]["content"][1]
    proxy_part = candidate_body({"model": "m", "messages": messages}, proxy, originals, variant)["messages"][1][
        "content"][1]
    assert lc_part == proxy_part  # the same new part, byte for byte
    old, new = classify(PARTS[name]), classify(lc_part)
    assert (new.kind, new.dialect, new.type, new.path, new.typeless) == (old.kind, old.dialect, old.type, old.path,
                                                                        old.typeless)  # written back in kind
    assert new.value != old.value and set(lc_part) == set(PARTS[name]) - {"uuid"}
    assert messages == before  # neither codec changed the caller's messages


@pytest.mark.parametrize("container", sorted(CONTAINERS))
@pytest.mark.parametrize("name", sorted(PARTS))
def test_nested_part_found_at_the_same_place(name: str, container: str) -> None:
    """LangChain smooths media inside a container; the proxy refuses it (or passes it through under
    ``unsmoothable_media="passthrough"``) at the very place LangChain found it."""
    wrap, keys = CONTAINERS[container]
    messages = _messages(wrap(PARTS[name]))
    before = copy.deepcopy(messages)
    lc = lc_find_media(messages, CONFIG)
    place = f"messages[1].content[1].{'.'.join(keys)}[0]"
    assert [(s.message, s.block, s.path) for s in lc.slots] == [(1, 1, (0,))]
    assert lc.slots[0].label.startswith(place + " (")

    with pytest.raises(ProxyError) as error:
        proxy_find_media({"model": "m", "messages": messages}, CONFIG)
    assert error.value.param == place and "nested inside another part" in str(error.value)
    passed = proxy_find_media({"model": "m", "messages": messages}, GuardConfig(unsmoothable_media="passthrough"))
    assert list(passed) == [] and len(passed.notes) == 1 and passed.notes[0].startswith(place + " (")

    rebuilt = lc.rebuild(_variant(lc.media))[1]["content"][1]
    old, new = classify(PARTS[name]), classify(_leaf(rebuilt, keys))
    assert (new.kind, new.dialect, new.type, new.path) == (old.kind, old.dialect, old.type, old.path)
    assert new.value != old.value and messages == before
