"""HFVisionLanguageModel.generate on tiny random-weight models of every family: batching, decoding, media."""

from __future__ import annotations

import asyncio

import pytest
import torch
from fakes.tiny_models import BUILDERS, IMAGE_FAMILIES
from hf_cases import PROMPT, SIZES, backend, clip, image, one_by_one, tiny

from smoothguard import MediaError
from smoothguard.backends import HFAudioLanguageModel, HFVisionLanguageModel
from smoothguard.errors import ConfigError


def variants_of(name: str, n: int = 4) -> list:
    """n variants with different inputs, so that a mix-up between batch rows would show."""
    if name == "qwen2_audio":
        return [[clip(seed=i)] for i in range(n)]
    return [[image(name, seed=i)] for i in range(n)]


@pytest.mark.parametrize("name", list(BUILDERS))
def test_batched_equals_one_by_one(name):
    b = backend(name)
    variants = variants_of(name)
    batched = b.generate(PROMPT, variants)
    assert batched == one_by_one(b, PROMPT, variants)
    assert all(isinstance(a, str) for a in batched)
    assert len(set(batched)) > 1, "the inputs should give different answers, or the test proves nothing"
    # chunks of 3 (two generate calls) give the same answers
    assert backend(name, max_batch_size=3).generate(PROMPT, variants) == batched


@pytest.mark.parametrize("name", ["qwen2_5_vl", "qwen2_vl", "llava_next"])
def test_left_padding_keeps_batched_equal_to_one_by_one(name):
    """Images of different sizes give prompts of different lengths: the batch is left-padded."""
    b = backend(name)
    sizes = {"llava_next": [(32, 32), (64, 32), (48, 64)]}.get(name, [(56, 56), (112, 84), (28, 56)])
    variants = [[image(name, seed=i, size=s)] for i, s in enumerate(sizes)]
    inputs = b.build_inputs(PROMPT, variants)
    padding = (inputs["attention_mask"] == 0).sum(dim=1)
    assert padding.max() > 0 and (inputs["attention_mask"][:, -1] == 1).all()  # padded, on the left
    assert b.generate(PROMPT, variants) == one_by_one(b, PROMPT, variants)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_answer_is_the_new_tokens_only(name):
    b = backend(name)
    variant = variants_of(name, 1)
    inputs = b.build_inputs(PROMPT, variant)
    output = tiny(name)[0].generate(**inputs, max_new_tokens=8, do_sample=False)
    new = output[0, inputs["input_ids"].shape[1]:]
    tokenizer = b.processor.tokenizer
    [answer] = b.generate(PROMPT, variant)
    assert answer == tokenizer.decode(new, skip_special_tokens=True).strip()
    assert PROMPT not in answer and "Describe" not in answer
    assert len(new) <= 8


@pytest.mark.parametrize("name", [n for n in IMAGE_FAMILIES if n != "blip2"])
def test_one_to_three_images(name):
    b = backend(name)
    tokens = []
    for n in (1, 2, 3):
        variants = [[image(name, seed=10 * i + j) for j in range(n)] for i in range(2)]
        inputs = b.build_inputs(PROMPT, variants)
        tokens.append(int((inputs["input_ids"][0] == _image_token_id(b)).sum()))
        assert b.generate(PROMPT, variants) == one_by_one(b, PROMPT, variants)
    assert tokens[0] > 0 and tokens[1] == 2 * tokens[0] and tokens[2] == 3 * tokens[0]


def _image_token_id(b):
    processor = b.processor
    token = getattr(processor, "image_token", "<image>")
    return processor.tokenizer.convert_tokens_to_ids(getattr(token, "content", token))


def test_blip2_takes_exactly_one_image():
    b = backend("blip2")
    with pytest.raises(MediaError, match="at most 1 image"):
        b.generate(PROMPT, [[image("blip2"), image("blip2", seed=1)]])
    with pytest.raises(MediaError, match="without an image"):
        b.generate(PROMPT, [[]])


@pytest.mark.parametrize("name", ["qwen2_vl", "llava", "idefics3"])
def test_text_only_request(name):
    """A request without media (the guard's passthrough) is answered from the text alone."""
    [answer] = backend(name).generate(PROMPT, [[]])
    assert isinstance(answer, str)


def test_audio_any_rate_and_channels():
    b = backend("qwen2_audio")
    assert isinstance(b, HFVisionLanguageModel) and b.pixel_std is None
    mono16k = clip(seed=3)
    # the same sound as 8 kHz stereo: mixed to mono and resampled to the feature extractor's 16 kHz
    stereo8k = clip(seed=4, rate=8000, channels=2)
    variants = [[mono16k], [stereo8k], [mono16k, clip(seed=5)]]
    answers = b.generate("What do you hear?", variants)
    assert all(isinstance(a, str) for a in answers)
    assert answers == one_by_one(b, "What do you hear?", variants)
    inputs = b.build_inputs("What do you hear?", [[stereo8k]])
    assert inputs["input_features"].shape[:2] == (1, 80)
    assert int(inputs["feature_attention_mask"].sum()) == pytest.approx(100, abs=2)  # 1 s at 100 frames/s


