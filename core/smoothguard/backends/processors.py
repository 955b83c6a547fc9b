"""Processors that work without torchvision, and loading a checkpoint's processor.

transformers 5.x processors that declare a ``video_processor`` (Qwen2-VL, Qwen2.5-VL, SmolVLM) cannot be built
when torchvision is absent: ``ProcessorMixin.__init__`` type-checks the video processor against a class that is
only exported with torchvision. The ``ImageOnly*`` subclasses below drop the video processor (SmolVLM's also
its ``num2words`` requirement, used only for video prompts); images and text behave exactly as the parent's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import Qwen2_5_VLProcessor, Qwen2VLProcessor, SmolVLMProcessor
from transformers.processing_utils import ProcessorMixin

__all__ = ["ImageOnlyQwen2VLProcessor", "ImageOnlyQwen2_5_VLProcessor", "ImageOnlySmolVLMProcessor", "load_processor"]


def _token_id(tokenizer: Any, name: str, default: str) -> tuple[str, int]:
    token = getattr(tokenizer, name, None) or default
    return token, tokenizer.convert_tokens_to_ids(token)


class _SavesAsStock:
    """Saved under the stock class name, so that ``AutoProcessor`` loads the stock processor where torchvision
    is installed (and :func:`load_processor` falls back to the image-only one where it is not)."""

    def save_pretrained(self, save_directory: Any, *args: Any, **kwargs: Any) -> Any:
        out = super().save_pretrained(save_directory, *args, **kwargs)  # type: ignore[misc]
        stock = type(self).__mro__[2].__name__  # (ImageOnly..., _SavesAsStock, stock class, ...)
        for name in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
            path = Path(save_directory) / name
            if path.is_file():
                data = json.loads(path.read_text(encoding="utf-8"))
                if data.get("processor_class") == type(self).__name__:
                    data["processor_class"] = stock
                    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return out


class ImageOnlyQwen2VLProcessor(_SavesAsStock, Qwen2VLProcessor):
    """``Qwen2VLProcessor`` without a video processor (images and text only)."""

    def __init__(self, image_processor: Any = None, tokenizer: Any = None, chat_template: str | None = None,
                 **kwargs: Any) -> None:
        self.image_token, self.image_token_id = _token_id(tokenizer, "image_token", "<|image_pad|>")
        self.video_token, self.video_token_id = _token_id(tokenizer, "video_token", "<|video_pad|>")
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)


class ImageOnlyQwen2_5_VLProcessor(_SavesAsStock, Qwen2_5_VLProcessor):
    """``Qwen2_5_VLProcessor`` without a video processor (images and text only)."""

    def __init__(self, image_processor: Any = None, tokenizer: Any = None, chat_template: str | None = None,
                 **kwargs: Any) -> None:
        self.image_token, self.image_token_id = _token_id(tokenizer, "image_token", "<|image_pad|>")
        self.video_token, self.video_token_id = _token_id(tokenizer, "video_token", "<|video_pad|>")
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)


class ImageOnlySmolVLMProcessor(_SavesAsStock, SmolVLMProcessor):
    """``SmolVLMProcessor`` without a video processor and without ``num2words`` (images and text only)."""

    def __init__(self, image_processor: Any = None, tokenizer: Any = None, image_seq_len: int = 169,
                 chat_template: str | None = None, **kwargs: Any) -> None:
        self.fake_image_token = getattr(tokenizer, "fake_image_token", "<fake_token_around_image>")
        self.image_token, self.image_token_id = _token_id(tokenizer, "image_token", "<image>")
        self.end_of_utterance_token = getattr(tokenizer, "end_of_utterance_token", "<end_of_utterance>")
        self.global_image_token = getattr(tokenizer, "global_image_token", "<global-img>")
        self.image_seq_len = image_seq_len
        self.video_token = getattr(tokenizer, "video_token", "<video>")
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    def apply_chat_template(self, conversation: Any, chat_template: str | None = None, **kwargs: Any) -> Any:
        """``ProcessorMixin.apply_chat_template`` (SmolVLM's reads video settings from the absent video processor)."""
        return ProcessorMixin.apply_chat_template(self, conversation, chat_template, **kwargs)


#: model_type -> image-only processor class, for the families whose stock processor needs torchvision
IMAGE_ONLY: dict[str, type[ProcessorMixin]] = {
    "qwen2_vl": ImageOnlyQwen2VLProcessor,
    "qwen2_5_vl": ImageOnlyQwen2_5_VLProcessor,
    "smolvlm": ImageOnlySmolVLMProcessor,
}


def load_processor(model_id_or_path: Any, model_type: str, **hub_kwargs: Any) -> Any:
    """The checkpoint's processor: ``AutoProcessor``, else (no torchvision) the family's image-only processor.

    Raises the ``AutoProcessor`` error when there is no fallback or the fallback fails too.
    """
    from transformers import AutoProcessor

    fallback = IMAGE_ONLY.get(model_type)
    try:
        processor = AutoProcessor.from_pretrained(model_id_or_path, **hub_kwargs)
    except Exception:
        if fallback is None:
            raise
        return fallback.from_pretrained(model_id_or_path, **hub_kwargs)
    if fallback is not None and getattr(processor, "image_processor", None) is None:
        # AutoProcessor gives a bare tokenizer when it does not know the saved processor class
        return fallback.from_pretrained(model_id_or_path, **hub_kwargs)
    return processor
