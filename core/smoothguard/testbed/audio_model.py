"""The audio testbed model: a tiny Qwen2-Audio (Whisper-style encoder + Qwen2 decoder) built in code.

:func:`build_audio_tokenizer` trains a byte-level BPE on the task's text (:func:`~.audio_data.audio_texts`),
:func:`build_audio_processor` wraps it with a ``WhisperFeatureExtractor`` (40 mel bins, 16 kHz, 25 ms windows,
10 ms hop, padded to 2 s) in a ``Qwen2AudioProcessor``, :func:`build_audio_model` makes a
``Qwen2AudioForConditionalGeneration`` from :data:`AUDIO_CONFIGS`. :func:`save_audio_testbed` writes fp16
safetensors with the tokenizer and feature extractor; :func:`load_audio_testbed_dir` reads them back offline.

Prompt format (question first, what the chat template renders with ``add_generation_prompt=True``)::

    <|user|>How many beeps are there?<|audio_bos|><|AUDIO|><|audio_eos|><|end|><|assistant|>

and the model answers ``There are 3 beeps.<|end|>``. The processor expands ``<|AUDIO|>`` into one token per
40 ms of audio (37 for a 1.5 s clip). Clips longer than 2 s are cut to their first 2 s by the feature extractor.

Uses only torch, transformers, tokenizers, numpy and the standard library (besides :mod:`.audio_data`).
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer
from transformers import (
    PreTrainedTokenizerFast,
    Qwen2AudioConfig,
    Qwen2AudioForConditionalGeneration,
    Qwen2AudioProcessor,
    WhisperFeatureExtractor,
)

from smoothguard.testbed.audio_data import SAMPLE_RATE, audio_texts
from smoothguard.testbed.model import ASSISTANT, END, PAD, SYSTEM, USER, question_first_template, train_bpe, wrap_bpe

__all__ = [
    "AUDIO_CHAT_TEMPLATE",
    "AUDIO_CONFIGS",
    "AUDIO_SPECIAL_TOKENS",
    "AudioTestbedConfig",
    "audio_prompt_text",
    "build_audio_model",
    "build_audio_processor",
    "build_audio_tokenizer",
    "load_audio_testbed_dir",
    "save_audio_testbed",
]

AUDIO, AUDIO_BOS, AUDIO_EOS = "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"  # the chat tokens are the image testbed's
#: Special tokens, in id order (ids 0-7).
AUDIO_SPECIAL_TOKENS: tuple[str, ...] = (PAD, AUDIO, AUDIO_BOS, AUDIO_EOS, USER, ASSISTANT, SYSTEM, END)

#: Jinja chat template: each turn is ``<|role|>text<|end|>``; in a turn the text parts come first, then one
#: ``<|audio_bos|><|AUDIO|><|audio_eos|>`` per audio part, whatever their order in the message (question first:
#: the audio tokens can attend to the question, which is what makes CPU training quick).
AUDIO_CHAT_TEMPLATE = question_first_template("in ('audio', 'input_audio')", f"{AUDIO_BOS}{AUDIO}{AUDIO_EOS}")

_VOCAB_SIZE = 384  # an upper bound: BPE stops once every word of the task is one token
_FORMAT = 1  # version of the saved directory layout (testbed.json)


@dataclass(frozen=True)
class AudioTestbedConfig:
    """Sizes of one audio testbed model. chunk_seconds: the feature extractor's fixed input length, s."""

    name: str
    seed: int
    mel_bins: int = 40
    chunk_seconds: int = 2
    encoder_hidden: int = 96
    encoder_ffn: int = 256
    encoder_layers: int = 2
    encoder_heads: int = 4
    text_hidden: int = 128
    text_intermediate: int = 256
    text_layers: int = 2
    text_heads: int = 4
    max_positions: int = 128

    @property
    def n_frames(self) -> int:
        """Mel frames the encoder reads (10 ms each): ``chunk_seconds`` of audio."""
        return self.chunk_seconds * 100


#: The shipped audio model ("audio", about 0.7 M parameters).
AUDIO_CONFIGS: dict[str, AudioTestbedConfig] = {"audio": AudioTestbedConfig(name="audio", seed=0)}


def _resolve(config: str | AudioTestbedConfig) -> AudioTestbedConfig:
    if isinstance(config, AudioTestbedConfig):
        return config
    if config not in AUDIO_CONFIGS:
        raise ValueError(f"unknown audio testbed config {config!r}; choose one of {sorted(AUDIO_CONFIGS)}")
    return AUDIO_CONFIGS[config]


def _wrap(bpe: Tokenizer) -> PreTrainedTokenizerFast:
    return wrap_bpe(bpe, {"audio_token": AUDIO, "audio_bos_token": AUDIO_BOS, "audio_eos_token": AUDIO_EOS},
                    _resolve("audio").max_positions)