def test_audio_language_model_class():
    model, processor = tiny("qwen2_audio")
    audio = HFAudioLanguageModel(model, processor, max_new_tokens=4)
    assert audio.generate("Hi.", [[clip()]]) == backend("qwen2_audio", max_new_tokens=4).generate("Hi.", [[clip()]])
    with pytest.raises(ConfigError, match="HFVisionLanguageModel"):
        HFAudioLanguageModel(*tiny("llava"))


def test_wrong_media_kind_is_a_media_error():
    with pytest.raises(MediaError, match="reads image, not audio"):
        backend("llava").generate(PROMPT, [[clip()]])
    with pytest.raises(MediaError, match="reads audio, not image"):
        backend("qwen2_audio").generate(PROMPT, [[image()]])
    with pytest.raises(TypeError, match="Media"):
        backend("llava").generate(PROMPT, [["not media"]])


def test_chunks_follow_max_batch_size():
    model, processor = BUILDERS["llava"]()
    calls = []
    original = model.generate

    def spy(**kwargs):
        calls.append(kwargs["input_ids"].shape[0])
        return original(**kwargs)

    model.generate = spy
    b = HFVisionLanguageModel(model, processor, max_new_tokens=4, max_batch_size=2)
    variants = variants_of("llava", 5)
    answers = b.generate(PROMPT, variants)
    assert calls == [2, 2, 1]
    calls.clear()
    assert HFVisionLanguageModel(model, processor, max_new_tokens=4).generate(PROMPT, variants) == answers
    assert calls == [5]


def test_out_of_memory_is_retried_in_halves_and_failures_are_per_candidate():
    model, processor = BUILDERS["llava"]()
    original = model.generate
    sizes = []

    def small_batches_only(**kwargs):
        sizes.append(kwargs["input_ids"].shape[0])
        if kwargs["input_ids"].shape[0] > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return original(**kwargs)

    model.generate = small_batches_only
    b = HFVisionLanguageModel(model, processor, max_new_tokens=4)
    variants = variants_of("llava", 3)
    answers = b.generate(PROMPT, variants)
    assert answers == HFVisionLanguageModel(*BUILDERS["llava"](), max_new_tokens=4).generate(PROMPT, variants)
    assert sizes == [3, 1, 2, 1, 1]

    def broken(**kwargs):
        raise RuntimeError("device lost")

    model.generate = broken
    answers = b.generate(PROMPT, variants)
    assert len(answers) == 3 and all(isinstance(a, RuntimeError) for a in answers)


async def test_agenerate_runs_in_a_thread():
    b = backend("qwen2_vl")
    variants = variants_of("qwen2_vl", 2)
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    answers = await b.agenerate(PROMPT, variants)
    task.cancel()
    assert answers == b.generate(PROMPT, variants)
    assert ticks > 1


def test_pixel_std_and_repr():
    assert backend("qwen2_vl").pixel_std == pytest.approx((0.26862954, 0.26130258, 0.27577711))
    assert backend("idefics3").pixel_std == (0.5, 0.5, 0.5)
    text = repr(backend("llava"))
    assert "LLaVA-1.5" in text and "cpu" in text and "pixel" in text


def test_greedy_only_and_settings_are_checked():
    model, processor = tiny("llava")
    for bad in ({"max_new_tokens": 0}, {"max_batch_size": 0}, {"noise_space": "latent"},
                {"generation_kwargs": {"do_sample": True}}, {"generation_kwargs": {"temperature": 0.7}}):
        with pytest.raises(ConfigError):
            HFVisionLanguageModel(model, processor, **bad)
    with pytest.raises(ConfigError, match="pixel_values"):
        HFVisionLanguageModel(*tiny("qwen2_audio"), noise_space="normalized")
    with pytest.raises(ConfigError, match="needs its processor"):
        HFVisionLanguageModel(model, processor.tokenizer)
    # extra generate arguments pass through: exactly 8 new tokens even if EOS comes first
    b = HFVisionLanguageModel(model, processor, max_new_tokens=8, generation_kwargs={"min_new_tokens": 8})
    inputs = b.build_inputs(PROMPT, variants_of("llava", 1))
    out = model.generate(**inputs, **b._generate_kwargs())
    assert out.shape[1] - inputs["input_ids"].shape[1] == 8


def test_unknown_family_lists_the_supported_ones():
    class Config:
        model_type = "gpt2"

    class Model:
        config = Config()

    with pytest.raises(ConfigError) as info:
        HFVisionLanguageModel(Model(), None)
    message = str(info.value)
    for family in ("Qwen2.5-VL", "Qwen2-VL", "LLaVA-1.5", "LLaVA-NeXT", "Idefics3", "SmolVLM", "BLIP-2", "Qwen2-Audio"):
        assert family in message
    assert "'gpt2'" in message


def test_sizes_cover_every_image_family():
    assert set(SIZES) == set(IMAGE_FAMILIES)


async def test_concurrent_requests_get_their_own_answers():
    """Requests from many tasks at once: preprocessing and generate are serialised inside, answers not mixed."""
    b = backend("llava")
    requests = [variants_of("llava", 3)[i:] + variants_of("llava", 1) for i in range(3)]
    expected = [b.generate(PROMPT, r) for r in requests]
    assert await asyncio.gather(*(b.agenerate(PROMPT, r) for r in requests)) == expected
