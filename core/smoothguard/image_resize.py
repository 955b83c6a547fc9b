"""``image_resize``: the size a remote model will look at an image, so the noise is drawn there.

A provider resizes an image before its model sees it, and a resize averages away noise drawn before it (a
4032x3024 photo brought to 1024x768 keeps about a quarter of it). So the guard brings every image to the
provider's documented size first, draws the noise there, and sends every copy, the original included, at that
size, lossless; the provider then has nothing left to resize.

Rules (each maps a source ``(width, height)`` to a target; none of them upscales, except Qwen's rounding to
multiples of 28, which the model applies itself):

* ``"openai"``: OpenAI's high-detail rule: fit within 2048 x 2048, then the shortest side at most 768.
* ``"anthropic"``: the long edge at most 1568 px and at most 1.15 MP (Anthropic's ~1,600 image tokens).
* ``"qwen2-vl"``: Qwen2-VL / Qwen2.5-VL ``smart_resize``: sides multiples of 28, between 3,136 and 12,845,056
  pixels (the checkpoints' settings), as vLLM and Ollama serve them.
* an int ``n``: the longest side at most ``n``; a pair ``(w, h)``: fit within ``w x h``.
* ``"none"``: the source size (the noise a resizing model sees is weaker; the result's notes say so).
* ``"auto"``: chosen by :func:`auto_rule` from the wrapped model (fan-out adapters, the proxy); in-process
  backends add the noise after their own processor instead.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from typing import Any

from smoothguard.errors import ConfigError

__all__ = ["NAMED_RULES", "ImageResize", "auto_rule", "check_rule", "fitter", "model_name_of", "parse_rule", "resolve",
           "rule_for_model", "target_size"]

ImageResize = str | int | tuple[int, int]
NAMED_RULES = ("auto", "openai", "anthropic", "qwen2-vl", "none")

_OPENAI_FIT, _OPENAI_SHORT = 2048, 768
_ANTHROPIC_LONG, _ANTHROPIC_PIXELS = 1568, 1_150_000
_QWEN_FACTOR, _QWEN_MIN_PIXELS, _QWEN_MAX_PIXELS = 28, 3136, 12845056
_QWEN_NAMES = re.compile(r"qwen2(\.?5)?[-_ ]?vl", re.IGNORECASE)


def check_rule(value: Any) -> ImageResize:
    """``value`` as a valid rule (a list pair becomes a tuple); :class:`ConfigError` saying what is allowed."""
    if isinstance(value, str) and value in NAMED_RULES:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return int(value)
    if (isinstance(value, (tuple, list)) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)):
        return (int(value[0]), int(value[1]))
    raise ConfigError(f"image_resize must be one of {', '.join(map(repr, NAMED_RULES))}, a longest side in pixels "
                      f"(an int >= 1) or a (width, height) bound; got {value!r}")


def parse_rule(text: str) -> ImageResize:
    """A rule from command-line text: a name, ``"768"`` (longest side) or ``"1024x768"`` (a bound)."""
    text = text.strip().lower()
    if text.isdigit():
        return check_rule(int(text))
    match = re.fullmatch(r"(\d+)\s*[x,]\s*(\d+)", text)
    return check_rule((int(match.group(1)), int(match.group(2))) if match else text)


def auto_rule(provider: str | None = None, model_name: str | None = None) -> str:
    """The rule ``"auto"`` means for a wrapped model.

    The model name decides first (a Qwen2-VL / Qwen2.5-VL model is served at its full resolution, whoever serves
    it; a ``claude`` model is Anthropic's), then the client's provider (``"anthropic"`` or ``"openai"``, from the
    adapter's client class), and otherwise OpenAI's rule.
    """
    name = (model_name or "").strip()
    if _QWEN_NAMES.search(name):
        return "qwen2-vl"
    if name.lower().split("/")[-1].startswith("claude") or provider == "anthropic":
        return "anthropic"
    return "openai"


def rule_for_model(model: Any) -> str:
    """:func:`auto_rule` for a framework's client object: the provider from its class names (``ChatOpenAI``,
    ``AzureChatOpenAI``, LlamaIndex's ``OpenAI`` and ``OpenAILike`` -> ``"openai"``; ``ChatAnthropic``,
    ``Anthropic`` -> ``"anthropic"``), the model name from ``model_name``, ``model`` or ``model_id``."""
    classes = " ".join(cls.__name__.lower() for cls in type(model).__mro__)
    provider = "anthropic" if "anthropic" in classes else "openai" if "openai" in classes else None
    return auto_rule(provider, model_name_of(model))


def model_name_of(model: Any) -> str | None:
    """A framework client's model name: its ``model_name``, ``model`` or ``model_id`` string, else None."""
    return next((value for attr in ("model_name", "model", "model_id")
                 if isinstance(value := getattr(model, attr, None), str)), None)


def resolve(rule: ImageResize, auto: str | None) -> ImageResize:
    """``rule`` with ``"auto"`` replaced by ``auto`` (the wrapped model's rule), or by ``"none"`` without one."""
    return (auto or "none") if rule == "auto" else rule


def fitter(rule: ImageResize, auto: str | None = None) -> Callable[[int, int], tuple[int, int]] | None:
    """The ``fit`` for :meth:`Media.image <smoothguard.Media.image>` under ``rule`` (resolved with ``auto``), so an
    image is decoded straight to the size its noise will be drawn at; None when images keep their size. Every rule
    is idempotent (an image at its target keeps it), so the guard's own resize then leaves it alone."""
    rule = resolve(rule, auto)
    return None if rule == "none" else functools.partial(target_size, rule)


def target_size(rule: ImageResize, width: int, height: int) -> tuple[int, int]:
    """The ``(width, height)`` an image of ``width x height`` pixels has under ``rule`` (not ``"auto"``)."""
    if rule == "none":
        return width, height
    if rule == "openai":  # fitting in 2048 and then the short side in 768 is one scale: the smaller of the two
        return _scaled(width, height, min(1.0, _OPENAI_FIT / max(width, height), _OPENAI_SHORT / min(width, height)))
    if rule == "anthropic":
        scale = min(1.0, _ANTHROPIC_LONG / max(width, height), math.sqrt(_ANTHROPIC_PIXELS / (width * height)))
        return _scaled(width, height, scale)
    if rule == "qwen2-vl":
        return _smart_resize(width, height)
    if isinstance(rule, int):
        return _fit(width, height, rule, rule)
    if isinstance(rule, tuple):
        return _fit(width, height, *rule)
    raise ConfigError(f"image_resize {rule!r} has no size of its own: resolve 'auto' with auto_rule() first")


def _fit(width: int, height: int, max_w: int, max_h: int) -> tuple[int, int]:
    return _scaled(width, height, min(1.0, max_w / width, max_h / height))


def _scaled(width: int, height: int, scale: float) -> tuple[int, int]:
    if scale >= 1.0:
        return width, height
    return max(1, math.floor(width * scale + 1e-9)), max(1, math.floor(height * scale + 1e-9))


def _smart_resize(width: int, height: int) -> tuple[int, int]:
    """Qwen2-VL's ``smart_resize`` with the checkpoints' pixel range (transformers' rounding, width-height order)."""
    f = _QWEN_FACTOR
    h_bar, w_bar = round(height / f) * f, round(width / f) * f  # a side under 14 px rounds to 0: min_pixels lifts it
    if h_bar * w_bar > _QWEN_MAX_PIXELS:
        beta = math.sqrt(height * width / _QWEN_MAX_PIXELS)
        h_bar, w_bar = max(f, math.floor(height / beta / f) * f), max(f, math.floor(width / beta / f) * f)
    elif h_bar * w_bar < _QWEN_MIN_PIXELS:
        beta = math.sqrt(_QWEN_MIN_PIXELS / (height * width))
        h_bar, w_bar = math.ceil(height * beta / f) * f, math.ceil(width * beta / f) * f
    return w_bar, h_bar
