"""Examples -> model inputs, exactly as the testbed's ``LlavaProcessor`` would make them, but fast.

Training and evaluation build thousands of batches a second in data-loader workers, so they skip the
processor: token ids of every task text are looked up once (:class:`Encoder`), and pixels are scaled and
normalised in numpy (:func:`normalize`). The tests check both against the processor.
Uses numpy and torch only (no tokenizer inside, so an :class:`Encoder` pickles into worker processes cheaply).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from smoothguard.testbed.data import all_texts
from smoothguard.testbed.model import ASSISTANT, CLIP_MEAN, CLIP_STD, END, IMAGE, PAD, USER

__all__ = ["IGNORE_INDEX", "Encoder", "add_pixel_noise", "normalize", "to_pixels"]

#: Label of positions that the loss ignores (everything but the answer).
IGNORE_INDEX = -100

_MEAN = np.asarray(CLIP_MEAN, dtype=np.float32)
_STD = np.asarray(CLIP_STD, dtype=np.float32)


def to_pixels(images: Sequence[Image.Image]) -> np.ndarray:
    """(B, H, W, 3) float32 in [0, 1] from RGB images that already have the model's input size."""
    return np.stack([np.asarray(image.convert("RGB"), dtype=np.float32) for image in images]) / np.float32(255.0)


def add_pixel_noise(
    pixels: np.ndarray, std: float | np.ndarray, rng: np.random.Generator, clamp: bool | np.ndarray = True
) -> np.ndarray:
    """``pixels + N(0, std^2)`` for (B, H, W, 3) pixels in [0, 1]; a new float32 array.

    std: [0, 1] pixel units, broadcastable to the pixels ((3,) per channel, (B, 1, 1, 1) per image);
    clamp: clip back to [0, 1], or (B,) bools choosing the images that are clipped (an unclipped image has
    the paper's noise, added to the normalised tensor).
    """
    noisy = pixels + rng.standard_normal(pixels.shape, dtype=np.float32) * np.asarray(std, dtype=np.float32)
    if isinstance(clamp, bool):
        return np.clip(noisy, 0.0, 1.0) if clamp else noisy
    clip = np.asarray(clamp, dtype=bool).reshape(-1, 1, 1, 1)
    return np.where(clip, np.clip(noisy, 0.0, 1.0), noisy)


def normalize(pixels: np.ndarray) -> torch.Tensor:
    """CLIP-normalised ``pixel_values`` (B, 3, H, W) float32 from (B, H, W, 3) pixels in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(((pixels - _MEAN) / _STD).transpose(0, 3, 1, 2)))


@dataclass(frozen=True)
class Encoder:
    """Token ids of the testbed's prompts and answers. Build with :meth:`from_tokenizer`.

    ids: the ids of every task text (questions and answers, no special tokens); special: the special ids;
    n_image_tokens: ``<image>`` tokens per image (one per patch); question_first: the question comes before the
    image tokens (the surrogate's chat template).
    """

    ids: dict[str, tuple[int, ...]]
    special: dict[str, int]
    n_image_tokens: int
    question_first: bool = False

    @classmethod
    def from_tokenizer(cls, tokenizer, n_image_tokens: int, texts: Sequence[str] | None = None, *,
                       question_first: bool = False) -> Encoder:
        """Encode ``texts`` (default: :func:`~smoothguard.testbed.data.all_texts`) once with ``tokenizer``."""
        texts = all_texts() if texts is None else list(texts)
        encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
        special = {token: tokenizer.convert_tokens_to_ids(token) for token in (PAD, IMAGE, USER, ASSISTANT, END)}
        return cls({t: tuple(i) for t, i in zip(texts, encoded, strict=True)}, special, n_image_tokens,
                   question_first)

    @classmethod
    def for_processor(cls, processor) -> Encoder:
        """The encoder matching a testbed processor: its image token count and its chat template's order."""
        probe = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "?"}]}]
        text = processor.apply_chat_template(probe, add_generation_prompt=True, tokenize=False)
        size = processor.image_processor.crop_size["height"]
        ids = processor(images=[Image.new("RGB", (size, size))], text=[IMAGE], return_tensors="np")["input_ids"]
        n_image_tokens = int((ids == processor.tokenizer.convert_tokens_to_ids(IMAGE)).sum())
        question_first = text.index("?") < text.index(IMAGE)
        return cls.from_tokenizer(processor.tokenizer, n_image_tokens, question_first=question_first)

    def prompt(self, question: str) -> list[int]:
        """``<|user|>`` + image tokens + question + ``<|end|><|assistant|>`` (question first when so configured):
        the processor's expanded ids."""
        s = self.special
        image, text = [s[IMAGE]] * self.n_image_tokens, list(self.ids[question])
        return [s[USER], *(text + image if self.question_first else image + text), s[END], s[ASSISTANT]]

    def answer(self, answer: str) -> list[int]:
        """The answer's ids followed by ``<|end|>`` (the model's end of turn and EOS)."""
        return [*self.ids[answer], self.special[END]]

    def train_batch(self, questions: Sequence[str], answers: Sequence[str]) -> dict[str, torch.Tensor]:
        """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (B, L) int64; labels only on answers."""
        rows = [(self.prompt(q), self.answer(a)) for q, a in zip(questions, answers, strict=True)]
        length = max(len(p) + len(a) for p, a in rows)
        input_ids = np.full((len(rows), length), self.special[PAD], dtype=np.int64)
        labels = np.full((len(rows), length), IGNORE_INDEX, dtype=np.int64)
        mask = np.zeros((len(rows), length), dtype=np.int64)
        for i, (p, a) in enumerate(rows):
            n = len(p) + len(a)
            input_ids[i, :n] = p + a
            labels[i, len(p) : n] = a
            mask[i, :n] = 1
        return {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy(mask),
            "labels": torch.from_numpy(labels),
        }

    def prompt_batch(self, questions: Sequence[str]) -> dict[str, torch.Tensor]:
        """Left-padded prompts for ``generate``: ``input_ids`` and ``attention_mask`` (B, L) int64."""
        rows = [self.prompt(q) for q in questions]
        length = max(len(r) for r in rows)
        input_ids = np.full((len(rows), length), self.special[PAD], dtype=np.int64)
        mask = np.zeros((len(rows), length), dtype=np.int64)
        for i, r in enumerate(rows):
            input_ids[i, length - len(r) :] = r
            mask[i, length - len(r) :] = 1
        return {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(mask)}
