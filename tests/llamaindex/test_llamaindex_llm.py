"""SmoothGuardLLM over a recording fake vision model: N calls, the original first, noise, forms, no mutation."""

from __future__ import annotations

import base64
import copy
import dataclasses
import io
import json
import time
import traceback

import numpy as np
import pytest
from llama_index.core.base.llms.types import (
    AudioBlock,
    ChatMessage,
    CompletionResponse,
    ImageBlock,
    MessageRole,
    TextBlock,
)
from llama_index.core.llms import MockLLM
from llama_index.core.schema import ImageDocument, ImageNode
from llamaindex_fakes import BRIGHT, DARK, PixelLLM, png_bytes, wav_bytes

from smoothguard import GuardConfig, Media
from smoothguard.config import CLIP_STD
from smoothguard.errors import ConfigError, GenerationError, GuardFlagged, MediaError
from smoothguard_llamaindex import SmoothGuardLLM


def image_message(*blocks, text: str = "What is in the image?") -> list[ChatMessage]:
    return [ChatMessage(role=MessageRole.SYSTEM, content="You are careful."),
            ChatMessage(role=MessageRole.USER, blocks=[TextBlock(text=text), *blocks])]


def guarded(inner=None, **settings) -> SmoothGuardLLM:
    settings = {"n_samples": 5, "seed": 0, **settings}
    return SmoothGuardLLM(llm=inner or PixelLLM(), **settings)


def test_n_calls_original_first_then_distinct_noisy_copies():
    inner = PixelLLM()
    original = ImageBlock(image=png_bytes(140))
    response = guarded(inner, max_concurrency=1).chat(image_message(original))
    assert len(inner.calls) == 5
    first = inner.calls[0]["blocks"][0]
    assert first is original                                   # candidate 0: the caller's very block
    pixels = [c["images"][0] for c in inner.calls]
    assert all(not np.array_equal(pixels[0], p) for p in pixels[1:])
    assert len({p.tobytes() for p in pixels}) == 5             # every copy has its own noise
    meta = response.additional_kwargs["smoothguard"]
    assert meta["n_used"] == 5 and meta["samples"][0]["original"] and not meta["passthrough"]
    assert response.message.content == BRIGHT


@pytest.mark.parametrize("space", ["normalized", "pixel"])
def test_noise_std_matches_sigma(space):
    inner = PixelLLM()
    sigma = 0.1
    llm = guarded(inner, n_samples=4, sigma=sigma, sigma_space=space)
    llm.chat(image_message(ImageBlock(image=png_bytes(128, 96))))
    original = np.full((96, 96, 3), 128 / 255)
    noisy = [c["images"][0] for c in inner.calls if not np.array_equal(c["images"][0], original)]
    assert len(noisy) == 3
    diff = np.concatenate([(n - original).reshape(-1, 3) for n in noisy])
    expected = sigma * np.array(CLIP_STD) if space == "normalized" else np.full(3, sigma)
    assert np.allclose(diff.std(axis=0), expected, rtol=0.06)
    assert np.allclose(diff.mean(axis=0), 0, atol=0.003)


