"""Tiny random-weight models of every supported Hugging Face family, built offline in well under a second.

Each ``tiny_<family>(tmp_dir=None)`` returns ``(model, processor)`` (the model in eval mode, fp32, CPU), or, with
``tmp_dir``, saves both there and returns the directory (a ``pathlib.Path``) for ``from_pretrained`` tests.
Weights are seeded (``seed=0`` unless given), so a builder returns the same model every time. The tokenizer is a
byte-level BPE trained on a small inline corpus with the family's special tokens; the processors are the real
transformers classes (``*ImageProcessorPil``, no torchvision), with the image-only subclasses that Qwen2-VL,
Qwen2.5-VL and SmolVLM need (``smoothguard.backends.processors``). The text answers are random tokens.

Sizes: text hidden 64, 2 layers; vision hidden 32, 2 layers. Image sizes that need no resizing:
Qwen 56-112 px (multiples of 28), LLaVA / BLIP-2 32 px (any size is resized), LLaVA-NeXT 32-64 px,
Idefics3 / SmolVLM up to 64 px (tiles of 32 px). Audio: 16 kHz mono, about 1 s.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "BUILDERS",
    "IMAGE_FAMILIES",
    "tiny_blip2",
    "tiny_idefics3",
    "tiny_llava",
    "tiny_llava_next",
    "tiny_qwen2_5_vl",
    "tiny_qwen2_audio",
    "tiny_qwen2_vl",
    "tiny_smolvlm",
]

_CORPUS = [
    "Describe the image.",
    "What is in the picture?",
    "The picture shows a cat sitting on a red chair next to a window.",
    "I'm sorry, but I can't help with that request.",
    "There is a dog on the grass and two people walking in the park.",
    "Is there a red circle in the image? Yes. No.",
    "The audio contains a man speaking, music and birds.",
    "A small boat on a quiet lake under a blue sky at sunset.",
]

QWEN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LLAVA_TEMPLATE = (
    "{% for message in messages %}{{ message['role'].upper() }}: "
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %} {% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
IDEFICS3_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}:{% else %}: {% endif %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% elif part['type'] == 'image' %}<image>{% endif %}"
    "{% endfor %}<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)
QWEN_AUDIO_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'audio' %}Audio {{ loop.index }}: <|audio_bos|><|AUDIO|><|audio_eos|>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                 "<|image_pad|>", "<|video_pad|>"]
_LLAMA_SPECIAL = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
_IDEFICS3_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>", "<image>",
                     "<global-img>"] + [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
_OPT_SPECIAL = ["<pad>", "</s>", "<unk>", "<image>"]
_QWEN_AUDIO_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"]


@functools.cache
def _tokenizer_json(special: tuple[str, ...]) -> str:
    """A byte-level BPE (vocab 400) trained on the corpus with ``special`` first, as JSON (cached)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=list(special), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(_CORPUS * 10, trainer)
    return bpe.to_str()


def _tokenizer(special: list[str], **tokens: str) -> Any:
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(_tokenizer_json(tuple(special))), **tokens)


def _seeded(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


def _finish(model: Any, processor: Any, tmp_dir: str | Path | None) -> Any:
    model.eval()
    if tmp_dir is None:
        return model, processor
    path = Path(tmp_dir)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def _text_config(tok: Any, **extra: Any) -> dict[str, Any]:
    return dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, **extra)


def _ids(tok: Any, *names: str) -> list[int]:
    return [tok.convert_tokens_to_ids(n) for n in names]


# -- Qwen2-VL / Qwen2.5-VL -------------------------------------------------------------------------------------


def _qwen_parts() -> tuple[Any, dict[str, int]]:
    tok = _tokenizer(_QWEN_SPECIAL, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    return tok, {t: tok.convert_tokens_to_ids(t) for t in _QWEN_SPECIAL}


def _qwen_ids(ids: dict[str, int]) -> dict[str, int]:
    return dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])


def _qwen_text(tok: Any, ids: dict[str, int]) -> dict[str, Any]:
    return _text_config(
        tok, rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
        bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])


def _qwen_image_processor() -> Any:
    from transformers import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(min_pixels=28 * 28, max_pixels=112 * 112)


