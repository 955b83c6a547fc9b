"""The shipped testbed weights as a SmoothGuard backend: :func:`load_testbed`, :func:`weights_available`.

The trained models live in ``smoothguard/testbed/weights/<name>/`` (``main``, ``surrogate``, ``audio``), each a
:func:`~smoothguard.testbed.model.save_testbed` directory (fp16 safetensors, tokenizer, processor config,
``testbed.json``, ``metrics.json``). ``SMOOTHGUARD_TESTBED_WEIGHTS=DIR`` makes ``DIR/<name>/`` be read instead
(weights kept outside the package; tests). Without the weights, :func:`load_testbed` raises a
:class:`~smoothguard.errors.ConfigError` that says how to train them.

This module imports only the standard library; torch and transformers load inside :func:`load_testbed_from`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from smoothguard.errors import ConfigError

__all__ = [
    "NAMES",
    "WEIGHTS_DIR",
    "WEIGHTS_ENV",
    "load_testbed",
    "load_testbed_from",
    "missing_weights_message",
    "weights_available",
    "weights_dir",
]

#: The shipped models: "main" (the one to defend), "surrogate" (for transfer attacks) and "audio" (the audio
#: testbed, :mod:`smoothguard.testbed.audio_model`).
NAMES: tuple[str, ...] = ("main", "surrogate", "audio")
#: Where the package keeps the weights: ``WEIGHTS_DIR / name``.
WEIGHTS_DIR: Path = Path(__file__).resolve().parent / "weights"
#: Environment variable naming a directory to read ``<name>/`` from instead of :data:`WEIGHTS_DIR`.
WEIGHTS_ENV = "SMOOTHGUARD_TESTBED_WEIGHTS"
#: Files a usable weights directory must hold.
_REQUIRED = ("testbed.json", "config.json", "model.safetensors", "tokenizer.json")
#: The CPU training command's flags and measured duration per model (2-core machine; see the testbed README).
_CPU_FLAGS = {"main": ("--threads 2 --batch-size 32 --time-limit 7200",
                       "2-hour sessions; the shipped main needed about 2.5 M examples, some 11 hours of 2 cores"),
              "surrogate": ("--threads 1 --batch-size 32 --examples 400000", "about 45 minutes of one core")}


def _check_name(name: str) -> str:
    if name not in NAMES:
        raise ConfigError(f"unknown testbed model {name!r}; the shipped ones are {', '.join(map(repr, NAMES))}")
    return name


def weights_dir(name: str = "main") -> Path:
    """The directory ``load_testbed(name)`` reads (it may not exist): ``$SMOOTHGUARD_TESTBED_WEIGHTS/<name>``
    when that variable is set, else the package's ``testbed/weights/<name>``."""
    _check_name(name)
    root = os.environ.get(WEIGHTS_ENV)
    return (Path(root).expanduser() if root else WEIGHTS_DIR) / name


def _complete(directory: Path) -> bool:
    return all((directory / f).is_file() for f in _REQUIRED)


def weights_available(name: str = "main") -> bool:
    """Whether the trained weights of testbed model ``name`` ("main" or "surrogate") are installed."""
    return _complete(weights_dir(name))


def missing_weights_message(name: str = "main") -> str:
    """What :func:`load_testbed` says when the weights of ``name`` are missing: the fact and how to train them."""
    where = weights_dir(name)
    if name == "audio":
        return (
            f"the SmoothGuard audio testbed model has not been trained in this installation: {where} holds no "
            f"weights (it needs {', '.join(_REQUIRED)}). Train it on a CPU from the repository root (about 45 "
            "minutes of one core): `PYTHONPATH=core python training/audio_train.py --out runs/audio` (resume a "
            f"stopped run with --resume), then copy runs/audio/model/ to {where}/. See training/audio.md. "
            "Meanwhile, use a real model (`HFAudioLanguageModel.from_pretrained(...)`)."
        )
    return (
        f"the SmoothGuard testbed model {name!r} has not been trained in this installation: {where} holds no "
        f"weights (it needs {', '.join(_REQUIRED)}). Train it on a GPU with one command, from the repository root: "
        f"`bash training/train_gpu.sh` (minutes on an H100; results in ./testbed-out; the README "
        f"says how the shipped main was made), then "
        f"`tar -xf testbed-out/{name}.tar -C core/smoothguard/testbed/weights/`. "
        f"On a CPU: `PYTHONPATH=core python training/train.py --config {name} --device cpu "
        f"{_CPU_FLAGS[name][0]} --out runs/{name}` ({_CPU_FLAGS[name][1]}; go on in a later session with "
        f"--init-from runs/{name}/model), then copy runs/{name}/model/ to {where}/. "
        "See smoothguard/testbed/README.md. Meanwhile, use a real model (`--model HUB_ID_OR_PATH` on the command "
        "line, `HFVisionLanguageModel.from_pretrained(...)` in Python)."
    )


