"""The testbed VLM: a tiny LLaVA (CLIP vision tower + Llama decoder) with a tokenizer trained on the task's text.

Everything is built in code, so nothing is downloaded: :func:`build_tokenizer` trains a byte-level BPE on
:func:`smoothguard.testbed.data.all_texts`, :func:`build_processor` wraps it in a ``LlavaProcessor`` with a
``CLIPImageProcessorPil`` (no torchvision needed) and a chat template, :func:`build_model` makes a
``LlavaForConditionalGeneration`` from one of :data:`CONFIGS`. :func:`save_testbed` writes a trained model as
fp16 safetensors with its tokenizer and processor; :func:`load_testbed_dir` reads it back offline in fp32.

Prompt format (what the chat template renders, with ``add_generation_prompt=True``)::

    <|user|><image>Is there a red circle in the image?<|end|><|assistant|>

and the model answers ``Yes.<|end|>``. The processor expands ``<image>`` into one token per image patch
(64 for a 64-px image with 8-px patches).

Uses only torch, transformers, tokenizers and the standard library (besides :mod:`.data`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

from smoothguard.testbed.data import all_texts

try:  # transformers >= 5: the PIL processor needs no torchvision
    from transformers import CLIPImageProcessorPil as _CLIPImageProcessor
except ImportError:  # pragma: no cover - older transformers, where the slow processor is PIL-based
    from transformers import CLIPImageProcessor as _CLIPImageProcessor

__all__ = [
    "CHAT_TEMPLATE",
    "CHAT_TEMPLATE_QUESTION_FIRST",
    "CLIP_MEAN",
    "CLIP_STD",
    "CONFIGS",
    "SPECIAL_TOKENS",
    "TestbedConfig",
    "build_model",
    "build_processor",
    "build_tokenizer",
    "load_testbed_dir",
    "prompt_text",
    "question_first_template",
    "save_testbed",
    "tokenizer_from_json",
    "train_bpe",
    "wrap_bpe",
]

PAD, IMAGE, USER, ASSISTANT, SYSTEM, END = "<pad>", "<image>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"
#: Special tokens, in id order (ids 0-5).
SPECIAL_TOKENS: tuple[str, ...] = (PAD, IMAGE, USER, ASSISTANT, SYSTEM, END)

#: OpenAI CLIP's normalisation (R, G, B), which the image processor applies after scaling pixels to [0, 1].
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

#: Jinja chat template: each turn is ``<|role|>content<|end|>``; images render as ``<image>``.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "<|{{ message['role'] }}|>"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}<image>"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}<|end|>"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)

#: The surrogate's template (``TestbedConfig.question_first``): in each turn the text parts come first, then the
#: images, whatever their order in the message, so the image tokens can attend to the question.
def question_first_template(media_test: str, media_tokens: str) -> str:
    """A chat template whose turns are ``<|role|>text<|end|>``, with a turn's text parts first and then
    ``media_tokens`` once per part for which the Jinja test ``media_test`` holds (on ``part['type']``), whatever
    their order in the message: the media tokens can attend to the question (shared by the audio testbed)."""
    return (
        "{%- for message in messages -%}"
        "<|{{ message['role'] }}|>"
        "{%- if message['content'] is string -%}{{ message['content'] }}"
        "{%- else -%}{%- for part in message['content'] -%}"
        "{%- if part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
        "{%- endfor -%}{%- for part in message['content'] -%}"
        f"{{%- if part['type'] {media_test} -%}}{media_tokens}{{%- endif -%}}"
        "{%- endfor -%}{%- endif -%}<|end|>"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
    )


CHAT_TEMPLATE_QUESTION_FIRST = question_first_template("== 'image'", "<image>")

_VOCAB_SIZE = 512  # an upper bound: BPE stops once every word of the task is one token
_FORMAT = 1  # version of the saved directory layout (testbed.json)


@dataclass(frozen=True)
class TestbedConfig:
    """Sizes of one testbed model. Image side and patch side in pixels."""

    name: str
    seed: int
    image_size: int = 64
    patch_size: int = 8
    vision_hidden: int = 128
    vision_intermediate: int = 512
    vision_layers: int = 4
    vision_heads: int = 4
    text_hidden: int = 256
    text_intermediate: int = 512
    text_layers: int = 4
    text_heads: int = 4
    max_positions: int = 256
    question_first: bool = False  # the prompt puts the question before the image tokens

    @property
    def chat_template(self) -> str:
        """The processor's chat template: image then question, or question then image."""
        return CHAT_TEMPLATE_QUESTION_FIRST if self.question_first else CHAT_TEMPLATE

    @property
    def n_image_tokens(self) -> int:
        """Image tokens in the prompt: one per patch (the CLS feature is dropped)."""
        return (self.image_size // self.patch_size) ** 2


#: The two shipped models: "main" (about 3.6 M parameters) and an independently seeded, smaller "surrogate"
#: (about 1.5 M) for transfer attacks. The surrogate also sees the image differently: 16-pixel patches (16 image
#: tokens instead of 64) after the question (``question_first``): cheaper to train, easier for the image tokens to
#: relate to the question, and a transfer setting across architectures, as in the paper (its attack image was
#: crafted on another model).
CONFIGS: dict[str, TestbedConfig] = {
    "main": TestbedConfig(name="main", seed=0),
    "surrogate": TestbedConfig(
        name="surrogate",
        seed=1,
        patch_size=16,
        question_first=True,
        vision_hidden=96,
        vision_intermediate=384,
        vision_layers=3,
        text_hidden=192,
        text_intermediate=384,
        text_layers=3,
    ),
}


def _resolve(config: str | TestbedConfig) -> TestbedConfig:
    if isinstance(config, TestbedConfig):
        return config
    if config not in CONFIGS:
        raise ValueError(f"unknown testbed config {config!r}; choose one of {sorted(CONFIGS)}")
    return CONFIGS[config]


def _wrap(bpe: Tokenizer) -> PreTrainedTokenizerFast:
    return wrap_bpe(bpe, {"image_token": IMAGE}, _resolve("main").max_positions)


def wrap_bpe(bpe: Tokenizer, media_tokens: dict[str, str], max_positions: int) -> PreTrainedTokenizerFast:
    """``bpe`` as a left-padding ``PreTrainedTokenizerFast`` with the testbeds' chat tokens and ``media_tokens``
    (e.g. ``{"image_token": "<image>"}``) as its extra special tokens."""
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        pad_token=PAD,
        eos_token=END,
        extra_special_tokens=media_tokens,
        additional_special_tokens=[USER, ASSISTANT, SYSTEM],
        padding_side="left",
        model_max_length=max_positions,
    )