def tiny_qwen2_5_vl(tmp_dir: str | Path | None = None, seed: int = 0) -> Any:
    """Qwen2.5-VL: ``pixel_values`` (patches, 1176) concatenated over images; a 56x56 image is 16 patches."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from smoothguard.backends.processors import ImageOnlyQwen2_5_VLProcessor

    tok, ids = _qwen_parts()
    processor = ImageOnlyQwen2_5_VLProcessor(_qwen_image_processor(), tok, chat_template=QWEN_TEMPLATE)
    config = Qwen2_5_VLConfig(
        text_config=_qwen_text(tok, ids),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                           fullatt_block_indexes=[1]),
        **_qwen_ids(ids))
    _seeded(seed)
    return _finish(Qwen2_5_VLForConditionalGeneration(config), processor, tmp_dir)


def tiny_qwen2_vl(tmp_dir: str | Path | None = None, seed: int = 0) -> Any:
    """Qwen2-VL: same layout as Qwen2.5-VL."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    from smoothguard.backends.processors import ImageOnlyQwen2VLProcessor

    tok, ids = _qwen_parts()
    processor = ImageOnlyQwen2VLProcessor(_qwen_image_processor(), tok, chat_template=QWEN_TEMPLATE)
    config = Qwen2VLConfig(
        text_config=_qwen_text(tok, ids),
        vision_config=dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2),
        **_qwen_ids(ids))
    _seeded(seed)
    return _finish(Qwen2VLForConditionalGeneration(config), processor, tmp_dir)


# -- LLaVA-1.5 / LLaVA-NeXT ------------------------------------------------------------------------------------


def _llava_tok() -> Any:
    return _tokenizer(_LLAMA_SPECIAL, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>")


def _clip_vision() -> dict[str, Any]:
    return dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
                patch_size=8, projection_dim=32)


def _llama_text(tok: Any) -> dict[str, Any]:
    bos, eos, pad = _ids(tok, "<s>", "</s>", "<pad>")
    return dict(_text_config(tok, bos_token_id=bos, eos_token_id=eos, pad_token_id=pad), model_type="llama")


def tiny_llava(tmp_dir: str | Path | None = None, seed: int = 0) -> Any:
    """LLaVA-1.5: CLIP vision (32 px, patch 8: 16 image tokens) + Llama; ``pixel_values`` (images, 3, 32, 32)."""
    from transformers import CLIPImageProcessorPil, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    tok = _llava_tok()
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tok, patch_size=8,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=LLAVA_TEMPLATE)
    config = LlavaConfig(vision_config=dict(_clip_vision(), model_type="clip_vision_model"),
                         text_config=_llama_text(tok), image_token_index=tok.convert_tokens_to_ids("<image>"),
                         vision_feature_select_strategy="default", vision_feature_layer=-2, image_seq_length=16)
    _seeded(seed)
    return _finish(LlavaForConditionalGeneration(config), processor, tmp_dir)


_PINPOINTS = [[32, 32], [32, 64], [64, 32], [64, 64]]


def tiny_llava_next(tmp_dir: str | Path | None = None, seed: int = 0) -> Any:
    """LLaVA-NeXT (anyres, tiles of 32 px); ``pixel_values`` (images, 1 + tiles, 3, 32, 32) plus ``image_sizes``."""
    from transformers import (
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessorPil,
        LlavaNextProcessor,
    )

    tok = _llava_tok()
    image_processor = LlavaNextImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                                 image_grid_pinpoints=_PINPOINTS)
    processor = LlavaNextProcessor(image_processor=image_processor, tokenizer=tok, patch_size=8,
                                   vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                   chat_template=LLAVA_TEMPLATE)
    config = LlavaNextConfig(vision_config=dict(_clip_vision(), model_type="clip_vision_model"),
                             text_config=_llama_text(tok), image_token_index=tok.convert_tokens_to_ids("<image>"),
                             vision_feature_select_strategy="default", vision_feature_layer=-2,
                             image_grid_pinpoints=_PINPOINTS)
    _seeded(seed)
    return _finish(LlavaNextForConditionalGeneration(config), processor, tmp_dir)


# -- Idefics3 / SmolVLM ----------------------------------------------------------------------------------------


def _idefics3_parts() -> tuple[Any, Any, dict[str, Any]]:
    from transformers import Idefics3ImageProcessorPil

    tok = _tokenizer(_IDEFICS3_SPECIAL, bos_token="<|im_start|>", eos_token="<end_of_utterance>",
                     pad_token="<|endoftext|>")
    image_processor = Idefics3ImageProcessorPil(size={"longest_edge": 64}, max_image_size={"longest_edge": 32})
    bos, eos, pad, image = _ids(tok, "<|im_start|>", "<end_of_utterance>", "<|endoftext|>", "<image>")
    config = dict(vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                     image_size=32, patch_size=8),
                  text_config=dict(_text_config(tok, bos_token_id=bos, eos_token_id=eos, pad_token_id=pad),
                                   model_type="llama"),
                  image_token_id=image, scale_factor=2)
    return tok, image_processor, config


