"""The core's dict-level content-list codec: scanning (dialects, nesting, policy) and rebuilding in kind."""

from __future__ import annotations

import base64
import copy
import io

import pytest
from PIL import Image

from smoothguard import GuardConfig
from smoothguard.content_codec import MAX_NESTING, rebuild, scan
from smoothguard.content_parts import UnsupportedContent, classify


def _png_b64(level: int) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (level,) * 3).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


IMG = _png_b64(100)
NEW = _png_b64(200)


def _anthropic(data: str = IMG) -> dict:
    return {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}}


def _content() -> list:
    return [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{IMG}", "detail": "low"}},
        {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "found"}, _anthropic()]},
        {"toolResult": {"toolUseId": "t2", "content": [
            {"type": "tool_result", "content": [{"type": "image", "base64": IMG, "mime_type": "image/png"}]}]}},
    ]


def test_scan_finds_top_level_and_nested_media_in_order() -> None:
    notes: list[str] = []
    found = list(scan(_content(), "messages[3].content", GuardConfig(), notes, message=3))
    assert [(r.message, r.block, r.path, r.keys, r.part.dialect) for r in found] == [
        (3, 1, (), (), "openai"),
        (3, 2, (1,), (("content",),), "anthropic"),
        (3, 3, (0, 0), (("toolResult", "content"), ("content",)), "langchain-v1"),
    ]
    assert [r.place for r in found] == ["messages[3].content[1]", "messages[3].content[2].content[1]",
                                        "messages[3].content[3].toolResult.content[0].content[0]"]
    assert notes == []


def test_scan_refuses_nested_media_when_asked_and_passes_it_through_under_the_policy() -> None:
    content = [{"type": "tool_result", "content": [_anthropic()]}]
    with pytest.raises(UnsupportedContent, match=r"m\[0\]\.content\[0\] .*top-level only") as error:
        list(scan(content, "m", GuardConfig(), [], refuse_nested="top-level only"))
    assert error.value.code == "unsupported_media" and error.value.place == "m[0].content[0]"
    notes: list[str] = []
    assert list(scan(content, "m", GuardConfig(unsmoothable_media="passthrough"), notes,
                     refuse_nested="top-level only")) == []
    assert len(notes) == 1 and "m[0].content[0]" in notes[0] and "passed through" in notes[0]


def test_scan_is_lazy_so_the_first_problem_in_order_is_raised_first() -> None:
    content = [_anthropic(), {"type": "hologram"}]
    parts = scan(content, "m", GuardConfig(), [])
    assert next(parts).block == 0  # the unknown part after it is not looked at yet
    with pytest.raises(UnsupportedContent, match="hologram"):
        next(parts)


def test_scan_refuses_nesting_deeper_than_the_bound() -> None:
    def nest(depth: int) -> list:
        block: dict = _anthropic()
        for _ in range(depth):
            block = {"type": "tool_result", "content": [block]}
        return [block]

    assert len(list(scan(nest(MAX_NESTING), "m", GuardConfig(), []))) == 1
    with pytest.raises(UnsupportedContent, match=f"nested more than {MAX_NESTING} levels") as error:
        list(scan(nest(MAX_NESTING + 1), "m", GuardConfig(), []))
    assert error.value.code == "invalid_messages" and error.value.place.endswith(".content")


def test_invalid_media_carries_the_keys_that_are_wrong() -> None:
    with pytest.raises(UnsupportedContent) as error:
        list(scan([{"type": "image_url", "image_url": {}}], "m", GuardConfig(), []))
    assert error.value.code == "invalid_media" and error.value.problem_path == ("image_url", "url")


def test_rebuild_writes_in_kind_shares_untouched_parts_and_mutates_nothing() -> None:
    contents = {0: [{"type": "text", "text": "hi"}], 1: _content()}
    before = copy.deepcopy(contents)
    found = list(scan(contents[1], "c", GuardConfig(), [], message=1))
    new = rebuild(contents.__getitem__, [(r, NEW, "image/png") for r in found])
    assert contents == before and set(new) == {1}
    out = new[1]
    assert out is not contents[1] and out[0] is contents[1][0]  # untouched parts are the same objects
    assert out[1]["image_url"] == {"url": f"data:image/png;base64,{NEW}", "detail": "low"}
    assert out[2]["content"][0] is contents[1][2]["content"][0]
    assert out[2]["content"][1] == _anthropic(NEW) and out[2]["tool_use_id"] == "t1"
    inner = out[3]["toolResult"]["content"][0]["content"][0]
    assert inner == {"type": "image", "base64": NEW, "mime_type": "image/png"}
    assert out[3]["toolResult"]["toolUseId"] == "t2"
    again = list(scan(out, "c", GuardConfig(), [], message=1))
    assert [(r.block, r.path, r.part.dialect, r.part.type) for r in again] == \
        [(r.block, r.path, r.part.dialect, r.part.type) for r in found]
    assert all(classify(r.original).value != classify(f.original).value for r, f in zip(again, found, strict=True))


def test_rebuild_composes_two_writes_into_one_container() -> None:
    content = [{"type": "tool_result", "content": [_anthropic(), _anthropic()]}]
    found = list(scan(content, "c", GuardConfig(), []))
    out = rebuild(lambda i: content, [(found[0], NEW, "image/png"), (found[1], NEW, "image/png")])[0]
    assert out[0]["content"] == [_anthropic(NEW), _anthropic(NEW)] and content[0]["content"][0] == _anthropic()
