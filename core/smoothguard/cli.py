"""The ``smoothguard`` command. Each subcommand is listed in ``_SUBCOMMANDS`` below as it lands."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from smoothguard._version import __version__

__all__ = ["build_parser", "main"]


#: name -> (help, module whose ``configure(parser)`` adds the subcommand's arguments and sets ``func``).
#: The modules import their heavy dependencies only when the subcommand runs.
_SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("attack and defend a model on generated shape images, offline (default: the shipped testbed VLM)",
             "smoothguard.commands.demo"),
    "run": ("answer one prompt about images or audio with a Hugging Face model, guarded", "smoothguard.commands.run"),
    "eval": ("benchmark a model undefended and guarded over a sigma sweep (POPE, MM-SafetyBench, LLaVA-Bench)",
             "smoothguard.commands.eval"),
    "serve": ("run an OpenAI-compatible guard proxy in front of a serving engine (vLLM, TGI, Ollama, ...)",
              "smoothguard.serve.cli"),
    "attack": ("craft a targeted adversarial image (PGD, EOT-PGD) for a Hugging Face VLM",
               "smoothguard.commands.attack"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smoothguard",
        description="Defend multimodal LLM calls against adversarial images and audio (SmoothGuard, "
        "arXiv 2510.26830): noisy copies, clustering of the answers, a sentiment-aware vote.",
    )
    parser.add_argument("--version", action="version", version=f"smoothguard {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, module) in _SUBCOMMANDS.items():
        importlib.import_module(module).configure(commands.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
