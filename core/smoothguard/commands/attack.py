"""``smoothguard attack``: craft a targeted adversarial image (PGD, EOT-PGD) for a Hugging Face VLM.

    smoothguard attack --model Qwen/Qwen2.5-VL-3B-Instruct --image cat.png \\
        --prompt "Is there a red circle in the image?" --target "Yes." --epsilon 16 --steps 100 --out adv.png
    smoothguard attack --model ./my-llava --image clean.png --prompt "What do you see?" \\
        --targets-csv corpus.csv --eot-samples 8 --eot-sigma 0.1 --steps 500 --out adv.png --json

An audio model (Qwen2-Audio; ``--model testbed:audio``) is attacked on the waveform with ``--audio``:

    smoothguard attack --model testbed:audio --audio clip.wav --prompt "Is there a high tone?" --target "Yes." \
        --audio-epsilon 0.005 --early-stop --out adv.wav

(L-infinity ``--audio-epsilon`` in [-1, 1] units, the SNR reported; EOT with ``--eot-samples`` over the guard's
audio noise ``--audio-eot-sigma``; writes a 16-bit WAV; no state file).

Writes the adversarial PNG (8-bit, at the model's post-resize resolution) and a resumable state file
(``OUT.state.npz``); ``--resume`` continues from it, also with a larger ``--steps``. Prints a summary, or the
result as JSON with ``--json``. Exit status 0 when the attack ran (whether or not it succeeded), 2 for a
usage or configuration error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from smoothguard.commands._model import load_model

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``attack`` arguments to ``parser`` and set ``func``."""
    parser.add_argument("--model", required=True, metavar="ID_OR_PATH",
                        help="hub id or local directory of a supported model (Qwen2.5-VL, Qwen2-VL, LLaVA-1.5, "
                             "LLaVA-NeXT, Idefics3/SmolVLM, BLIP-2), or 'testbed'")
    media = parser.add_mutually_exclusive_group(required=True)
    media.add_argument("--image", metavar="PATH", help="the clean image to start from")
    media.add_argument("--audio", metavar="PATH", help="the clean WAV clip to start from (an audio model)")
    parser.add_argument("--prompt", action="append", required=True, metavar="TEXT",
                        help="the question; repeat it for a universal attack (one image for every prompt)")
    targets = parser.add_mutually_exclusive_group(required=True)
    targets.add_argument("--target", action="append", metavar="TEXT",
                         help="text the answer should contain; repeat for several (any counts, a batch per step)")
    targets.add_argument("--targets-csv", metavar="FILE", help="a CSV of targets, one per row")
    targets.add_argument("--default-targets", action="store_true",
                         help="the built-in list of affirmative jailbreak openings (smoothguard.attacks)")
    parser.add_argument("--targets-column", metavar="NAME", default=None,
                        help="column of --targets-csv to read (default: the first)")
    parser.add_argument("--out", required=True, metavar="PATH",
                        help="where to write the adversarial PNG (a WAV with --audio)")
    pgd = parser.add_argument_group("attack")
    pgd.add_argument("--epsilon", type=_levels, default=16.0,
                     help="L-infinity budget in 8-bit levels, i.e. /255 (default 16; 1 to 255)")
    pgd.add_argument("--unconstrained", action="store_true", help="no budget: only keep pixels in [0, 1]")
    pgd.add_argument("--step-size", type=_levels, default=1.0, help="step per iteration in levels /255 (default 1)")
    pgd.add_argument("--steps", type=int, default=100, help="step budget (default 100)")
    pgd.add_argument("--random-start", action="store_true", help="start from uniform noise within the budget")
    pgd.add_argument("--early-stop", action="store_true",
                     help="stop at the first step whose greedy answer contains the target (the minimal attack)")
    pgd.add_argument("--check-every", type=int, default=1, help="with --early-stop: check every N steps (default 1)")
    pgd.add_argument("--eot-samples", type=int, default=0,
                     help="noisy copies per step, gradient averaged (EOT-PGD, the adaptive attack; default 0)")
    pgd.add_argument("--eot-sigma", type=float, default=0.1,
                     help="their noise std in the guard's normalised units, as --sigma of smoothguard run (0.1)")
    pgd.add_argument("--eot-space", choices=("normalized", "pixel"), default="normalized",
                     help="units of --eot-sigma: normalized (default, x the processor's std) or pixel ([0, 1])")
    pgd.add_argument("--batch-size", type=int, default=8, help="(prompt, target) pairs per step (default 8)")
    pgd.add_argument("--seed", type=int, default=0, help="random start, target sampling and EOT noise (default 0)")
    audio = parser.add_argument_group("audio attack (with --audio)")
    audio.add_argument("--audio-epsilon", type=float, default=0.005,
                       help="L-infinity budget on the waveform in [-1, 1] units (default 0.005)")
    audio.add_argument("--audio-step-size", type=float, default=None,
                       help="step per iteration in [-1, 1] units (default: --audio-epsilon / 10)")
    audio.add_argument("--audio-eot-sigma", type=float, default=0.01,
                       help="EOT noise std on the waveform in [-1, 1] units, as the guard's audio_sigma (0.01)")
    state = parser.add_argument_group("checkpoints")
    state.add_argument("--state", metavar="PATH", default=None, help="state file (default: OUT.state.npz)")
    state.add_argument("--checkpoint-every", type=int, default=10,
                       help="save the state every N steps and at the end (default 10; 0: never)")
    state.add_argument("--resume", action="store_true", help="continue from the state file when it exists")
    model = parser.add_argument_group("model")
    model.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1, mps")
    model.add_argument("--dtype", default="auto", help="auto (default), float32, float16, bfloat16")
    model.add_argument("--max-new-tokens", type=int, default=64,
                       help="answer length for the success check, in tokens (default 64)")
    model.add_argument("--max-batch-size", type=int, default=8,
                       help="sequences per forward pass (pairs x EOT copies are chunked; default 8)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the model, run the attack, write the PNG and state, print the result."""
    from smoothguard.errors import SmoothGuardError

    try:
        targets = _targets(args)
        backend = load_model(args)
        if args.audio is not None:
            return _attack_audio(args, backend, targets)
        return _attack(args, backend, targets)
    except (SmoothGuardError, OSError) as exc:
        print(f"smoothguard attack: {exc}", file=sys.stderr)
        return 2


def _attack(args: argparse.Namespace, backend: Any, targets: list[str]) -> int:
    from tqdm.auto import tqdm

    from smoothguard.attacks import AttackState, PGDAttack, StepInfo
    from smoothguard.errors import ConfigError

    if args.steps < 0 or args.checkpoint_every < 0:
        raise ConfigError("--steps and --checkpoint-every must be >= 0")
    out = Path(args.out)
    state_path = Path(args.state) if args.state else out.with_name(out.name + ".state.npz")
    resume = AttackState.load(state_path) if args.resume and state_path.exists() else None
    bar = tqdm(total=args.steps, initial=resume.step if resume else 0, desc="attack", unit="step",
               disable=args.quiet, file=sys.stderr, dynamic_ncols=True)
    last: list[StepInfo] = []

    def progress(info: StepInfo) -> None:
        last[:] = [info]
        bar.update(info.step - bar.n)
        postfix = {"loss": f"{info.loss:.3f}", "linf": f"{info.linf * 255:.1f}/255"}
        if info.success is not None:
            postfix["success"] = "yes" if info.success else "no"
        bar.set_postfix(postfix, refresh=False)
        if args.checkpoint_every and info.step % args.checkpoint_every == 0:
            info.state().save(state_path)

    attack = PGDAttack(
        backend, epsilon=None if args.unconstrained else args.epsilon / 255.0, step_size=args.step_size / 255.0,
        steps=args.steps, random_start=args.random_start, early_stop=args.early_stop, check_every=args.check_every,
        eot_samples=args.eot_samples, eot_sigma=args.eot_sigma, eot_space=args.eot_space,
        universal=len(args.prompt) > 1, batch_size=args.batch_size, max_batch_size=args.max_batch_size,
        seed=args.seed, progress=progress)
    try:
        result = attack.run(args.image, args.prompt, targets, resume=resume)
    finally:
        bar.close()
    if args.checkpoint_every and last:
        last[0].state().save(state_path)
    result.save(out)
    if args.json:
        print(json.dumps({**result.to_dict(), "out": str(out), "state": str(state_path)}, indent=2,
                         ensure_ascii=False))
    else:
        print(_summary(result, out))
    return 0


def _attack_audio(args: argparse.Namespace, backend: Any, targets: list[str]) -> int:
    from smoothguard.attacks import AudioPGDAttack
    from smoothguard.errors import ConfigError

    if args.resume or len(args.prompt) > 1:
        raise ConfigError("the audio attack takes one --prompt and has no --resume")
    if args.steps < 0:
        raise ConfigError("--steps must be >= 0")
    attack = AudioPGDAttack(backend, epsilon=args.audio_epsilon, step_size=args.audio_step_size, steps=args.steps,
                            early_stop=args.early_stop, check_every=args.check_every,
                            eot_samples=args.eot_samples, eot_sigma=args.audio_eot_sigma,
                            random_start=args.random_start, max_batch_size=args.max_batch_size, seed=args.seed)
    result = attack.run(args.audio, args.prompt[0], targets)
    out = result.save(args.out)
    if args.json:
        print(json.dumps({**result.to_dict(), "out": str(out)}, indent=2, ensure_ascii=False))
    else:
        status = "SUCCESS" if result.success else "not reached"
        print(f"{status}: {result.answer!r} after {result.steps} steps (max |delta| {result.linf:.4g}, "
              f"SNR {result.snr_db:.1f} dB)\nwrote {out} ({result.clip.n_frames} samples at "
              f"{result.clip.sample_rate} Hz)")
    return 0


def _targets(args: argparse.Namespace) -> list[str]:
    from smoothguard.attacks.targets import DEFAULT_TARGETS, load_targets

    if args.targets_csv:
        return load_targets(args.targets_csv, args.targets_column)
    if args.default_targets:
        return list(DEFAULT_TARGETS)
    return list(args.target)


def _summary(result: Any, out: Path) -> str:
    status = "SUCCESS" if result.success else "not reached"
    lines = [f"{status}: {sum(result.hit)}/{len(result.hit)} prompts answered with a target after {result.steps} "
             f"steps (loss {result.loss_curve[0] if result.loss_curve else result.final_loss:.3f} -> "
             f"{result.final_loss:.3f}, max |delta| {result.linf * 255:.0f}/255)"]
    for prompt, answer in zip(result.prompts, result.answers, strict=True):
        lines.append(f"  {prompt!r} -> {answer!r}")
    lines.append(f"wrote {out} ({result.image.width}x{result.image.height})")
    return "\n".join(lines)


def _levels(text: str) -> float:
    """A budget in 8-bit levels (16 means 16/255): a number in [1, 255]; a value in library units is refused."""
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of 8-bit levels such as 16, got {text!r}") from None
    if 0 < value < 1:
        raise argparse.ArgumentTypeError(
            f"{text} is in [0, 1] pixel units, but this option counts 8-bit levels (16 means 16/255): "
            f"did you mean {value * 255:g}?")
    if not 1 <= value <= 255:
        raise argparse.ArgumentTypeError(f"{text} is outside 1-255 levels (255 is the whole [0, 1] range; "
                                         "use --unconstrained for no budget)")
    return value
