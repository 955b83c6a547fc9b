"""The model arguments and loading shared by the ``run``, ``eval`` and ``attack`` subcommands."""

from __future__ import annotations

import argparse
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
                       help="pixel (default): noise on the [0,1] image; normalized: on pixel_values (paper's code)")


def load_model(args: argparse.Namespace) -> Any:
    """The backend named by ``args.model``: ``testbed`` (``testbed:surrogate`` for the second shipped model) or a
    Hugging Face hub id / local directory.

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
    try:
        from smoothguard.backends import HFVisionLanguageModel
    except ImportError as exc:
        raise ConfigError(f"--model {args.model} needs the Hugging Face backend: pip install 'smoothguard[hf]' "
                          f"({exc})") from exc
    options = {"noise_space": args.noise_space} if hasattr(args, "noise_space") else {}
    return HFVisionLanguageModel.from_pretrained(args.model, device=args.device, dtype=args.dtype,
                                                 max_new_tokens=args.max_new_tokens,
                                                 max_batch_size=args.max_batch_size, **options)
