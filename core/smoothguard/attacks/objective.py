"""The attack loss: teacher-forced negative log-likelihood of target texts, prompt tokens masked.

For each prompt, the backend builds the model inputs exactly as it does to answer (the processor's chat
template, so the image placeholder tokens are right). A (prompt, target) pair becomes one sequence: the prompt's
tokens, then the target's tokens (``tokenizer(target, add_special_tokens=False)``) and, by default, the end of
sequence token, so the target is also where the answer stops. Sequences of a batch are left-padded on the prompt
and right-padded on the target, so every target starts in the same column and only its logits are computed.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch

from smoothguard.errors import ConfigError
from smoothguard.media import Media

__all__ = ["TargetObjective"]

class TargetObjective:
    """NLL of ``targets[i]`` after ``prompts[i]`` about ``image``, for any ``pixel_values`` of that image's layout.

    backend: an ``HFVisionLanguageModel``; image: the image the pixel values stand for (it fixes the number of
    image tokens); targets: one list per prompt. pairs: every ``(prompt index, target)``; reference: the
    processor's inputs for ``(prompts[0], image)`` (its ``pixel_values`` are what the model sees for ``image``).
    """

    def __init__(self, backend: Any, image: Media, prompts: Sequence[str], targets: Sequence[Sequence[str]], *,
                 target_eos: bool = True) -> None:
        self.backend = backend
        self.model = backend.model
        tokenizer = backend.processor.tokenizer
        self.prompts = list(prompts)
        self.pairs: list[tuple[int, str]] = [(i, t) for i, ts in enumerate(targets) for t in ts]
        with torch.no_grad():
            inputs = [backend.build_inputs(p, [[image]]) for p in self.prompts]
        self.reference = inputs[0]
        ids = self.reference["input_ids"]
        self.token_keys = [k for k, v in self.reference.items()
                           if k != "pixel_values" and torch.is_tensor(v) and v.dim() == 2 and v.shape == ids.shape]
        self.image_keys = [k for k, v in self.reference.items()
                           if k != "pixel_values" and k not in self.token_keys and torch.is_tensor(v)]
        self.prompt_tokens = []
        for inp in inputs:
            if "attention_mask" in inp and not bool(inp["attention_mask"].all()):
                raise RuntimeError("the prompt inputs are padded; expected one unpadded sequence")
            self.prompt_tokens.append({k: inp[k][0] for k in self.token_keys})
        eos = _eos_id(self.model, tokenizer) if target_eos else None
        self.target_ids: dict[str, list[int]] = {}
        for _, text in self.pairs:
            if text not in self.target_ids:
                tokens = list(tokenizer(text, add_special_tokens=False)["input_ids"])
                if not tokens:
                    raise ConfigError(f"the target {text!r} has no tokens")
                self.target_ids[text] = tokens + ([eos] if eos is not None else [])
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else (eos if eos is not None else 0))
        self.device = ids.device
        self.keeps_logits = "logits_to_keep" in inspect.signature(self.model.forward).parameters

    def repeat(self, pixel_values: torch.Tensor, n: int) -> torch.Tensor:
        """The ``pixel_values`` of one image repeated for ``n`` samples (every layout stacks samples on dim 0)."""
        return pixel_values.repeat(n, *([1] * (pixel_values.dim() - 1)))

    def losses(self, pixel_values: torch.Tensor, pairs: Sequence[tuple[int, str]]) -> torch.Tensor:
        """Per-pair mean NLL over the target tokens (nats per token), shape ``(len(pairs),)``.

        pixel_values: one image per pair, in the family's layout (``Preprocessor`` output or :meth:`repeat`).
        """
        batch, labels = self._batch(pairs)
        n_target = labels.shape[1]
        kwargs: dict[str, Any] = {"use_cache": False}
        if self.keeps_logits:
            kwargs["logits_to_keep"] = n_target + 1
        out = self.model(**batch, pixel_values=pixel_values, **kwargs)
        logits = out.logits[:, -(n_target + 1):-1].float()
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                                ignore_index=-100, reduction="none").view(labels.shape)
        counts = (labels != -100).sum(dim=1).clamp(min=1)
        return nll.sum(dim=1) / counts

    def mean_loss(self, pixel_values: torch.Tensor, chunk: int = 8) -> float:
        """Mean NLL over every pair for the one-image ``pixel_values`` (no gradient), in chunks of ``chunk``."""
        total = 0.0
        with torch.no_grad():
            for start in range(0, len(self.pairs), chunk):
                pairs = self.pairs[start:start + chunk]
                total += float(self.losses(self.repeat(pixel_values, len(pairs)), pairs).sum())
        return total / len(self.pairs)

    def _batch(self, pairs: Sequence[tuple[int, str]]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Model inputs without pixel_values, and labels ``(n, longest target)`` (-100 on padding)."""
        n = len(pairs)
        n_prompt = max(len(self.prompt_tokens[i]["input_ids"]) for i, _ in pairs)
        n_target = max(len(self.target_ids[t]) for _, t in pairs)
        width = n_prompt + n_target
        batch: dict[str, torch.Tensor] = {}
        for key in self.token_keys:
            fill = self.pad_id if key == "input_ids" else 0
            batch[key] = torch.full((n, width), fill, dtype=self.reference[key].dtype, device=self.device)
        labels = torch.full((n, n_target), -100, dtype=torch.long, device=self.device)
        for row, (i, text) in enumerate(pairs):
            prompt = self.prompt_tokens[i]
            start = n_prompt - len(prompt["input_ids"])
            target = torch.tensor(self.target_ids[text], dtype=torch.long, device=self.device)
            for key in self.token_keys:
                batch[key][row, start:n_prompt] = prompt[key]
            batch["input_ids"][row, n_prompt:n_prompt + len(target)] = target
            if "attention_mask" in batch:
                batch["attention_mask"][row, n_prompt:n_prompt + len(target)] = 1
            labels[row, :len(target)] = target
        for key in self.image_keys:
            value = self.reference[key]
            batch[key] = value.repeat(n, *([1] * (value.dim() - 1)))
        return batch, labels


def _eos_id(model: Any, tokenizer: Any) -> int | None:
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(eos, list | tuple):
        eos = eos[0] if eos else None
    if eos is None:
        eos = tokenizer.eos_token_id
    return None if eos is None else int(eos)
