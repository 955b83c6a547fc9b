"""The model arguments and loading shared by the ``run``, ``eval`` and ``attack`` subcommands."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["add_model_arguments", "load_model"]


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``model`` argument group (device, dtype, generation limits, noise space)."""
    model = parser.add_argument_group("model")
    model.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1, mps")
    model.add_argument("--dtype", default="auto", help="auto (default), float32, float16, bfloat16")
    model.add_argument("--max-new-tokens", type=int, default=128, help="answer length cap in tokens (default 128)")
    model.add_argument("--max-batch-size", type=int, default=16, help="variants per generate call (default 16)")
    model.add_argument("--noise-space", choices=("pixel", "normalized"), default="pixel",
                       help="noise on pixel_values, after the processor: pixel (default) clamps it to the image "
                       "range; normalized leaves it unclamped (the paper's code)")


def load_model(args: argparse.Namespace) -> Any:
    """The backend named by ``args.model``: ``testbed`` (``testbed:surrogate`` for the second shipped model,
    ``testbed:audio`` for the audio one), a testbed model directory (one with ``testbed.json``), or a Hugging Face
    hub id / local directory.

    Raises :class:`~smoothguard.errors.ConfigError` with what to do when it cannot be loaded.
    """
    from smoothguard.errors import ConfigError

    if args.model == "testbed" or args.model.startswith("testbed:"):
        from smoothguard.testbed import load_testbed

        options = {"noise_space": args.noise_space} if hasattr(args, "noise_space") else {}
        return load_testbed(args.model.partition(":")[2] or "main",
                            device="cpu" if args.device == "auto" else args.device,
                            max_new_tokens=min(args.max_new_tokens, 32), max_batch_size=args.max_batch_size,
                            **options)
    if (Path(args.model).expanduser() / "testbed.json").is_file():
        from smoothguard.testbed import load_testbed_from

        options = {"noise_space": args.noise_space} if hasattr(args, "noise_space") else {}
        return load_testbed_from(Path(args.model).expanduser(), device="cpu" if args.device == "auto" else args.device,
                                 max_new_tokens=min(args.max_new_tokens, 32), max_batch_size=args.max_batch_size,
                                 **options)
    try:
        from smoothguard.backends import HFVisionLanguageModel
    except ImportError as exc:
        raise ConfigError(f"--model {args.model} needs the Hugging Face backend: pip install 'smoothguard[hf]' "
                          f"({exc})") from exc
    _check_model_path(args.model)
    options = {"noise_space": args.noise_space} if hasattr(args, "noise_space") else {}
    return HFVisionLanguageModel.from_pretrained(args.model, device=args.device, dtype=args.dtype,
                                                 max_new_tokens=args.max_new_tokens,
                                                 max_batch_size=args.max_batch_size, **options)


def _check_model_path(model: str) -> None:
    """A clear :class:`ConfigError` for ``--model`` values that name a local directory that cannot be a model,
    before transformers reads them as hub ids (a wrong repo-id message, or network retries)."""
    from pathlib import Path

    from smoothguard.errors import ConfigError

    if not model.strip():
        raise ConfigError("--model is empty: pass a Hugging Face hub id (Qwen/Qwen2.5-VL-3B-Instruct), a local "
                          "model directory, or testbed")
    path = Path(model).expanduser()
    looks_local = (path.is_absolute() or model.startswith((".", "~")) or model.count("/") > 1 or "\\" in model
                   or (len(path.parts) > 1 and Path(path.parts[0]).is_dir()))  # models/x beside a models/ folder
    if path.exists():
        if not path.is_dir():
            raise ConfigError(f"--model {model}: a file, not a model directory (one with config.json)")
        if not (path / "config.json").is_file():
            raise ConfigError(f"--model {model}: the directory has no config.json, so it is not a saved model; "
                              "pass the directory save_pretrained wrote, or a hub id")
    elif looks_local:
        raise ConfigError(f"--model {model}: no such directory (a hub id has the form org/name)")
