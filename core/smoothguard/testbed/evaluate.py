"""Held-out accuracy of a testbed model: greedy answers, exact match, per question kind and under noise.

The held-out set is drawn from generator stream 1 (training batches come from stream 0), so it never
repeats a training batch. Noise is the defense's: pixel std ``sigma * CLIP_STD[c]`` per channel, clipped to
[0, 1]; ``yesno_sigma_0.2_unclipped`` adds it unclipped, as the paper did on the normalised tensor.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from smoothguard.testbed.data import KINDS, Example, make_example
from smoothguard.testbed.encode import Encoder, add_pixel_noise, normalize, to_pixels
from smoothguard.testbed.model import CLIP_STD

__all__ = ["EVAL_SIGMAS", "evaluate", "generate_answers", "held_out_examples"]

#: Noise levels (CLIP-normalised units, as the defense's ``sigma``) at which yes/no accuracy is measured.
EVAL_SIGMAS: tuple[float, ...] = (0.1, 0.2)
_HELD_OUT_STREAM = 1
_NOISE_STREAM = 2


def held_out_examples(kind: str, n: int, seed: int = 1234, size: int = 64) -> list[Example]:
    """``n`` examples of ``kind`` from the held-out stream of ``seed``."""
    rng = np.random.default_rng([seed, _HELD_OUT_STREAM, KINDS.index(kind)])
    return [make_example(rng, size, kind=kind) for _ in range(n)]


@torch.no_grad()
def generate_answers(
    model: torch.nn.Module,
    tokenizer,
    encoder: Encoder,
    pixels: np.ndarray,
    questions: Sequence[str],
    batch_size: int = 256,
    max_new_tokens: int = 24,
) -> list[str]:
    """Greedy answers (special tokens stripped) for (B, H, W, 3) [0, 1] ``pixels`` and one question each."""
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    answers: list[str] = []
    for start in range(0, len(questions), batch_size):
        batch = encoder.prompt_batch(questions[start : start + batch_size])
        batch = {k: v.to(device) for k, v in batch.items()}
        pixel_values = normalize(pixels[start : start + batch_size]).to(device=device, dtype=dtype)
        out = model.generate(
            **batch,
            pixel_values=pixel_values,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=encoder.special["<|end|>"],
            pad_token_id=encoder.special["<pad>"],
        )
        new = out[:, batch["input_ids"].shape[1] :]
        answers += [a.strip() for a in tokenizer.batch_decode(new, skip_special_tokens=True)]
    return answers


def evaluate(
    model: torch.nn.Module,
    tokenizer,
    n_per_kind: int = 300,
    seed: int = 1234,
    image_size: int = 64,
    n_image_tokens: int = 64,
    batch_size: int = 256,
    question_first: bool = False,
) -> dict[str, object]:
    """Exact-match accuracy per kind (``yesno``, ``colour``, ``count``, ``describe``) and yes/no under noise.

    Returns accuracies in [0, 1], ``yes_ratio`` (share of "Yes." answers to clean yes/no questions), the
    sizes, and up to 5 wrong answers per measurement under ``errors`` as (question, expected, got).
    """
    was_training = model.training
    model.eval()
    encoder = Encoder.from_tokenizer(tokenizer, n_image_tokens, question_first=question_first)
    metrics: dict[str, object] = {"n_per_kind": n_per_kind, "seed": seed}
    errors: dict[str, list[tuple[str, str, str]]] = {}

    def score(name: str, examples: list[Example], pixels: np.ndarray) -> list[str]:
        questions = [e.question for e in examples]
        got = generate_answers(model, tokenizer, encoder, pixels, questions, batch_size)
        right = [g == e.answer for g, e in zip(got, examples, strict=True)]
        metrics[name] = float(np.mean(right))
        errors[name] = [(e.question, e.answer, g) for g, e, r in zip(got, examples, right, strict=True) if not r][:5]
        return got

    for kind in KINDS:
        examples = held_out_examples(kind, n_per_kind, seed, image_size)
        pixels = to_pixels([e.image for e in examples])
        got = score(kind, examples, pixels)
        if kind == "yesno":
            metrics["yes_ratio"] = float(np.mean([g == "Yes." for g in got]))
            for sigma in EVAL_SIGMAS:
                rng = np.random.default_rng([seed, _NOISE_STREAM, round(sigma * 1000)])
                noisy = add_pixel_noise(pixels, sigma * np.asarray(CLIP_STD, dtype=np.float32), rng, clamp=True)
                score(f"yesno_sigma_{sigma}", examples, noisy)
            rng = np.random.default_rng([seed, _NOISE_STREAM, 0])
            sigma = EVAL_SIGMAS[-1]
            noisy = add_pixel_noise(pixels, sigma * np.asarray(CLIP_STD, dtype=np.float32), rng, clamp=False)
            score(f"yesno_sigma_{sigma}_unclipped", examples, noisy)
    metrics["errors"] = errors
    model.train(was_training)
    return metrics
