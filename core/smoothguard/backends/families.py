"""The model families the Hugging Face backend supports: how each one is prompted, fed and sliced.

A :class:`Family` knows, for one architecture: its model class, whether it reads images or audio, the prompt
to use when the processor has no chat template, and where each sample's images sit in the processor's
``pixel_values`` (needed to add the paper's normalised-space noise to one variant only):

* ``"patches"`` (Qwen2-VL, Qwen2.5-VL): ``(sum of patches over all images, C*T*P*P)``; image ``j`` owns
  ``prod(image_grid_thw[j])`` consecutive rows.
* ``"images"`` (LLaVA-1.5 ``(images, 3, H, W)``, LLaVA-NeXT ``(images, 1 + tiles, 3, H, W)``, BLIP-2
  ``(batch, 3, H, W)``): one leading row per image, samples in order. (LLaVA-NeXT pads the tiles of smaller
  images; the model drops padding tiles by ``image_sizes``, so noise on them is harmless.)
* ``"tiles"`` (Idefics3, SmolVLM): ``(batch, tiles, 3, H, W)``; sample ``b`` owns its first tiles (a split
  image gives several), the rest are all-zero padding, which the model drops and which must stay zero.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from smoothguard.errors import ConfigError

__all__ = ["FAMILIES", "Family", "family_for", "pixel_slices", "supported"]

Layout = Literal["patches", "images", "tiles"]


@dataclass(frozen=True)
class Family:
    """One supported architecture.

    name: human name; model_types: ``config.model_type`` values; model_class: the transformers class name;
    modality: ``"image"`` or ``"audio"``; layout: see the module docstring; max_media: most images/clips per
    prompt (None: any); fallback_prompt(prompt, n_media) -> text, used when the processor has no chat template;
    nested_images: the processor takes one list of images per sample (else one flat list).
    """

    name: str
    model_types: tuple[str, ...]
    model_class: str
    modality: Literal["image", "audio"]
    fallback_prompt: Callable[[str, int], str]
    layout: Layout | None = None
    max_media: int | None = None
    nested_images: bool = False
    chat_prompt: bool = True

    def messages(self, prompt: str, n_media: int) -> list[dict[str, Any]]:
        """A one-turn chat: the media first (as the paper's defence scripts), then the text."""
        part = {"type": "image"} if self.modality == "image" else {"type": "audio", "audio_url": "<audio>"}
        return [{"role": "user", "content": [dict(part) for _ in range(n_media)] + [{"type": "text", "text": prompt}]}]

    def prompt(self, processor: Any, prompt: str, n_media: int) -> str:
        """The full prompt text with ``n_media`` placeholders: the processor's chat template, else the fallback."""
        template = _chat_template(processor) if self.chat_prompt else None
        if template is None:
            return self.fallback_prompt(prompt, n_media)
        return processor.apply_chat_template(self.messages(prompt, n_media), chat_template=template,
                                             add_generation_prompt=True, tokenize=False)


def _chat_template(processor: Any) -> Any:
    template = getattr(processor, "chat_template", None)
    if template is None:
        template = getattr(getattr(processor, "tokenizer", None), "chat_template", None)
    return template


def _qwen(prompt: str, n: int) -> str:
    images = "<|vision_start|><|image_pad|><|vision_end|>" * n
    return f"<|im_start|>user\n{images}{prompt}<|im_end|>\n<|im_start|>assistant\n"


def _llava(prompt: str, n: int) -> str:
    return "USER: " + "<image>\n" * n + f"{prompt} ASSISTANT:"


def _idefics3(prompt: str, n: int) -> str:
    return "<|im_start|>User:" + "<image>" * n + f"{prompt}<end_of_utterance>\nAssistant:"


def _blip2(prompt: str, n: int) -> str:
    return f"Question: {prompt} Answer:"  # the processor prepends the query-token placeholders itself


def _qwen_audio(prompt: str, n: int) -> str:
    return "<|audio_bos|><|AUDIO|><|audio_eos|>" * n + prompt


FAMILIES: tuple[Family, ...] = (
    Family("Qwen2.5-VL", ("qwen2_5_vl",), "Qwen2_5_VLForConditionalGeneration", "image", _qwen, "patches"),
    Family("Qwen2-VL", ("qwen2_vl",), "Qwen2VLForConditionalGeneration", "image", _qwen, "patches"),
    Family("LLaVA-1.5", ("llava",), "LlavaForConditionalGeneration", "image", _llava, "images"),
    Family("LLaVA-NeXT", ("llava_next",), "LlavaNextForConditionalGeneration", "image", _llava, "images"),
    Family("Idefics3", ("idefics3",), "Idefics3ForConditionalGeneration", "image", _idefics3, "tiles",
           nested_images=True),
    Family("SmolVLM", ("smolvlm",), "SmolVLMForConditionalGeneration", "image", _idefics3, "tiles",
           nested_images=True),
    # BLIP-2 checkpoints are base captioning/VQA models: the "Question: ... Answer:" prompt of the BLIP-2 paper.
    Family("BLIP-2", ("blip-2", "blip_2"), "Blip2ForConditionalGeneration", "image", _blip2, "images",
           max_media=1, chat_prompt=False),
    Family("Qwen2-Audio", ("qwen2_audio",), "Qwen2AudioForConditionalGeneration", "audio", _qwen_audio),
)


def supported() -> str:
    """The supported families and their ``model_type`` values, for error messages."""
    return ", ".join(f"{f.name} ({'/'.join(f.model_types)})" for f in FAMILIES)


def family_for(model_type: str | None) -> Family:
    """The family of ``config.model_type``; :class:`ConfigError` listing the supported ones otherwise."""
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    raise ConfigError(f"model_type {model_type!r} is not supported by the Hugging Face backend; supported "
                      f"families: {supported()}. Wrap other models with SmoothGuard.run(media, generate).")


def pixel_slices(family: Family, inputs: Any, media_counts: Sequence[int]) -> list[Any]:
    """Views into ``inputs["pixel_values"]``, one per sample, holding exactly that sample's normalised pixels.

    ``media_counts[b]``: images of sample ``b``. Writing into a view changes ``pixel_values`` in place.
    """
    pv = inputs["pixel_values"]
    if family.layout == "tiles":
        mask = inputs.get("pixel_attention_mask")
        views = []
        for b in range(pv.shape[0]):
            if mask is not None:
                real = int(mask[b].flatten(1).any(dim=1).sum())
            else:
                real = int((pv[b].flatten(1) != 0).any(dim=1).sum())
            views.append(pv[b, :real])
        return views
    if family.layout == "patches":
        rows = inputs["image_grid_thw"].prod(dim=-1).tolist()
    elif family.layout == "images":
        rows = [1] * pv.shape[0]
    else:
        raise ConfigError(f"{family.name} has no pixel_values to add tensor noise to")
    if len(rows) != sum(media_counts):
        raise RuntimeError(f"{family.name}: pixel_values hold {len(rows)} images, expected {sum(media_counts)}")
    views, image, row = [], 0, 0
    for count in media_counts:
        n = sum(rows[image:image + count])
        views.append(pv[row:row + n])
        image += count
        row += n
    return views