def build_audio_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on every question and answer of the task, :data:`AUDIO_SPECIAL_TOKENS` first."""
    return _wrap(train_bpe(audio_texts(), AUDIO_SPECIAL_TOKENS, _VOCAB_SIZE))


def audio_prompt_text(question: str) -> str:
    """The text the chat template renders for one clip and ``question``, generation prompt included."""
    return f"{USER}{question}{AUDIO_BOS}{AUDIO}{AUDIO_EOS}{END}{ASSISTANT}"


def build_feature_extractor(config: str | AudioTestbedConfig = "audio") -> WhisperFeatureExtractor:
    """Whisper's log-mel front end at the model's size: ``mel_bins`` bins, 16 kHz, n_fft 400, hop 160."""
    cfg = _resolve(config)
    return WhisperFeatureExtractor(feature_size=cfg.mel_bins, sampling_rate=SAMPLE_RATE, hop_length=160,
                                   chunk_length=cfg.chunk_seconds, n_fft=400, padding_value=0.0)


def build_audio_processor(tokenizer: PreTrainedTokenizerFast,
                          config: str | AudioTestbedConfig = "audio") -> Qwen2AudioProcessor:
    """A ``Qwen2AudioProcessor``: the model's Whisper front end, ``tokenizer`` and the question-first template."""
    return Qwen2AudioProcessor(feature_extractor=build_feature_extractor(config), tokenizer=tokenizer,
                               chat_template=AUDIO_CHAT_TEMPLATE)


def audio_model_config(config: str | AudioTestbedConfig, tokenizer: PreTrainedTokenizerFast) -> Qwen2AudioConfig:
    """The transformers config of an audio testbed model whose vocabulary is ``tokenizer``'s."""
    cfg = _resolve(config)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in AUDIO_SPECIAL_TOKENS}
    return Qwen2AudioConfig(
        audio_config=dict(d_model=cfg.encoder_hidden, encoder_layers=cfg.encoder_layers,
                          encoder_attention_heads=cfg.encoder_heads, encoder_ffn_dim=cfg.encoder_ffn,
                          num_mel_bins=cfg.mel_bins, max_source_positions=cfg.n_frames // 2),
        text_config=dict(model_type="qwen2", vocab_size=len(tokenizer), hidden_size=cfg.text_hidden,
                         intermediate_size=cfg.text_intermediate, num_hidden_layers=cfg.text_layers,
                         num_attention_heads=cfg.text_heads, num_key_value_heads=cfg.text_heads,
                         max_position_embeddings=cfg.max_positions, tie_word_embeddings=True,
                         bos_token_id=ids[USER], eos_token_id=ids[END], pad_token_id=ids[PAD]),
        audio_token_index=ids[AUDIO],
        tie_word_embeddings=True,
    )


def build_audio_model(config: str | AudioTestbedConfig, tokenizer: PreTrainedTokenizerFast,
                      seed: int | None = None) -> Qwen2AudioForConditionalGeneration:
    """A freshly initialised audio testbed model (fp32, CPU); weights seeded by ``seed`` (default: the config's)."""
    cfg = _resolve(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed if seed is None else seed)
        model = Qwen2AudioForConditionalGeneration(audio_model_config(cfg, tokenizer))
    gen = model.generation_config
    gen.eos_token_id = tokenizer.convert_tokens_to_ids(END)
    gen.pad_token_id = tokenizer.convert_tokens_to_ids(PAD)
    gen.bos_token_id = tokenizer.convert_tokens_to_ids(USER)
    gen.do_sample = False
    gen.max_new_tokens = 16
    return model


def save_audio_testbed(model: Qwen2AudioForConditionalGeneration, processor: Qwen2AudioProcessor,
                       directory: str | Path, config: str | AudioTestbedConfig,
                       metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model`` as fp16 safetensors, with its processor and ``testbed.json``, into ``directory``
    (the model itself is left unchanged). Returns the directory."""
    cfg = _resolve(config)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    copy.deepcopy(model).to(device="cpu", dtype=torch.float16).save_pretrained(out)
    processor.save_pretrained(out)
    info = {"format": _FORMAT, "kind": "audio", "config": asdict(cfg), **(metadata or {})}
    (out / "testbed.json").write_text(json.dumps(info, indent=2) + "\n")
    return out


def load_audio_testbed_dir(directory: str | Path, device: str | torch.device = "cpu",
                           dtype: torch.dtype = torch.float32
                           ) -> tuple[Qwen2AudioForConditionalGeneration, Qwen2AudioProcessor, dict[str, Any]]:
    """(model in eval mode, processor, testbed.json contents) from a :func:`save_audio_testbed` directory, offline.

    The processor is rebuilt in code from the saved tokenizer, so nothing is fetched."""
    path = Path(directory)
    info = json.loads((path / "testbed.json").read_text())
    cfg = AudioTestbedConfig(**info["config"])
    tokenizer = PreTrainedTokenizerFast.from_pretrained(path, local_files_only=True)
    processor = build_audio_processor(tokenizer, cfg)
    model = Qwen2AudioForConditionalGeneration.from_pretrained(path, dtype=dtype, local_files_only=True)
    model.to(device).eval()
    return model, processor, info
