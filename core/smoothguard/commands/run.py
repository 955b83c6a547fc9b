"""``smoothguard run``: one guarded request to a Hugging Face model, from the command line.

    smoothguard run --model Qwen/Qwen2.5-VL-3B-Instruct --prompt "What is in the image?" --image cat.png
    smoothguard run --model ./my-qwen2-audio --prompt "What do you hear?" --audio clip.wav --json

Prints the answer, the agreement and the cluster sizes; ``--json`` prints ``result.to_dict()``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from smoothguard.commands._model import add_model_arguments, load_model

__all__ = ["configure", "run"]

def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``run`` arguments to ``parser`` and set ``func``."""
    parser.add_argument("--model", required=True, metavar="ID_OR_PATH",
                        help="hub id or local directory of a supported model (Qwen2.5-VL, Qwen2-VL, LLaVA-1.5, "
                             "LLaVA-NeXT, Idefics3/SmolVLM, BLIP-2, Qwen2-Audio), or 'testbed'")
    parser.add_argument("--prompt", required=True, metavar="TEXT", help="the question or instruction")
    parser.add_argument("--image", action="append", default=[], metavar="PATH",
                        help="an image file (repeat for several images)")
    parser.add_argument("--audio", action="append", default=[], metavar="PATH", help="a WAV file")
    guard = parser.add_argument_group("guard")
    guard.add_argument("--sigma", type=float, default=None,
                       help="image noise std in the model's normalised units (default 0.1)")
    guard.add_argument("--audio-sigma", type=float, default=None, help="waveform noise std (default 0.01)")
    guard.add_argument("--n-samples", type=int, default=None, help="candidates, the original included (default 11)")
    guard.add_argument("--seed", type=int, default=None, help="make the noise and the answer reproducible")
    add_model_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the full result as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the model, guard the request, print the result. Exit status 0, or 2 for a usage/config error and
    1 when too few candidates were answered."""
    from smoothguard import SmoothGuard
    from smoothguard.errors import GenerationError, SmoothGuardError

    try:
        settings = {k: v for k, v in (("sigma", args.sigma), ("audio_sigma", args.audio_sigma),
                                      ("n_samples", args.n_samples), ("seed", args.seed)) if v is not None}
        guard = SmoothGuard(**settings)
        if not args.image and not args.audio:
            raise _usage("give at least one --image or --audio: without media there is nothing to guard")
        backend = load_model(args)
        result = guard.ask(backend, args.prompt, images=args.image, audio=args.audio)
    except GenerationError as exc:
        print(f"smoothguard run: {exc}", file=sys.stderr)
        return 1
    except (SmoothGuardError, OSError) as exc:
        print(f"smoothguard run: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    else:
        print(_summary(result))
    return 0


def _usage(message: str) -> Exception:
    from smoothguard.errors import ConfigError

    return ConfigError(message)


def _summary(result: Any) -> str:
    answered = sum(1 for s in result.samples if s.ok)
    sizes = sorted((c.size for c in result.clusters), reverse=True)
    lines = [result.answer, "",
             f"agreement: {result.agreement:.0%} ({answered} of {result.n_used} candidates answered)"
             + ("  FLAGGED" if result.flagged else ""),
             f"clusters: {', '.join(map(str, sizes)) or 'none'}"]
    if result.passthrough:
        lines.append("note: no image or audio, answered unguarded")
    return "\n".join(lines)
