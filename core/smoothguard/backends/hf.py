"""Hugging Face transformers vision-language and audio-language models as SmoothGuard backends.

All variants of one request are answered by one batched, greedy ``generate`` (left padding; chunks of
``max_batch_size``), so N candidates cost little more than one on a GPU, and a variant's answer is the answer
it gets when asked alone. Answers are decoded without the prompt.

Noise. The guard passes the clean media and a :class:`~smoothguard.noise.TensorNoise`; the clean image goes
through the processor once per request (cached for the request's rounds), its tensors are repeated for the
variants, and each variant's noise is added to its slice of ``pixel_values`` on the model's device
(:mod:`.model_noise`): after every geometric step of the processor, per view and tile, so ``sigma`` is the std the
model sees at any source size. ``noise_space="pixel"`` (default) clamps to the image range, as ``clip(x + noise,
0, 1)`` in pixels; ``"normalized"`` adds it unclamped, as the paper's code did. Audio noise is added after the mix
to mono and the resampling to the feature extractor's rate. Variants that are not the same media objects (noisy
copies made elsewhere) go through the processor one by one, float pixels unquantised (see :mod:`.float_images`).
"""

from __future__ import annotations

import asyncio
import copy
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from smoothguard.backends.device import resolve_device, resolve_dtype
from smoothguard.backends.families import Family, family_for, pixel_slices
from smoothguard.backends.float_images import float_resizing
from smoothguard.backends.model_noise import PixelNoise
from smoothguard.backends.processors import load_processor
from smoothguard.errors import ConfigError, MediaError, did_you_mean
from smoothguard.media import Media
from smoothguard.media.audio import to_mono_at
from smoothguard.noise import TensorNoise
from smoothguard.result import NoiseSite

__all__ = ["HFAudioLanguageModel", "HFVisionLanguageModel"]

NOISE_SPACES = ("pixel", "normalized")
#: keyword arguments of ``from_pretrained`` that also apply to the config and the processor
_HUB_KWARGS = ("revision", "token", "cache_dir", "local_files_only", "trust_remote_code")
#: the value given to one element of an all-zero real tile (normalised units); see :func:`_mark_blank_tiles`
_BLANK_TILE_MARK = 1e-3