def train_bpe(texts: Iterable[str], special_tokens: Sequence[str], vocab_size: int) -> Tokenizer:
    """A byte-level BPE trained on ``texts``, ``special_tokens`` first (their ids 0, 1, ...): any text can be
    encoded (bytes are the fallback), and with ``vocab_size`` large enough the task's words are single tokens."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer)
    return bpe


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on every question and answer of the task, with :data:`SPECIAL_TOKENS` first.

    Any text can be encoded (bytes are the fallback); the task's words are single tokens. Left padding.
    """
    return _wrap(train_bpe(all_texts(), SPECIAL_TOKENS, _VOCAB_SIZE))


def tokenizer_from_json(text: str) -> PreTrainedTokenizerFast:
    """The tokenizer whose ``tokenizers`` JSON is ``text`` (as stored in training checkpoints)."""
    return _wrap(Tokenizer.from_str(text))


def tokenizer_json(tokenizer: PreTrainedTokenizerFast) -> str:
    """The ``tokenizers`` JSON of ``tokenizer`` (the inverse of :func:`tokenizer_from_json`)."""
    return tokenizer.backend_tokenizer.to_str()


def prompt_text(question: str, config: str | TestbedConfig = "main") -> str:
    """The text the chat template of ``config`` renders for one image and ``question``, generation prompt included."""
    if _resolve(config).question_first:
        return f"{USER}{question}{IMAGE}{END}{ASSISTANT}"
    return f"{USER}{IMAGE}{question}{END}{ASSISTANT}"