def tiny_idefics3(tmp_dir: str | Path | None = None, seed: int = 0) -> Any:
    """Idefics3 (SmolVLM-1's architecture): up to 2x2 tiles of 32 px + a global view, 4 tokens each;
    ``pixel_values`` (batch, tiles over the sample's images, 3, 32, 32), padded with empty tiles."""
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor

    tok, image_processor, config = _idefics3_parts()
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tok, image_seq_len=4,
                                  chat_template=IDEFICS3_TEMPLATE)
    _seeded(seed)
    return _finish(Idefics3ForConditionalGeneration(Idefics3Config(**config)), processor, tmp_dir)


def tiny_smolvlm(tmp_dir: str | Path | None = None, seed: int = 0) -> Any:
    """SmolVLM (``model_type="smolvlm"``, SmolVLM2): Idefics3's layout with SmolVLM's processor."""
    from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration

    from smoothguard.backends.processors import ImageOnlySmolVLMProcessor

    tok, image_processor, config = _idefics3_parts()
    processor = ImageOnlySmolVLMProcessor(image_processor=image_processor, tokenizer=tok, image_seq_len=4,
                                          chat_template=IDEFICS3_TEMPLATE)
    _seeded(seed)
    return _finish(SmolVLMForConditionalGeneration(SmolVLMConfig(**config)), processor, tmp_dir)


# -- BLIP-2 ----------------------------------------------------------------------------------------------------


def tiny_blip2(tmp_dir: str | Path | None = None, seed: int = 0) -> Any:
    """BLIP-2 (ViT + Q-Former with 4 queries + OPT), one image per prompt, no chat template;
    ``pixel_values`` (batch, 3, 32, 32)."""
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, BlipImageProcessorPil

    tok = _tokenizer(_OPT_SPECIAL, bos_token="</s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>")
    processor = Blip2Processor(image_processor=BlipImageProcessorPil(size={"height": 32, "width": 32}), tokenizer=tok,
                               num_query_tokens=4)
    pad, eos = _ids(tok, "<pad>", "</s>")
    config = Blip2Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        qformer_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            encoder_hidden_size=32, vocab_size=len(tok)),
        text_config=dict(model_type="opt", vocab_size=len(tok), hidden_size=64, ffn_dim=128, num_hidden_layers=2,
                         num_attention_heads=4, word_embed_proj_dim=64, max_position_embeddings=512,
                         bos_token_id=eos, eos_token_id=eos, pad_token_id=pad),
        num_query_tokens=4, image_token_index=tok.convert_tokens_to_ids("<image>"))
    _seeded(seed)
    return _finish(Blip2ForConditionalGeneration(config), processor, tmp_dir)


# -- Qwen2-Audio -----------------------------------------------------------------------------------------------


def tiny_qwen2_audio(tmp_dir: str | Path | None = None, seed: int = 0) -> Any:
    """Qwen2-Audio: Whisper features (80 mel bins, 16 kHz, padded to 30 s) + a 2-layer encoder + Qwen2."""
    from transformers import (
        Qwen2AudioConfig,
        Qwen2AudioForConditionalGeneration,
        Qwen2AudioProcessor,
        WhisperFeatureExtractor,
    )

    tok = _tokenizer(_QWEN_AUDIO_SPECIAL, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    processor = Qwen2AudioProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=80), tokenizer=tok,
                                    chat_template=QWEN_AUDIO_TEMPLATE)
    pad, eos, audio = _ids(tok, "<|endoftext|>", "<|im_end|>", "<|AUDIO|>")
    config = Qwen2AudioConfig(
        audio_config=dict(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64, num_mel_bins=80,
                          max_source_positions=1500),
        text_config=dict(_text_config(tok, bos_token_id=pad, eos_token_id=eos, pad_token_id=pad), model_type="qwen2"),
        audio_token_index=audio)
    _seeded(seed)
    return _finish(Qwen2AudioForConditionalGeneration(config), processor, tmp_dir)


#: family name -> builder
BUILDERS: dict[str, Callable[..., Any]] = {
    "qwen2_5_vl": tiny_qwen2_5_vl,
    "qwen2_vl": tiny_qwen2_vl,
    "llava": tiny_llava,
    "llava_next": tiny_llava_next,
    "idefics3": tiny_idefics3,
    "smolvlm": tiny_smolvlm,
    "blip2": tiny_blip2,
    "qwen2_audio": tiny_qwen2_audio,
}
IMAGE_FAMILIES = [name for name in BUILDERS if name != "qwen2_audio"]