class HFVisionLanguageModel:
    """A transformers image-text-to-text (or audio-text-to-text) model answering every variant in one batch.

    Build it with :meth:`from_pretrained` or from objects already loaded:
    ``HFVisionLanguageModel(model, processor, max_new_tokens=128, max_batch_size=16, noise_space="pixel")``.

    Supported families (``config.model_type``): Qwen2.5-VL, Qwen2-VL, LLaVA-1.5, LLaVA-NeXT, Idefics3, SmolVLM,
    BLIP-2 (one image per prompt) and Qwen2-Audio (audio; see also :class:`HFAudioLanguageModel`).

    model: a ``*ForConditionalGeneration`` of a supported family (its device and dtype are used as they are).
    processor: its processor; the chat template is used when it has one, else the family's plain prompt.
    max_new_tokens: answer length cap, in tokens. max_batch_size: variants per ``generate`` call.
    noise_space: ``"pixel"`` or ``"normalized"`` (module docstring). generation_kwargs: extra ``generate``
    arguments (e.g. ``{"min_new_tokens": 64}`` or ``{"repetition_penalty": 1.0}``); decoding stays greedy.
    """

    modalities: ClassVar[tuple[str, ...]] = ("image", "audio")
    #: the guard passes clean media and a :class:`~smoothguard.noise.TensorNoise`; this backend adds the noise
    adds_noise: ClassVar[bool] = True

    def __init__(self, model: Any, processor: Any, *, max_new_tokens: int = 128, max_batch_size: int = 16,
                 noise_space: str = "pixel", generation_kwargs: Mapping[str, Any] | None = None) -> None:
        _check_settings(max_new_tokens, max_batch_size, noise_space, generation_kwargs)
        self.family: Family = self._family(getattr(getattr(model, "config", None), "model_type", None), noise_space)
        need = "image_processor" if self.family.modality == "image" else "feature_extractor"
        if getattr(processor, need, None) is None or getattr(processor, "tokenizer", None) is None:
            raise ConfigError(f"{self.family.name} needs its processor (a tokenizer and a {need}), got "
                              f"{type(processor).__name__}; pass processor=AutoProcessor.from_pretrained(...)")
        self.model = model.eval()
        self.processor = processor
        self.max_new_tokens = int(max_new_tokens)
        self.max_batch_size = int(max_batch_size)
        self.noise_space = noise_space
        self.generation_kwargs = dict(generation_kwargs or {})
        self._processor = self._working_processor(processor)
        self._lock = threading.Lock()  # one generate at a time on the model
        self._text_lock = threading.Lock()  # fast tokenizers are not re-entrant
        self._prompts: dict[tuple[str, int], str] = {}
        self._last_sample: tuple[str, tuple[Media, ...], Any] | None = None
        image_processor = getattr(self._processor, "image_processor", None)
        #: how noise is added to this model's pixel_values (None for audio models); the attack's EOT uses it too
        self.pixel_noise = (PixelNoise.for_processor(self.family.layout, image_processor)
                            if self.family.modality == "image" else None)

    # -- construction ----------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, model_id_or_path: str | os.PathLike[str], *, device: Any = "auto", dtype: Any = "auto",
                        max_new_tokens: int = 128, max_batch_size: int = 16, noise_space: str = "pixel",
                        processor: Any = None, generation_kwargs: Mapping[str, Any] | None = None,
                        **model_kwargs: Any) -> HFVisionLanguageModel:
        """Load a hub id (``"Qwen/Qwen2.5-VL-3B-Instruct"``) or a local directory.

        device: ``"auto"`` (CUDA, else MPS, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ... dtype: ``"auto"``
        (bfloat16 on CUDA, float32 on CPU), ``"float32"``, ``"float16"``, ``"bfloat16"``. processor: pass one to
        skip loading it. ``model_kwargs`` go to the model's ``from_pretrained`` (``revision``, ``token``,
        ``attn_implementation``, ``device_map``, ``quantization_config``, ...); with ``device_map`` the model is
        not moved to ``device``. Raises :class:`ConfigError` for an unsupported family, device or dtype.
        """
        _check_settings(max_new_tokens, max_batch_size, noise_space, generation_kwargs)
        torch_device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, torch_device)
        import transformers

        hub = {k: model_kwargs[k] for k in _HUB_KWARGS if k in model_kwargs}
        config = transformers.AutoConfig.from_pretrained(model_id_or_path, **hub)
        family = cls._family(config.model_type, noise_space)
        model_class = getattr(transformers, family.model_class)
        model = model_class.from_pretrained(model_id_or_path, config=config, dtype=torch_dtype, **model_kwargs)
        if "device_map" not in model_kwargs:
            model = model.to(torch_device)
        if processor is None:
            processor = load_processor(model_id_or_path, config.model_type, **hub)
        return cls(model, processor, max_new_tokens=max_new_tokens, max_batch_size=max_batch_size,
                   noise_space=noise_space, generation_kwargs=generation_kwargs)

    @classmethod
    def _family(cls, model_type: str | None, noise_space: str) -> Family:
        family = family_for(model_type)
        if family.modality not in cls.modalities:
            raise ConfigError(f"{cls.__name__} takes {' or '.join(cls.modalities)} models; {family.name} reads "
                              f"{family.modality}: use HFVisionLanguageModel")
        if noise_space == "normalized" and family.modality != "image":
            raise ConfigError(f"noise_space='normalized' adds noise to pixel_values, which {family.name} does not "
                              "have; use noise_space='pixel' (audio noise is added to the waveform)")
        return family

    def _working_processor(self, processor: Any) -> Any:
        """A shallow copy of ``processor`` whose image processor keeps float pixels (the caller's is untouched)."""
        image_processor = getattr(processor, "image_processor", None)
        if self.family.modality != "image" or image_processor is None:
            return processor
        clone = copy.copy(processor)
        clone.image_processor = float_resizing(image_processor)
        if isinstance(getattr(clone, "image_token", None), str) and self.family.name == "BLIP-2":
            # Blip2Processor expects an AddedToken (it reads .content) but takes a tokenizer's str image_token as is
            from tokenizers import AddedToken

            clone.image_token = AddedToken(clone.image_token, normalized=False, special=True)
        return clone

    # -- what the guard reads --------------------------------------------------------------------------------

    @property
    def pixel_std(self) -> tuple[float, float, float] | None:
        """The image processor's per-channel normalisation std (R, G, B), or None for audio models."""
        std = getattr(getattr(self.processor, "image_processor", None), "image_std", None)
        if std is None:
            return None
        values = [float(s) for s in np.atleast_1d(np.asarray(std, dtype=np.float64))]
        return (values[0],) * 3 if len(values) == 1 else (values[0], values[1], values[2])

    @property
    def device(self) -> Any:
        """The device the model's inputs go to."""
        return self.model.device

    def __repr__(self) -> str:
        name = getattr(self.model, "name_or_path", "") or type(self.model).__name__
        return (f"{type(self).__name__}({name!r}, family={self.family.name!r}, device={str(self.device)!r}, "
                f"noise_space={self.noise_space!r})")

    # -- generation ------------------------------------------------------------------------------------------

    def generate(self, prompt: str, variants: Sequence[Sequence[Media]],
                 tensor_noise: TensorNoise | None = None) -> list[str | BaseException]:
        """One greedy answer per variant (``variants[i]``: candidate ``i``'s media, in request order).

        A chunk whose ``generate`` fails gives its exception for each of its variants (a CUDA out-of-memory
        chunk is first retried in halves). ``tensor_noise``: noise to add to each variant's ``pixel_values``.
        Raises :class:`MediaError` for media the model cannot read (audio to a vision model, too many images).
        """
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a string, not {type(prompt).__name__}")
        variants = [list(v) for v in variants]
        if tensor_noise is not None and len(tensor_noise.seeds) != len(variants):
            raise ValueError(f"tensor_noise has {len(tensor_noise.seeds)} seeds for {len(variants)} variants")
        for media in variants:
            self._check_media(media)
        answers: list[str | BaseException] = []
        for start in range(0, len(variants), self.max_batch_size):
            indices = list(range(start, min(start + self.max_batch_size, len(variants))))
            answers.extend(self._answer(prompt, variants, indices, tensor_noise))
        return answers

    async def agenerate(self, prompt: str, variants: Sequence[Sequence[Media]],
                        tensor_noise: TensorNoise | None = None) -> list[str | BaseException]:
        """:meth:`generate` in a worker thread, so the event loop stays free."""
        return await asyncio.to_thread(self.generate, prompt, variants, tensor_noise)

    def build_inputs(self, prompt: str, variants: Sequence[Sequence[Media]], tensor_noise: TensorNoise | None = None,
                     indices: Sequence[int] | None = None) -> Any:
        """The model inputs (a ``BatchFeature`` on the model's device, floats in its dtype) for ``variants``.

        ``tensor_noise``: the noise of each variant, added after the processor (:mod:`.model_noise`): to its
        ``pixel_values`` on the model's device (clamped to the image range under ``noise_space="pixel"``), or to
        its waveforms at the feature extractor's rate. ``indices[j]``: the position of ``variants[j]`` in the
        call, which picks its noise (default ``0..n-1``). Variants that hold the same media objects (the guard's
        clean copies) go through the processor once. For attacks and tests: ``model.generate(**inputs)``.
        """
        import torch

        variants = [list(v) for v in variants]
        indices = list(range(len(variants))) if indices is None else list(indices)
        for media in variants:
            self._check_media(media)
        counts = [len(media) for media in variants]
        inputs, copies = self._processed(prompt, variants, counts, tensor_noise, indices)
        device, dtype = self.device, getattr(self.model, "dtype", None)
        inputs = type(inputs)({k: v.to(device) if torch.is_tensor(v) else v for k, v in inputs.items()})
        if copies:  # one clean sample: sent to the device once, repeated there (a copy: the cached one stays clean)
            inputs = type(inputs)({k: v.repeat(copies, *[1] * (v.dim() - 1)) if torch.is_tensor(v) else v
                                   for k, v in inputs.items()})
        if self.family.modality == "image" and any(counts):
            views = pixel_slices(self.family, inputs, counts)
            if tensor_noise is not None:
                model = self.pixel_noise
                scale = model.scale(tensor_noise.sigma, tensor_noise.pixel_std)
                for j, view in enumerate(views):
                    generator = tensor_noise.generator(indices[j], view.device)
                    if generator is not None and view.numel():
                        noise = model.draw(view.shape, scale, generator, view.device)
                        view.copy_(model.add(view, noise, clamp=self.noise_space == "pixel"))
            if self.family.layout == "tiles":
                _mark_blank_tiles(views)
        for key, value in inputs.items():
            if torch.is_tensor(value) and value.is_floating_point():
                inputs[key] = value.to(dtype=dtype)
        return inputs

    def noise_sites(self, prompt: str, media: Sequence[Media]) -> tuple[NoiseSite, ...]:
        """Where this backend draws the noise of each of ``media``: the size of the views its model consumes
        (images) or the rate and channels its feature extractor reads (audio)."""
        media = list(media)
        self._check_media(media)
        if self.family.modality == "audio":
            rate = int(self._processor.feature_extractor.sampling_rate)
            return tuple(NoiseSite("audio", (int(m.sample_rate or rate), m.n_channels), (rate, 1)) for m in media)
        if not media:
            return ()
        inputs = self._clean_sample(prompt, media)
        return tuple(NoiseSite("image", (m.width, m.height), size, views)
                     for m, (size, views) in zip(media, self._views(inputs, len(media)), strict=True))

    # -- internals -------------------------------------------------------------------------------------------

    def _processed(self, prompt: str, variants: list[list[Media]], counts: list[int],
                   tensor_noise: TensorNoise | None, indices: list[int]) -> tuple[Any, int]:
        """The processor's output (CPU tensors) for ``variants``, and how many times to repeat it: variants that are
        the same media objects give the one clean sample (cached) and their number; others give every sample
        (noisy waveforms for audio with ``tensor_noise``) and 0."""
        first = variants[0] if variants else []
        same = all(len(v) == len(first) and all(a is b for a, b in zip(v, first, strict=True)) for v in variants)
        if self.family.modality == "image" and same and first:
            return self._clean_sample(prompt, first), len(variants)
        texts = [self._prompt(prompt, n) for n in counts]
        with self._text_lock:
            return self._process(texts, variants, counts, tensor_noise, indices), 0

    def _clean_sample(self, prompt: str, media: list[Media]) -> Any:
        """The processor's output for one sample of ``media``, computed once per request (the last one is kept)."""
        with self._text_lock:
            cached = self._last_sample
            if cached is not None and cached[0] == prompt and len(cached[1]) == len(media) and all(
                    a is b for a, b in zip(cached[1], media, strict=True)):
                return cached[2]
            inputs = self._process([self._prompt(prompt, len(media))], [media], [len(media)], None, [0])
            self._last_sample = (prompt, tuple(media), inputs)
            return inputs

    def _views(self, inputs: Any, n_images: int) -> list[tuple[tuple[int, int], int | None]]:
        """Per image of a one-sample ``inputs``: the (width, height) of the views the model sees, and how many."""
        pv = inputs["pixel_values"]
        if self.family.layout == "patches":
            patch = int(getattr(self._processor.image_processor, "patch_size", 14))
            return [((int(w) * patch, int(h) * patch), int(t)) for t, h, w in inputs["image_grid_thw"].tolist()]
        if self.family.layout == "images":
            return [((int(pv.shape[-1]), int(pv.shape[-2])), int(pv.shape[1]) if pv.dim() == 5 else 1)] * n_images
        (tiles,) = pixel_slices(self.family, inputs, [n_images])
        return [((int(pv.shape[-1]), int(pv.shape[-2])), len(tiles) if n_images == 1 else None)] * n_images

    def _process(self, texts: list[str], variants: list[list[Media]], counts: list[int],
                 tensor_noise: TensorNoise | None, indices: list[int]) -> Any:
        """The processor's output (CPU tensors) for one prompt text per variant."""
        if self.family.modality == "image" and any(counts):
            nested = [[m.data for m in media] for media in variants]
            images = nested if self.family.nested_images else [image for sample in nested for image in sample]
            return self._processor(text=texts, images=images, return_tensors="pt", padding=True,
                                   padding_side="left", do_rescale=False)
        if self.family.modality == "audio" and any(counts):
            rate = int(self._processor.feature_extractor.sampling_rate)
            waves = []
            for j, media in enumerate(variants):
                generator = None if tensor_noise is None else tensor_noise.generator(indices[j])
                waves.extend(_noisy(to_mono_at(m, rate), tensor_noise, generator) for m in media)
            return self._processor(text=texts, audio=waves, sampling_rate=rate, return_tensors="pt", padding=True,
                                   padding_side="left")
        if self.family.name == "BLIP-2":
            raise MediaError("BLIP-2 cannot answer without an image; pass exactly one image")
        return self._processor(text=texts, return_tensors="pt", padding=True, padding_side="left")

    def _check_media(self, media: Sequence[Media]) -> None:
        family = self.family
        for item in media:
            if not isinstance(item, Media):
                raise TypeError(f"variants must hold Media, got {type(item).__name__}")
            if item.kind != family.modality:
                raise MediaError(f"{family.name} reads {family.modality}, not {item.kind}: pass only "
                                 f"{family.modality} to this model")
        if family.max_media is not None and len(media) > family.max_media:
            raise MediaError(f"{family.name} takes at most {family.max_media} {family.modality} per prompt, "
                             f"got {len(media)}")

    def _prompt(self, prompt: str, n_media: int) -> str:
        key = (prompt, n_media)
        text = self._prompts.get(key)
        if text is None:
            text = self.family.prompt(self.processor, prompt, n_media)
            if len(self._prompts) > 256:
                self._prompts.clear()
            self._prompts[key] = text
        return text

    def _answer(self, prompt: str, variants: list[list[Media]], indices: list[int],
                tensor_noise: TensorNoise | None) -> list[str | BaseException]:
        """Answers for ``variants[indices]``: one ``generate``; halves retried on out-of-memory."""
        import torch

        try:
            inputs = self.build_inputs(prompt, [variants[i] for i in indices], tensor_noise, indices)
            with self._lock, torch.inference_mode():
                output = self.model.generate(**inputs, **self._generate_kwargs())
            return self._decode(output, inputs["input_ids"])
        except torch.OutOfMemoryError as exc:
            if len(indices) == 1:
                return [exc]
            _free_cuda_cache()
            half = len(indices) // 2
            return (self._answer(prompt, variants, indices[:half], tensor_noise)
                    + self._answer(prompt, variants, indices[half:], tensor_noise))
        except (MediaError, TypeError, ValueError):
            raise
        except Exception as exc:  # a failed chunk fails its candidates; the guard records why
            return [exc] * len(indices)

    def _generate_kwargs(self) -> dict[str, Any]:
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        config = self.model.generation_config
        pad = config.pad_token_id
        if pad is None:
            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "pad_token_id": pad}
        if config.eos_token_id is None and tokenizer.eos_token_id is not None:
            kwargs["eos_token_id"] = tokenizer.eos_token_id
        kwargs.update(self.generation_kwargs)
        kwargs.update(do_sample=False, num_beams=1, temperature=None, top_p=None, top_k=None)
        return kwargs

    def _decode(self, output: Any, input_ids: Any) -> list[str | BaseException]:  # (answers are all str)
        import torch

        length = input_ids.shape[1]
        if output.shape[1] >= length and torch.equal(output[:, :length], input_ids):
            output = output[:, length:]  # decoder-only: the prompt comes back first
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        with self._text_lock:
            texts = tokenizer.batch_decode(output.cpu(), skip_special_tokens=True)
        return [text.strip() for text in texts]