def build_processor(tokenizer: PreTrainedTokenizerFast, config: str | TestbedConfig = "main") -> LlavaProcessor:
    """A ``LlavaProcessor``: CLIP preprocessing at the model's input size, ``<image>`` -> one token per patch."""
    cfg = _resolve(config)
    image_processor = _CLIPImageProcessor(
        size={"shortest_edge": cfg.image_size},
        crop_size={"height": cfg.image_size, "width": cfg.image_size},
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=cfg.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token; "default" drops its feature again
        chat_template=cfg.chat_template,
        image_token=IMAGE,
    )


def model_config(config: str | TestbedConfig, tokenizer: PreTrainedTokenizerFast) -> LlavaConfig:
    """The transformers config of a testbed model whose vocabulary is ``tokenizer``'s."""
    cfg = _resolve(config)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    vision = CLIPVisionConfig(
        hidden_size=cfg.vision_hidden,
        intermediate_size=cfg.vision_intermediate,
        num_hidden_layers=cfg.vision_layers,
        num_attention_heads=cfg.vision_heads,
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        projection_dim=cfg.vision_hidden,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.text_hidden,
        intermediate_size=cfg.text_intermediate,
        num_hidden_layers=cfg.text_layers,
        num_attention_heads=cfg.text_heads,
        num_key_value_heads=cfg.text_heads,
        max_position_embeddings=cfg.max_positions,
        tie_word_embeddings=True,
        bos_token_id=ids[USER],
        eos_token_id=ids[END],
        pad_token_id=ids[PAD],
    )
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=ids[IMAGE],
        image_seq_length=cfg.n_image_tokens,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,  # a 4-layer tower: use its last layer, not the penultimate
        tie_word_embeddings=True,
    )


def build_model(
    config: str | TestbedConfig, tokenizer: PreTrainedTokenizerFast, seed: int | None = None
) -> LlavaForConditionalGeneration:
    """A freshly initialised testbed model (fp32, CPU); weights seeded by ``seed`` (default: the config's)."""
    cfg = _resolve(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed if seed is None else seed)
        model = LlavaForConditionalGeneration(model_config(cfg, tokenizer))
    _set_generation_defaults(model, tokenizer)
    return model


def _set_generation_defaults(model: LlavaForConditionalGeneration, tokenizer: PreTrainedTokenizerFast) -> None:
    gen = model.generation_config
    gen.eos_token_id = tokenizer.convert_tokens_to_ids(END)
    gen.pad_token_id = tokenizer.convert_tokens_to_ids(PAD)
    gen.bos_token_id = tokenizer.convert_tokens_to_ids(USER)
    gen.do_sample = False
    gen.max_new_tokens = 32


def save_testbed(
    model: LlavaForConditionalGeneration,
    processor: LlavaProcessor,
    directory: str | Path,
    config: str | TestbedConfig,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` as fp16 safetensors, with its processor and ``testbed.json``, into ``directory``.

    The model itself is left unchanged (a copy is cast). Returns the directory.
    """
    cfg = _resolve(config)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    half = copy.deepcopy(model).to(device="cpu", dtype=torch.float16)
    half.save_pretrained(out)
    processor.save_pretrained(out)
    info = {"format": _FORMAT, "config": asdict(cfg), **(metadata or {})}
    (out / "testbed.json").write_text(json.dumps(info, indent=2) + "\n")
    return out


def load_testbed_dir(
    directory: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[LlavaForConditionalGeneration, LlavaProcessor, dict[str, Any]]:
    """(model in eval mode, processor, testbed.json contents) from a :func:`save_testbed` directory, offline.

    The processor is rebuilt in code from the saved tokenizer, so no torchvision and no hub are needed.
    """
    path = Path(directory)
    info = json.loads((path / "testbed.json").read_text())
    cfg = TestbedConfig(**info["config"])
    tokenizer = PreTrainedTokenizerFast.from_pretrained(path, local_files_only=True)
    processor = build_processor(tokenizer, cfg)
    model = LlavaForConditionalGeneration.from_pretrained(path, dtype=dtype, local_files_only=True)
    model.to(device).eval()
    return model, processor, info
