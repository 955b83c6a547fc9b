"""Regression tests for the bugs the reliability suite found (one section per fix)."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest
from langchain_core.messages import HumanMessage
from llama_index.core.base.llms.types import (
    ChatMessage,
    CitableBlock,
    CitationBlock,
    ImageBlock,
    MessageRole,
    TextBlock,
)
from reliability_support import MediaChat, MediaLLM, lc_first_media, li_first_media

from smoothguard import GuardConfig, Media, SmoothGuard
from smoothguard.errors import MediaError
from smoothguard_langchain import ChatSmoothGuard
from smoothguard_langchain.blocks import find_media
from smoothguard_llamaindex import SmoothGuardLLM

GREY = Media.image(np.full((32, 32, 3), 0.5, np.float32))
PNG = Media.image(np.random.default_rng(0).integers(40, 200, (12, 12, 3), dtype=np.uint8)).to_png_bytes()
B64 = base64.b64encode(PNG).decode()


# -- 1. Idefics3 / SmolVLM: a uniform 0.5 grey image normalises to all-zero tiles, taken for padding ------------


@pytest.fixture(scope="module", params=["idefics3", "smolvlm"])
def tiled(request):
    from fakes.tiny_models import BUILDERS

    from smoothguard.backends import HFVisionLanguageModel

    model, processor = BUILDERS[request.param]()
    return HFVisionLanguageModel(model, processor, max_new_tokens=3)


def test_uniform_grey_is_answered_alone_and_in_a_batch(tiled) -> None:
    other = Media.image(np.random.default_rng(1).integers(0, 256, (20, 28, 3), dtype=np.uint8))
    alone = tiled.generate("Describe the image.", [[GREY]])
    assert isinstance(alone[0], str)  # was: RuntimeError / ValueError (image features and tokens do not match)
    batch = tiled.generate("Describe the image.", [[GREY], [other], [GREY, other]])
    assert all(isinstance(a, str) for a in batch) and batch[0] == alone[0]
    result = SmoothGuard(n_samples=3, seed=0).ask(tiled, "Describe the image.", images=[GREY])
    assert result.n_used == 3 and all(s.error is None for s in result.samples)


def test_blank_tiles_get_one_tiny_mark_and_padding_stays_zero(tiled) -> None:
    from smoothguard.backends.families import pixel_slices

    other = Media.image(np.random.default_rng(1).integers(0, 256, (12, 12, 3), dtype=np.uint8))
    inputs = tiled.build_inputs("Describe.", [[GREY, GREY], [other]])  # sample 1 is padded to sample 0's tiles
    real = pixel_slices(tiled.family, inputs, [2, 1])
    grey = real[0].flatten(1)
    assert bool((grey != 0).any(dim=1).all())  # no real tile is all zero
    assert int((grey != 0).sum()) == grey.shape[0] and float(grey.abs().max()) == pytest.approx(1e-3)
    padding = inputs["pixel_values"][1, real[1].shape[0]:]
    assert padding.numel() and bool((padding == 0).all())  # batch padding is untouched


# -- 2. ChatSmoothGuard: langchain-core's own normalisation raised a bare ValueError -------------------------------


@pytest.mark.parametrize("block", [
    {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}},
    {"type": "input_audio", "input_audio": {"data": "", "format": "mp3"}},
    {"type": "image", "base64": None},  # found by the fuzzer: langchain-core's tracing format rejects it
])
async def test_blocks_langchain_core_rejects_give_media_error(block: dict) -> None:
    inner = MediaChat()
    guard = ChatSmoothGuard(model=inner, n_samples=3, seed=0)
    message = [HumanMessage(content=[{"type": "text", "text": "What is this?"}, block])]
    with pytest.raises(MediaError, match=r"messages\[0\]: langchain-core cannot read"):
        guard.invoke(message)
    with pytest.raises(MediaError):
        await guard.ainvoke(message)
    with pytest.raises(MediaError):
        guard.batch([message])
    assert inner.calls == 0


# -- 3. media nested in blocks (Anthropic tool_result, LlamaIndex CitableBlock) went through unsmoothed ----------


def _tool_result() -> dict:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": B64}}
    return {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "found"}, image]}


def test_langchain_nested_tool_result_image_is_smoothed() -> None:
    message = HumanMessage(content=[{"type": "text", "text": "What did the tool see?"}, _tool_result()])
    found = find_media([message], GuardConfig())
    assert [(s.message, s.block, s.path) for s in found.slots] == [(0, 1, (1,))]
    assert found.slots[0].label.startswith("messages[0].content[1].content[1]")

    inner = MediaChat(script=lambda n, m: "A picture.")
    reply = ChatSmoothGuard(model=inner, n_samples=4, seed=0).invoke([message])
    assert reply.response_metadata["smoothguard"]["n_used"] == 4
    sent = [lc_first_media([HumanMessage(content=m[0].content[1]["content"])]) for m in inner.received]
    clean = Media.image(PNG)
    assert sum(np.array_equal(m.data, clean.data) for m in sent) == 1  # the original once, then noisy copies
    assert len(sent) == 4 and all(m.data.shape == clean.data.shape for m in sent)
    assert message.content[1] == _tool_result()  # the caller's block is untouched


def test_langchain_deep_nesting_is_a_media_error_not_a_recursion_error() -> None:
    block: dict = {"type": "text", "text": "bottom"}
    for _ in range(5000):
        block = {"type": "tool_result", "content": [block]}  # (an unknown "wrapper" type is refused at once)
    with pytest.raises(MediaError, match="nested more than"):
        find_media([HumanMessage(content=[block])], GuardConfig())


def test_llamaindex_images_inside_citable_and_citation_blocks_are_smoothed() -> None:
    citable = CitableBlock(title="search", source="tool", content=[TextBlock(text="result"), ImageBlock(image=PNG)])
    citation = CitationBlock(title="doc", source="s", cited_content=ImageBlock(image=PNG), additional_location_info={})
    messages = [ChatMessage(role=MessageRole.USER, blocks=[TextBlock(text="What is shown?"), citable, citation])]
    snapshot = [m.model_dump() for m in messages]
    inner = MediaLLM(script=lambda n, m: "A picture.")
    reply = SmoothGuardLLM(llm=inner, n_samples=4, seed=0).chat(messages)
    assert reply.additional_kwargs["smoothguard"]["n_used"] == 4
    clean = Media.image(PNG).data
    for pick in (lambda blocks: blocks[1].content[1], lambda blocks: blocks[2].cited_content):
        sent = [li_first_media([ChatMessage(role=MessageRole.USER, blocks=[pick(m[0].blocks)])])
                for m in inner.received]
        assert len(sent) == 4 and sum(np.array_equal(m.data, clean) for m in sent) == 1  # the original once
    assert [m.model_dump() for m in messages] == snapshot
    assert messages[0].blocks[1] is citable and citable.content[1].image == base64.b64encode(PNG)


# -- 4. eval: the manifest was written in place, so a kill while writing it left a torn file blocking the resume --


def test_eval_manifest_is_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from smoothguard.eval import ShapeOracle, read_pope, run_eval
    from smoothguard.eval import runner as runner_module
    from smoothguard.eval.datasets import write_pope

    pope = read_pope(write_pope(tmp_path / "pope", n_images=2, seed=0))
    out = tmp_path / "out"

    class Killed(BaseException):
        """What SIGKILL would do at this moment: the process stops here."""

    def killed(*args: object) -> None:
        raise Killed

    monkeypatch.setattr(runner_module.os, "replace", killed)  # killed after writing the manifest, before the rename
    with pytest.raises(Killed):
        run_eval(ShapeOracle(), pope, out, sigmas=[0], limit=2, progress=False)
    monkeypatch.undo()
    assert not (out / "manifest.json").exists()  # never a half-written manifest
    summary = run_eval(ShapeOracle(), pope, out, sigmas=[0], limit=2, progress=False)
    assert summary["runs"][0]["metrics"] and (out / "manifest.json").exists()