class HFAudioLanguageModel(HFVisionLanguageModel):
    """:class:`HFVisionLanguageModel` for audio-language models (Qwen2-Audio): a clearer name, same behaviour.

    Audio of any sample rate and channel count is mixed to mono and resampled to the feature extractor's rate.
    """

    modalities: ClassVar[tuple[str, ...]] = ("audio",)


def _check_settings(max_new_tokens: Any, max_batch_size: Any, noise_space: Any,
                    generation_kwargs: Mapping[str, Any] | None) -> None:
    for name, value in (("max_new_tokens", max_new_tokens), ("max_batch_size", max_batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if noise_space not in NOISE_SPACES:
        raise ConfigError(f"noise_space must be 'pixel' or 'normalized', got {noise_space!r}")
    kwargs = dict(generation_kwargs or {})
    sampling = {"do_sample", "num_beams", "temperature", "top_p", "top_k"} & set(kwargs)
    if sampling:
        raise ConfigError(f"generation_kwargs may not set {sorted(sampling)}: SmoothGuard decodes greedily so the "
                          "candidates differ only by the noise")
    if kwargs.get("num_return_sequences", 1) != 1 or kwargs.get("num_beam_groups", 1) != 1:
        raise ConfigError("generation_kwargs may not ask for several sequences per input (num_return_sequences, "
                          "num_beam_groups): each candidate is one greedy answer")
    if kwargs:
        from transformers import GenerationConfig

        known = set(GenerationConfig().to_dict()) | {"min_new_tokens", "max_new_tokens", "stop_strings",
                                                     "logits_processor", "stopping_criteria", "streamer"}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise ConfigError(f"generation_kwargs has unknown generate() options {unknown}"
                              f"{did_you_mean(unknown[0], known)}")


def _noisy(wave: np.ndarray, noise: TensorNoise | None, generator: Any) -> np.ndarray:
    """``clip(wave + N(0, audio_sigma^2), -1, 1)`` drawn from the torch ``generator``; ``wave`` when it is None."""
    if noise is None or generator is None:
        return wave
    import torch

    z = torch.randn(wave.shape, generator=generator, dtype=torch.float32).numpy()
    return np.clip(wave + np.float32(noise.audio_sigma) * z, -1.0, 1.0).astype(np.float32)


def _mark_blank_tiles(views: Sequence[Any]) -> None:
    """Give every real tile that normalises to all zeros one value of ``_BLANK_TILE_MARK``, in place.

    Idefics3 and SmolVLM drop all-zero tiles as batch padding, so a uniform image at the processor's mean (0.5 grey)
    would lose its tiles and ``generate`` would fail on the image-token count. The mark moves one channel of one
    pixel by 0.0005 in [0, 1] units: invisible, and far below one 8-bit step.
    """
    for view in views:
        if len(view):
            blank = (view.flatten(1) == 0).all(dim=1)
            if bool(blank.any()):
                view[blank, 0, 0, 0] = _BLANK_TILE_MARK


def _free_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