def load_testbed(
    name: str = "main",
    *,
    device: Any = "cpu",
    max_new_tokens: int = 32,
    max_batch_size: int = 16,
    noise_space: str = "pixel",
    path: str | os.PathLike[str] | None = None,
) -> Any:
    """The shipped testbed model ``name`` ("main" or "surrogate") as an ``HFVisionLanguageModel``, or "audio" as an
    ``HFAudioLanguageModel``, offline.

    device: where the model runs (default the CPU; fp32). max_new_tokens: answer length cap in tokens (the
    task's longest answer is 16). max_batch_size: variants per ``generate`` call. noise_space: as
    ``HFVisionLanguageModel``. path: read this :func:`~smoothguard.testbed.model.save_testbed` directory
    instead of the shipped weights (internal: tests and freshly trained runs).
    Raises :class:`ConfigError` saying how to train the model when its weights are not installed.
    """
    _check_name(name)
    directory = Path(path) if path is not None else weights_dir(name)
    if not _complete(directory):
        if path is not None:
            raise ConfigError(f"{directory} is not a testbed model directory: it needs {', '.join(_REQUIRED)}")
        raise ConfigError(missing_weights_message(name))
    return load_testbed_from(directory, device=device, max_new_tokens=max_new_tokens, max_batch_size=max_batch_size,
                             noise_space=noise_space)


def load_testbed_from(
    path: str | os.PathLike[str],
    *,
    device: Any = "cpu",
    max_new_tokens: int = 32,
    max_batch_size: int = 16,
    noise_space: str = "pixel",
) -> Any:
    """A testbed model directory (written by :func:`~smoothguard.testbed.model.save_testbed`, e.g. a training
    run's ``model/``) as an ``HFVisionLanguageModel``; arguments as :func:`load_testbed`. Offline, fp32."""
    directory = Path(path)
    if not _complete(directory):
        raise ConfigError(f"{directory} is not a testbed model directory: it needs {', '.join(_REQUIRED)}")
    try:
        from transformers.utils import logging as hf_logging

        from smoothguard.backends.device import resolve_device
        from smoothguard.backends.hf import HFVisionLanguageModel
        from smoothguard.testbed.model import load_testbed_dir
        if _is_audio(directory):
            from smoothguard.backends.hf import HFAudioLanguageModel as backend_class
            from smoothguard.testbed.audio_model import load_audio_testbed_dir as load_testbed_dir
        else:
            backend_class = HFVisionLanguageModel
    except ImportError as exc:
        raise ConfigError(f"the testbed needs torch and transformers: pip install 'smoothguard[hf]' ({exc})") from exc
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Loading weights" bar for a 7 MB model
    try:
        model, processor, _ = load_testbed_dir(directory, device=resolve_device(device))
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return backend_class(model, processor, max_new_tokens=max_new_tokens, max_batch_size=max_batch_size,
                         noise_space=noise_space)


def _is_audio(directory: Path) -> bool:
    """Whether a testbed directory holds the audio model (its ``testbed.json`` says ``"kind": "audio"``)."""
    import json

    try:
        return json.loads((directory / "testbed.json").read_text()).get("kind") == "audio"
    except (OSError, ValueError):
        return False