def test_formats_preserved_for_every_form(tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(png_bytes(90, fmt="JPEG"))
    blocks = [
        ImageBlock(image=png_bytes(200)),                                        # inline PNG (stored base64)
        ImageBlock(image=png_bytes(60, fmt="JPEG")),                             # inline JPEG
        ImageBlock(url=Media.image(png_bytes(100, fmt="WEBP")).to_data_url()),   # data URL (WebP)
        ImageBlock(path=path, detail="high"),                                    # file path
        ImageBlock(image=io.BytesIO(png_bytes(30))),                             # file-like
        AudioBlock(audio=wav_bytes(), format="wav"),                             # WAV audio
    ]
    inner = PixelLLM()
    guarded(inner).chat(image_message(*blocks))
    expected_forms = ["bytes", "bytes", "data_url", "path", "io", "bytes"]
    source_mimes = ["image/png", "image/jpeg", "image/webp", "image/jpeg", "image/png", None]
    originals = 0
    for call in inner.calls:
        assert call["forms"] == expected_forms
        assert call["paths_exist"][3]                          # the noisy file exists during the call
        got = call["blocks"]
        original = got[3].path == path
        originals += original
        # the original keeps its formats; noisy copies are lossless PNG whatever the source format
        expected_mimes = source_mimes if original else ["image/png"] * 5 + [None]
        assert call["mimes"] == [*expected_mimes[:5], "audio/wav"]
        for block, mime, caller in zip(got, expected_mimes, blocks, strict=True):
            if mime:
                assert block.image_mimetype in (mime, caller.image_mimetype)  # a BytesIO original has None
        assert got[3].path.suffix == (".jpg" if original else ".png") and got[3].detail == "high"
        assert base64.b64decode(got[0].image, validate=True)[:4] == b"\x89PNG"
        clip = Media.audio(got[5].resolve_audio().read())
        assert clip.format == "wav" and clip.sample_rate == 8000 and got[5].format == "wav"
    assert originals == 1
    noisy_paths = [c["blocks"][3].path for c in inner.calls if c["blocks"][3].path != path]
    assert len(noisy_paths) == 4 and not any(p.exists() for p in noisy_paths)   # temp files removed after
    audio = {Media.audio(c["blocks"][5].resolve_audio().read()).data.tobytes() for c in inner.calls}
    assert len(audio) == 5                                     # the audio is smoothed too


def test_caller_messages_and_blocks_untouched(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(png_bytes(120))
    stream = io.BytesIO(png_bytes(40))
    stream.seek(7)
    messages = image_message(ImageBlock(path=path), ImageBlock(image=png_bytes(200)), ImageBlock(image=stream),
                             AudioBlock(audio=wav_bytes()))
    messages[1].additional_kwargs["trace"] = {"x": [1, 2]}
    before = snapshot(messages)
    ids = [[id(b) for b in m.blocks] for m in messages]
    guarded().chat(messages)
    assert snapshot(messages) == before
    assert [[id(b) for b in m.blocks] for m in messages] == ids
    assert stream.tell() == 7 and path.read_bytes() == png_bytes(120)


def snapshot(messages: list[ChatMessage]) -> list:
    """A comparable deep copy; file-like image data as (bytes, position), read without moving it."""
    out = []
    for m in messages:
        blocks = []
        for b in m.blocks:
            data = getattr(b, "image", None)
            if isinstance(data, io.BytesIO):
                blocks.append(("io", data.getvalue(), data.tell(), b.path, b.url, b.image_mimetype))
            else:
                blocks.append(copy.deepcopy(b))
        out.append((m.role, copy.deepcopy(m.additional_kwargs), blocks))
    return out


def test_metadata_is_json_without_media_bytes():
    response = guarded().chat(image_message(ImageBlock(image=png_bytes(30))))
    meta = response.additional_kwargs["smoothguard"]
    text = json.dumps(meta)
    assert "iVBOR" not in text and len(text) < 20_000
    assert meta["answer"] == DARK and meta["agreement"] == 1.0 and meta["config"]["n_samples"] == 5
    assert response.raw is not None                            # the winning candidate's own response


def test_text_only_call_is_one_passthrough_call():
    inner = PixelLLM()
    response = guarded(inner).chat([ChatMessage(role=MessageRole.USER, content="hello")])
    assert len(inner.calls) == 1 and response.message.content == "no image"
    assert response.additional_kwargs["smoothguard"]["passthrough"] is True


def test_mock_llm_completion_passthrough():
    llm = guarded(MockLLM(max_tokens=3))
    response = llm.complete("hi there")
    assert response.text == "text text text"
    assert response.additional_kwargs["smoothguard"]["n_used"] == 1


def test_sync_calls_run_concurrently_and_respect_max_concurrency():
    inner = PixelLLM(delay=0.2)
    start = time.perf_counter()
    guarded(inner).chat(image_message(ImageBlock(image=png_bytes(200))))
    assert time.perf_counter() - start < 0.2 * 5 * 0.7 and inner.recorder.peak == 5
    bounded = PixelLLM(delay=0.05)
    guarded(bounded, max_concurrency=2).chat(image_message(ImageBlock(image=png_bytes(200))))
    assert bounded.recorder.peak == 2 and len(bounded.calls) == 5


async def test_async_chat_gathers_and_respects_max_concurrency():
    inner = PixelLLM(delay=0.2)
    messages = image_message(ImageBlock(image=png_bytes(200)))
    before = copy.deepcopy(messages)
    start = time.perf_counter()
    response = await guarded(inner).achat(messages)
    assert time.perf_counter() - start < 0.2 * 5 * 0.7 and inner.recorder.peak == 5
    assert response.message.content == BRIGHT and messages == before
    bounded = PixelLLM(delay=0.05)
    await guarded(bounded, max_concurrency=2).achat(image_message(ImageBlock(image=png_bytes(200))))
    assert bounded.recorder.peak == 2 and len(bounded.calls) == 5


async def test_streaming_yields_the_voted_answer_once():
    messages = image_message(ImageBlock(image=png_bytes(220)))
    chunks = list(guarded().stream_chat(messages))
    assert len(chunks) == 1 and chunks[0].delta == BRIGHT and "smoothguard" in chunks[0].additional_kwargs
    achunks = [c async for c in await guarded().astream_chat(messages)]
    assert len(achunks) == 1 and achunks[0].delta == BRIGHT
    docs = [ImageBlock(image=png_bytes(10))]
    completions = list(guarded().stream_complete("describe", image_documents=docs))
    assert [c.delta for c in completions] == [DARK]
    acompletions = [c async for c in await guarded().astream_complete("describe", image_documents=docs)]
    assert [c.delta for c in acompletions] == [DARK] and "smoothguard" in acompletions[0].additional_kwargs


async def test_complete_with_image_documents(tmp_path):
    path = tmp_path / "doc.png"
    path.write_bytes(png_bytes(230))
    docs = [ImageNode(image=base64.b64encode(png_bytes(20)).decode()), ImageDocument(image_path=str(path)),
            ImageBlock(image=png_bytes(128))]
    before = copy.deepcopy(docs)
    inner = PixelLLM()
    response = guarded(inner).complete("What is it?", image_documents=docs)
    assert isinstance(response, CompletionResponse) and response.text == DARK
    assert len(inner.calls) == 5
    message = inner.calls[0]["messages"][0]
    assert [b.block_type for b in message.blocks] == ["image", "image", "image", "text"]
    assert message.blocks[-1].text == "What is it?"
    assert inner.calls[0]["forms"] == ["bytes", "path", "bytes"]
    assert docs == before
    response = await guarded(inner).acomplete("What is it?", image_documents=docs)
    assert response.text == DARK and len(inner.calls) == 10
    response = guarded(inner).complete("What is it?", docs)          # the legacy MultiModalLLM order
    assert response.text == DARK and len(inner.calls) == 15


def test_failed_candidates_are_recorded_and_left_out():
    inner = PixelLLM(fail_on=(1, 3))
    response = guarded(inner).chat(image_message(ImageBlock(image=png_bytes(200))))
    meta = response.additional_kwargs["smoothguard"]
    errors = [s["error"] for s in meta["samples"] if s["error"]]
    assert len(errors) == 2 and all("failed on purpose" in e for e in errors)
    assert response.message.content == BRIGHT and meta["agreement"] == 1.0
    with pytest.raises(GenerationError, match="only 1 of 5"):
        guarded(PixelLLM(fail_on=(0, 1, 2, 3))).chat(image_message(ImageBlock(image=png_bytes(200))))


async def test_time_budget_leaves_slow_candidates_out_sync_and_async():
    messages = image_message(ImageBlock(image=png_bytes(200)))
    for call in ("chat", "achat"):
        inner = PixelLLM(slow_on=(1,), slow_delay=5.0)
        start = time.perf_counter()
        response = getattr(guarded(inner, time_budget=1.5), call)(messages)
        response = await response if call == "achat" else response
        assert time.perf_counter() - start < 4.0, call  # the budget (room for a collector pause), not the 5 s call
        errors = [s["error"] for s in response.additional_kwargs["smoothguard"]["samples"] if s["error"]]
        assert len(errors) == 1 and "no answer within the time budget of 1.5 s" in errors[0], call
        notes = response.additional_kwargs["smoothguard"]["notes"]
        assert any("1 candidate(s) did not answer in time" in note for note in notes), call
        assert response.message.content == BRIGHT
    with pytest.raises(GenerationError, match="only 0 of 5"):
        await guarded(PixelLLM(delay=3.0), time_budget=0.3).achat(messages)


@pytest.mark.parametrize(("block", "match"), [
    (ImageBlock(image=b"this is not an image at all"), r"messages\[1\]\.blocks\[1\] \(ImageBlock, inline bytes\)"),
    (ImageBlock(url="data:image/png;base64,AAAA"), r"messages\[1\]\.blocks\[1\] \(ImageBlock, data: URL\)"),
    (AudioBlock(audio=b"ID3\x03\x00\x00 fake mp3", format="mp3"), r"blocks\[1\] \(AudioBlock.*only WAV"),
    (ImageBlock(url="ftp://example.org/x.png"), r"blocks\[1\]: cannot read the image at .ftp:.*only data: and http"),
])
def test_bad_media_raise_our_error_naming_the_block(block, match):
    inner = PixelLLM()
    with pytest.raises(MediaError, match=match) as info:
        guarded(inner).chat(image_message(block))
    shown = "".join(traceback.format_exception(info.value))
    assert "PIL" not in shown and "UnidentifiedImageError" not in shown
    assert not inner.calls


def test_missing_path_is_a_media_error(tmp_path):
    path = tmp_path / "gone.png"
    path.write_bytes(png_bytes())
    block = ImageBlock(path=path)
    path.unlink()
    with pytest.raises(MediaError, match=r"blocks\[1\] \(ImageBlock, path=.*not found"):
        guarded().chat(image_message(block))


def test_every_guard_config_setting_is_reachable():
    changed = dict(sigma=0.2, sigma_space="pixel", channel_std=(0.2, 0.2, 0.2), audio_sigma=0.02, n_samples=7,
                   include_original=False, seed=3, adaptive=True, adaptive_round=3, confidence=0.9, quorum=2,
                   max_concurrency=2, time_budget=30.0, embedder="all-MiniLM-L6-v2", embedder_device="cpu",
                   clustering="agglomerative", n_clusters=3, cluster_threshold=0.2, safety_weight=0.3,
                   min_agreement=0.6, on_flag="refuse", refusal_message="No.", remote_media="passthrough",
                   fetch_timeout=3.0, max_media_bytes=1000, max_image_pixels=500, image_resize=(640, 480),
                   unsmoothable_media="passthrough", max_media_items=3, max_request_pixels=900,
                   allow_private_fetch=True, audio_resample=22050)
    assert set(changed) == {f.name for f in dataclasses.fields(GuardConfig)}
    llm = SmoothGuardLLM(llm=PixelLLM(), **changed)
    assert llm.guard_config == GuardConfig(**changed) and llm.guard.config == llm.guard_config
    base = GuardConfig(sigma=0.3, n_samples=3)
    assert SmoothGuardLLM(llm=PixelLLM(), guard_config=base).guard_config is base
    assert SmoothGuardLLM(llm=PixelLLM(), guard_config=base, seed=1).guard_config == base.replace(seed=1)
    assert SmoothGuardLLM(llm=PixelLLM(), guard_config={"sigma": 0.3}).guard_config.sigma == 0.3
    with pytest.raises(ConfigError, match="did you mean 'n_samples'"):
        SmoothGuardLLM(llm=PixelLLM(), n_sample=3)
    with pytest.raises(ConfigError, match="sigma"):
        SmoothGuardLLM(llm=PixelLLM(), sigma=-1)
    with pytest.raises(ConfigError, match="SmoothGuardLLM needs"):
        SmoothGuardLLM()


def test_metadata_mirrors_the_inner_model():
    meta = guarded(PixelLLM(window=5000, name="eye")).metadata
    assert meta.model_name == "smoothguard[eye]" and meta.context_window == 5000 and meta.is_chat_model
    assert not meta.is_function_calling_model
    assert guarded(PixelLLM(), context_window=64_000).metadata.context_window == 64_000
    llm = SmoothGuardLLM(llm=MockLLM(system_prompt="Be brief."))
    assert llm.system_prompt == "Be brief." and llm.class_name() == "SmoothGuardLLM"
    payload = json.loads(llm.to_json())
    assert payload["guard_config"]["n_samples"] == 11 and payload["llm"]["class_name"] == "MockLLM"


class Flip(PixelLLM):
    """Alternates between two unrelated answers, so the candidates disagree."""

    def _answer(self, messages):
        response = super()._answer(messages)
        text = BRIGHT if response.raw["n"] % 2 else "A red bicycle leans against a wooden fence."
        return response.model_copy(update={"message": ChatMessage(role=MessageRole.ASSISTANT, content=text)})


def test_flag_policies():
    msg = image_message(ImageBlock(image=png_bytes(200)))
    refused = guarded(Flip(), min_agreement=0.9, on_flag="refuse", refusal_message="I can't tell.").chat(msg)
    assert refused.message.content == "I can't tell." and refused.additional_kwargs["smoothguard"]["refused"]
    with pytest.raises(GuardFlagged) as info:
        guarded(Flip(), min_agreement=0.9, on_flag="raise").chat(msg)
    assert info.value.result.flagged
    answered = guarded(Flip(), min_agreement=0.9).chat(msg)
    assert answered.additional_kwargs["smoothguard"]["flagged"] and answered.message.content


def test_adaptive_mode_stops_early_and_keeps_candidate_order():
    inner = PixelLLM()
    response = guarded(inner, n_samples=11, adaptive=True, adaptive_round=5).chat(
        image_message(ImageBlock(image=png_bytes(230))))
    meta = response.additional_kwargs["smoothguard"]
    assert meta["n_used"] == len(inner.calls) < 11
    assert [s["index"] for s in meta["samples"]] == list(range(meta["n_used"]))
