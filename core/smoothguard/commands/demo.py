"""``smoothguard demo``: a model attacked and defended, offline, on a few generated shape images.

    smoothguard demo                                   # the shipped testbed model, CPU, well under a minute
    smoothguard demo --n 4 --seed 3 --save-dir demo-out
    smoothguard demo --attack noise                    # strong random noise instead of the PGD attack
    smoothguard demo --model Qwen/Qwen2.5-VL-3B-Instruct --device cuda
    smoothguard demo --json
    smoothguard demo --audio                           # the audio testbed: beep clips, a waveform PGD attack

For each of ``--n`` images drawn by the testbed's generator (:mod:`smoothguard.testbed.data`) and a question
about it, the table shows the expected answer and the model's answer

1. on the clean image (undefended);
2. on the perturbed image (undefended): with ``--attack pgd`` a minimal targeted PGD attack (L-infinity
   ``--epsilon`` 16/255, step 1/255, stopped at the first step whose answer contains a wrong target answer,
   at most ``--attack-steps``); with ``--attack noise`` Gaussian noise of std ``--noise-sigma`` (the guard's
   normalised units, clipped to [0, 1]). Default ``auto``: PGD on the testbed (the shipped weights or a
   testbed directory), noise on any other model (PGD on a multi-billion-parameter model is slow on a CPU;
   pass ``--attack`` to use it anyway);
3. through SmoothGuard on the perturbed image, with the candidates' agreement and the cluster sizes.

With ``--audio`` the same story is told on the audio testbed (``testbed:audio``, or any Qwen2-Audio model):
clips drawn by :mod:`smoothguard.testbed.audio_data` (kinds count, pitch, yesno), a minimal targeted PGD attack on
the waveform (:class:`~smoothguard.attacks.AudioPGDAttack`, L-infinity ``--audio-epsilon`` in [-1, 1] units, its
SNR shown) or ``--attack noise`` (Gaussian noise of std ``--audio-noise-sigma`` on the waveform), and the guard's
audio noise ``--audio-sigma``; ``--save-dir`` writes WAV files and a figure of spectrograms.

``--save-dir DIR`` writes each example's clean, perturbed and one noisy guard copy as PNG, ``demo.png`` (one
figure of all of them with their answers) and ``results.json``. ``--json`` prints the results as JSON.
Exit status 0; 2 for a usage or configuration error (the testbed's weights missing included); 1 when the
model answered too few candidates.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smoothguard.testbed.audio_data import AUDIO_KINDS
from smoothguard.testbed.data import KINDS

if TYPE_CHECKING:
    from smoothguard import Media, SmoothGuard

__all__ = ["configure", "run"]

_TESTBED = "testbed"
#: the audio demo's guard noise (``--audio-sigma``), waveform std in [-1, 1] units (docs/efficacy.md, audio)
AUDIO_DEMO_SIGMA = 0.01


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``demo`` arguments to ``parser`` and set ``func``."""
    parser.add_argument("--model", default=_TESTBED, metavar="ID_OR_PATH",
                        help="'testbed' (default: the shipped tiny VLM, offline; 'testbed:surrogate' for the second "
                             "one), a testbed model directory, or the "
                             "hub id / local directory of a supported model (Qwen2.5-VL, LLaVA-1.5, SmolVLM, ...)")
    parser.add_argument("--n", type=int, default=3, help="images and questions (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the images, the attack and the guard (default 0)")
    parser.add_argument("--kind", action="append", choices=sorted(set(KINDS) | set(AUDIO_KINDS)), default=None,
                        help="question kinds to cycle through (repeat; default all: yesno, colour, count, describe; "
                             "with --audio: count, pitch, yesno)")
    parser.add_argument("--audio", action="store_true",
                        help="the audio demo: beep clips and an audio model (default model: testbed:audio)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="image side in pixels (default: 64 for the testbed, 336 for other models)")
    attack = parser.add_argument_group("perturbation")
    attack.add_argument("--attack", nargs="?", const="pgd", default="auto", choices=("auto", "pgd", "noise"),
                        help="pgd (bare --attack): minimal targeted PGD; noise: strong random noise; auto (default): "
                             "pgd on the testbed, noise on other models")
    attack.add_argument("--epsilon", type=float, default=16.0, help="PGD L-infinity budget in levels /255 (default 16)")
    attack.add_argument("--attack-steps", type=int, default=100,
                        help="PGD step budget; it stops at the first success (default 100)")
    attack.add_argument("--noise-sigma", type=float, default=0.5,
                        help="std of the noise perturbation in normalised units, like --sigma (default 0.5)")
    attack.add_argument("--audio-epsilon", type=float, default=0.005,
                        help="with --audio: PGD L-infinity budget on the waveform, [-1, 1] units (default 0.005)")
    attack.add_argument("--audio-noise-sigma", type=float, default=0.05,
                        help="with --audio --attack noise: noise std on the waveform, [-1, 1] units (default 0.05)")
    guard = parser.add_argument_group("guard")
    guard.add_argument("--sigma", type=float, default=0.2,
                       help="the guard's noise std in normalised units (default 0.2, the top of the paper's 0.1-0.2 "
                            "band, where the testbed stays accurate; the library's default is 0.1)")
    guard.add_argument("--audio-sigma", type=float, default=AUDIO_DEMO_SIGMA,
                       help=f"with --audio: the guard's noise std on the waveform, [-1, 1] units (default "
                            f"{AUDIO_DEMO_SIGMA:g})")
    guard.add_argument("--n-samples", type=int, default=11, help="candidates, the original included (default 11)")
    model = parser.add_argument_group("model")
    model.add_argument("--device", default="auto",
                       help="auto (default; the CPU for the testbed), cpu, cuda, cuda:1, mps")
    model.add_argument("--dtype", default="auto", help="auto (default), float32, float16, bfloat16 (not the testbed)")
    model.add_argument("--max-new-tokens", type=int, default=None,
                       help="answer length cap in tokens (default 32 for the testbed, 64 otherwise)")
    model.add_argument("--max-batch-size", type=int, default=16, help="variants per generate call (default 16)")
    parser.add_argument("--save-dir", metavar="DIR", default=None,
                        help="write the images, one PNG figure (demo.png) and results.json here")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of the table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the model, run the demo, print the table (or JSON), write ``--save-dir``. Exit status 0, 1 or 2."""
    from smoothguard.errors import GenerationError, SmoothGuardError

    try:
        _check(args)
        backend, label, is_testbed = _load(args)
        with _threads_for(backend, is_testbed):
            if args.audio:
                report = demo_audio(backend, label=label, is_testbed=is_testbed, n=args.n, seed=args.seed,
                                    kinds=args.kind, attack=args.attack, epsilon=args.audio_epsilon,
                                    attack_steps=args.attack_steps, noise_sigma=args.audio_noise_sigma,
                                    sigma=args.audio_sigma, n_samples=args.n_samples, save_dir=args.save_dir)
            else:
                report = demo(backend, label=label, is_testbed=is_testbed, n=args.n, seed=args.seed, kinds=args.kind,
                          image_size=args.image_size, attack=args.attack, epsilon=args.epsilon,
                          attack_steps=args.attack_steps, noise_sigma=args.noise_sigma, sigma=args.sigma,
                          n_samples=args.n_samples, save_dir=args.save_dir)
    except GenerationError as exc:
        print(f"smoothguard demo: {exc}", file=sys.stderr)
        return 1
    except (SmoothGuardError, OSError) as exc:
        print(f"smoothguard demo: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print(render(report))
    return 0


# -- loading ---------------------------------------------------------------------------------------------------


def _check(args: argparse.Namespace) -> None:
    from smoothguard.errors import ConfigError

    if args.n < 1:
        raise ConfigError(f"--n must be at least 1, got {args.n}")
    allowed = AUDIO_KINDS if args.audio else KINDS
    wrong = [k for k in args.kind or () if k not in allowed]
    if wrong:
        raise ConfigError(f"--kind {wrong[0]} is not a question kind of the {'audio ' if args.audio else ''}demo; "
                          f"choose from {', '.join(allowed)}")
    if args.audio and not (0 < args.audio_epsilon <= 1 and args.audio_noise_sigma > 0 and args.audio_sigma >= 0):
        raise ConfigError("--audio-epsilon must be in (0, 1], --audio-noise-sigma positive and --audio-sigma >= 0 "
                          "([-1, 1] waveform units)")
    if args.image_size is not None and args.image_size < 32:
        raise ConfigError(f"--image-size must be at least 32 pixels, got {args.image_size}")
    if not 0 < args.epsilon <= 255:
        raise ConfigError(f"--epsilon is in levels /255 and must be in (0, 255], got {args.epsilon}")
    if args.attack_steps < 1:
        raise ConfigError(f"--attack-steps must be at least 1, got {args.attack_steps}")
    if not args.noise_sigma > 0:
        raise ConfigError(f"--noise-sigma must be positive, got {args.noise_sigma}")
    if args.save_dir is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError as exc:
            raise ConfigError(f"--save-dir draws a figure with matplotlib: pip install 'smoothguard[eval]' ({exc})") \
                from exc


def _load(args: argparse.Namespace) -> tuple[Any, str, bool]:
    """(backend, a label for the output, whether it is a testbed model), through the loading the other
    subcommands share (:func:`smoothguard.commands._model.load_model`)."""
    from smoothguard.commands._model import load_model

    model = args.model
    if args.audio and model == _TESTBED:
        model = _TESTBED + ":audio"
    is_named = model == _TESTBED or model.startswith(_TESTBED + ":")
    is_testbed = is_named or (Path(model) / "testbed.json").is_file()
    options = argparse.Namespace(model=model, device=args.device, dtype=args.dtype,
                                 max_new_tokens=args.max_new_tokens or (32 if is_testbed else 64),
                                 max_batch_size=args.max_batch_size, noise_space="pixel")
    backend = load_model(options)
    if args.audio and getattr(getattr(backend, "family", None), "modality", "audio") != "audio":
        from smoothguard.errors import ConfigError

        raise ConfigError(f"--audio needs an audio model (testbed:audio, Qwen2-Audio); {model} reads images")
    if is_named:
        label = f"testbed {model.partition(':')[2] or 'main'!r}"
    else:
        label = f"testbed model at {model}" if is_testbed else model
    return backend, label, is_testbed


@contextlib.contextmanager
def _threads_for(backend: Any, is_testbed: bool) -> Iterator[None]:
    """One torch thread while the testbed runs on the CPU: its tiny matrices are dispatch-bound, and two threads
    contending for two busy cores were measured 5x slower than one (0.7-1.0 s vs 0.14 s per PGD step)."""
    if not is_testbed or str(getattr(backend, "device", "cpu")) != "cpu":
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# -- the demo ----------------------------------------------------------------------------------------------------


def demo(backend: Any, *, label: str = "", is_testbed: bool = True, n: int = 3, seed: int = 0,
         kinds: list[str] | None = None, image_size: int | None = None, attack: str = "auto", epsilon: float = 16.0,
         attack_steps: int = 100, noise_sigma: float = 0.5, sigma: float = 0.2, n_samples: int = 11,
         save_dir: str | Path | None = None) -> dict[str, Any]:
    """Run the demo on ``backend`` (an ``HFVisionLanguageModel``); return the report (JSON-serialisable).

    epsilon: PGD budget in levels /255; noise_sigma, sigma: normalised units (pixel std = value x the
    processor's per-channel std); image_size: pixels (default 64 on the testbed, 336 otherwise).
    """
    import numpy as np

    from smoothguard import Media, SmoothGuard
    from smoothguard.noise import add_image_noise, pixel_sigma
    from smoothguard.testbed.data import make_example

    started = time.perf_counter()
    kinds = list(kinds or KINDS)
    mode = ("pgd" if is_testbed else "noise") if attack == "auto" else attack
    size = image_size or (64 if is_testbed else 336)
    guard = SmoothGuard(sigma=sigma, n_samples=n_samples, seed=seed)
    channel_std = getattr(backend, "pixel_std", None)
    rng = np.random.default_rng([seed, 0])
    target_rng = np.random.default_rng([seed, 1])
    out_dir = Path(save_dir) if save_dir is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    pictures: list[tuple[Any, Any, Any]] = []
    for i in range(n):
        example = make_example(rng, size, kind=kinds[i % len(kinds)])
        clean = Media.image(example.image)
        clean_answer = _one(backend, example.question, clean)
        row: dict[str, Any] = {
            "index": i + 1, "kind": example.kind, "question": example.question, "expected": example.answer,
            "shapes": [{"colour": s.colour, "shape": s.shape, "bbox": list(s.bbox)} for s in example.shapes],
            "clean": _answer(clean_answer, example),
        }
        if mode == "pgd":
            from smoothguard.attacks import PGDAttack

            target = wrong_answer(example, target_rng)
            result = PGDAttack(backend, epsilon=epsilon / 255.0, step_size=1 / 255, steps=attack_steps,
                               early_stop=True, seed=seed).run(clean, example.question, target)
            perturbed = result.image
            row["perturbed"] = {**_answer(result.answer, example), "target": target, "success": result.success,
                                "steps": result.steps, "linf_255": round(result.linf * 255, 3)}
        else:
            noise_rng = np.random.default_rng([seed, 2, i])
            std = pixel_sigma(noise_sigma, "normalized", channel_std)
            perturbed = clean.with_data(add_image_noise(clean.to_array("float32"), std, noise_rng))
            row["perturbed"] = _answer(_one(backend, example.question, perturbed), example)
        copy = _guarded(guard, backend, example, perturbed, row, channel_std=channel_std)
        if out_dir is not None:
            row["files"] = _save(out_dir, i, mode, clean, perturbed, copy)
        rows.append(row)
        pictures.append((clean, perturbed, copy))
    report: dict[str, Any] = {
        "model": label or repr(backend),
        "family": getattr(getattr(backend, "family", None), "name", None),
        "device": str(getattr(backend, "device", "")),
        "perturbation": ({"kind": "pgd", "epsilon": epsilon / 255.0, "epsilon_255": epsilon, "step_size_255": 1.0,
                          "max_steps": attack_steps, "early_stop": True} if mode == "pgd"
                         else {"kind": "noise", "sigma": noise_sigma}),
        "guard": {"sigma": sigma, "n_samples": n_samples, "seed": seed},
        "seed": seed, "image_size": size, "examples": rows, "summary": _summary(rows, mode),
    }
    return _finish(report, pictures, out_dir, started)


def demo_audio(backend: Any, *, label: str = "", is_testbed: bool = True, n: int = 3, seed: int = 0,
               kinds: list[str] | None = None, attack: str = "auto", epsilon: float = 0.005, attack_steps: int = 100,
               noise_sigma: float = 0.05, sigma: float = AUDIO_DEMO_SIGMA, n_samples: int = 11,
               save_dir: str | Path | None = None) -> dict[str, Any]:
    """The demo on an audio model (``HFAudioLanguageModel``) with clips of :mod:`smoothguard.testbed.audio_data`.

    epsilon: PGD L-infinity budget, noise_sigma: the noise perturbation's std, sigma: the guard's ``audio_sigma``;
    all in [-1, 1] waveform units. Returns the report (JSON-serialisable), shaped as :func:`demo`'s.
    """
    import numpy as np

    from smoothguard import Media, SmoothGuard
    from smoothguard.noise import add_audio_noise
    from smoothguard.testbed.audio_data import SAMPLE_RATE, make_audio_example

    started = time.perf_counter()
    kinds = list(kinds or AUDIO_KINDS)
    mode = ("pgd" if is_testbed else "noise") if attack == "auto" else attack
    guard = SmoothGuard(audio_sigma=sigma, n_samples=n_samples, seed=seed)
    rng = np.random.default_rng([seed, 3])
    out_dir = Path(save_dir) if save_dir is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    pictures: list[tuple[Any, Any, Any]] = []
    for i in range(n):
        example = make_audio_example(rng, kinds[i % len(kinds)])
        clean = Media.audio(example.clip.wave, sample_rate=SAMPLE_RATE)
        row: dict[str, Any] = {
            "index": i + 1, "kind": example.kind, "question": example.question, "expected": example.answer,
            "clip": {"n_beeps": example.clip.n_beeps, "band": example.clip.band,
                     "frequency_hz": round(example.clip.frequency, 1)},
            "clean": _answer(_one(backend, example.question, clean), example),
        }
        if mode == "pgd":
            from smoothguard.attacks import AudioPGDAttack, audio_testbed_target

            target = audio_testbed_target(example.answer)
            result = AudioPGDAttack(backend, epsilon=epsilon, steps=attack_steps, early_stop=True,
                                    seed=seed).run(clean, example.question, target)
            perturbed = result.clip
            row["perturbed"] = {**_answer(result.answer, example), "target": target, "success": result.success,
                                "steps": result.steps, "linf": round(result.linf, 6),
                                "snr_db": round(result.snr_db, 2)}
        else:
            noise_rng = np.random.default_rng([seed, 4, i])
            perturbed = clean.with_data(add_audio_noise(clean.data, noise_sigma, noise_rng))
            row["perturbed"] = _answer(_one(backend, example.question, perturbed), example)
        copy = _guarded(guard, backend, example, perturbed, row)
        if out_dir is not None:
            row["files"] = _save(out_dir, i, mode, clean, perturbed, copy)
        rows.append(row)
        pictures.append((clean, perturbed, copy))
    report: dict[str, Any] = {
        "model": label or repr(backend), "modality": "audio",
        "family": getattr(getattr(backend, "family", None), "name", None),
        "device": str(getattr(backend, "device", "")),
        "perturbation": ({"kind": "pgd", "epsilon": epsilon, "step_size": epsilon / 10, "max_steps": attack_steps,
                          "early_stop": True} if mode == "pgd" else {"kind": "noise", "sigma": noise_sigma}),
        "guard": {"audio_sigma": sigma, "sigma": sigma, "n_samples": n_samples, "seed": seed},
        "seed": seed, "examples": rows, "summary": _summary(rows, mode),
    }
    return _finish(report, pictures, out_dir, started)


def _finish(report: dict[str, Any], pictures: list[Any], out_dir: Path | None, started: float) -> dict[str, Any]:
    """``report`` with its elapsed seconds; with ``out_dir``, the figure (demo.png) and results.json written there."""
    if out_dir is not None:
        figure = out_dir / "demo.png"
        _figure(report, pictures, figure)
        report["files"] = {"figure": str(figure), "results": str(out_dir / "results.json"), "dir": str(out_dir)}
    report["elapsed_s"] = round(time.perf_counter() - started, 3)
    if out_dir is not None:
        (out_dir / "results.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n",
                                              encoding="utf-8")
    return report


def _guarded(guard: SmoothGuard, backend: Any, example: Any, perturbed: Media, row: dict[str, Any], *,
             channel_std: Any = None) -> Media:
    """Guard the question on ``perturbed`` (an image or a clip): ``row["noisy_copy"]`` (one noisy copy's answer) and
    ``row["guarded"]`` filled in; returns that noisy copy."""
    kind = "images" if perturbed.kind == "image" else "audio"
    guarded = guard.ask(backend, example.question, **{kind: [perturbed]})
    copy = guard.perturb([perturbed], n=2, channel_std=channel_std)[1][0]
    copy_answer = (guarded.samples[1].answer if len(guarded.samples) > 1 and guarded.samples[1].answer is not None
                   else _one(backend, example.question, copy))
    row["noisy_copy"] = _answer(copy_answer, example)
    row["guarded"] = {**_answer(guarded.answer, example), "agreement": guarded.agreement,
                      "clusters": sorted((c.size for c in guarded.clusters), reverse=True),
                      "flagged": guarded.flagged, "n_used": guarded.n_used, "result": guarded.to_dict()}
    return copy


def _save(out_dir: Path, i: int, mode: str, clean: Media, perturbed: Media, copy: Media) -> dict[str, str]:
    """Write example ``i``'s clean, perturbed and noisy-copy media (PNG images, float32 WAV clips); their names."""
    ext = "png" if clean.kind == "image" else "wav"
    names = {"clean": f"example-{i + 1}-clean.{ext}", "perturbed": f"example-{i + 1}-{_word(mode)}.{ext}",
             "noisy_copy": f"example-{i + 1}-guard-copy.{ext}"}
    for key, media in (("clean", clean), ("perturbed", perturbed), ("noisy_copy", copy)):
        raw = media.to_png_bytes() if ext == "png" else media.to_wav_bytes("float32")
        (out_dir / names[key]).write_bytes(raw)
    return names


def _one(backend: Any, question: str, media: Any) -> str:
    answer = backend.generate(question, [[media]])[0]
    if isinstance(answer, BaseException):
        from smoothguard.errors import GenerationError

        raise GenerationError(f"the model failed to answer {question!r}: {answer}", causes=[(0, answer)])
    return answer


def _answer(text: str, example: Any) -> dict[str, Any]:
    return {"answer": text, "correct": is_correct(text, example.answer, example.kind)}


def _word(mode: str) -> str:
    return "attacked" if mode == "pgd" else "noisy"


def wrong_answer(example: Any, rng: Any) -> str:
    """A wrong answer to ``example`` in the task's own template: the PGD target."""
    from smoothguard.testbed.data import ANSWER_TEMPLATES, COLOURS, SHAPES, describe

    if example.kind == "yesno":
        return "No." if example.answer == "Yes." else "Yes."
    if example.kind == "colour":
        shape = next(s for s in SHAPES if s in example.question)
        colour = next(s.colour for s in example.shapes if s.shape == shape)
        other = [c for c in COLOURS if c != colour]
        return ANSWER_TEMPLATES["colour"].format(shape=shape, colour=other[int(rng.integers(len(other)))])
    if example.kind == "count":
        counts = [k for k in (1, 2, 3) if k != len(example.shapes)]
        k = counts[int(rng.integers(len(counts)))]
        return ANSWER_TEMPLATES["count_one"] if k == 1 else ANSWER_TEMPLATES["count"].format(n=k)
    first = min(example.shapes, key=lambda s: s.centre_x)
    other = [c for c in COLOURS if c != first.colour]
    changed = [s._replace(colour=other[int(rng.integers(len(other)))]) if s is first else s for s in example.shapes]
    return describe(changed)


_NUMBERS = {"1": 1, "one": 1, "2": 2, "two": 2, "3": 3, "three": 3, "4": 4, "four": 4, "5": 5, "five": 5}


def _words(text: str) -> list[str]:
    import re

    return re.findall(r"[a-z0-9]+", text.casefold())


def is_correct(answer: str, expected: str, kind: str) -> bool:
    """Whether ``answer`` says what ``expected`` says: the exact template answer (the testbed), or for a real
    model's free text the same yes/no, the same colour word, the same number, or the same description."""
    got, want = _words(answer), _words(expected)
    if got == want:
        return True
    if kind == "yesno":
        return bool(got) and got[0] in ("yes", "no") and got[0] == want[0]
    if kind == "colour":
        from smoothguard.testbed.data import COLOURS

        return {w for w in got if w in COLOURS} == {w for w in want if w in COLOURS}
    if kind == "pitch":
        return {w for w in got if w in ("high", "low")} == {w for w in want if w in ("high", "low")}
    if kind == "count":
        numbers = {_NUMBERS[w] for w in got if w in _NUMBERS}
        return numbers == {_NUMBERS[w] for w in want if w in _NUMBERS}
    return False


def _summary(rows: list[dict[str, Any]], mode: str) -> dict[str, Any]:
    n = len(rows)
    summary = {
        "n": n,
        "clean_correct": sum(r["clean"]["correct"] for r in rows),
        "perturbed_correct": sum(r["perturbed"]["correct"] for r in rows),
        "guarded_correct": sum(r["guarded"]["correct"] for r in rows),
        "flagged": sum(r["guarded"]["flagged"] for r in rows),
        "mean_agreement": sum(r["guarded"]["agreement"] for r in rows) / n if n else 0.0,
    }
    if mode == "pgd":
        summary["attack_success"] = sum(r["perturbed"]["success"] for r in rows)
    return summary


# -- output ------------------------------------------------------------------------------------------------------


def _printable(text: str, width: int = 60) -> str:
    """One line: control characters escaped, long text cut to ``width`` characters."""
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text.replace("\n", " ")) or '""'
    return shown if len(shown) <= width else shown[:width - 1] + "…"


def _marks() -> tuple[str, str]:
    encoding = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        "✓✗…σε".encode(encoding)
    except (LookupError, UnicodeEncodeError):
        return "+", "x"
    return "✓", "✗"


def render(report: dict[str, Any]) -> str:
    """The report as a readable table: per example, the clean, perturbed and guarded answers."""
    right, wrong = _marks()
    pert, guard = report["perturbation"], report["guard"]
    audio = report.get("modality") == "audio"
    if audio and pert["kind"] == "pgd":
        how = (f"minimal targeted PGD on the waveform, epsilon {pert['epsilon']:g} ([-1, 1] units), step "
               f"{pert['step_size']:g}, stopped at the first success (at most {pert['max_steps']} steps)")
    elif audio:
        how = f"Gaussian noise on the waveform, std {pert['sigma']:g} ([-1, 1] units), clipped"
    elif pert["kind"] == "pgd":
        how = (f"minimal targeted PGD, epsilon {pert['epsilon_255']:g}/255, step 1/255, stopped at the first success "
               f"(at most {pert['max_steps']} steps)")
    else:
        how = f"Gaussian noise, sigma {pert['sigma']:g} (normalised units), clipped"
    head = "attacked" if pert["kind"] == "pgd" else "noisy"
    lines = [f"SmoothGuard demo: {report['model']} ({report['family']}, {report['device']}), seed {report['seed']}",
             f"perturbation: {how}",
             f"guard: {'audio_sigma' if audio else 'sigma'} {guard['sigma']:g}, {guard['n_samples']} candidates "
             f"(the input and "
             f"{guard['n_samples'] - 1} noisy copies)", ""]
    table = [("#", "input", "answer", "agreement", "clusters", "note")]
    for row in report["examples"]:
        p, g = row["perturbed"], row["guarded"]
        note = ""
        if pert["kind"] == "pgd":
            size = f"{p['linf']:g} (SNR {p['snr_db']:.1f} dB)" if audio else f"{p['linf_255']:g}/255"
            note = (f"target {json.dumps(_printable(p['target'], 40), ensure_ascii=False)} "
                    f"{'reached' if p['success'] else 'not reached'} in {p['steps']} steps, |delta| {size}")
        table.append((str(row["index"]), _printable(row["question"]), f"expected: {_printable(row['expected'])}",
                      "", "", ""))
        table.append(("", "  clean", _cell(row["clean"], right, wrong), "", "", ""))
        table.append(("", f"  {head}", _cell(p, right, wrong), "", "", note))
        agreement = f"{g['agreement']:.0%}" + (" FLAGGED" if g["flagged"] else "")
        table.append(("", "  SmoothGuard", _cell(g, right, wrong), agreement, "+".join(map(str, g["clusters"])) or "-",
                      ""))
    widths = [max(len(r[c]) for r in table) for c in range(len(table[0]))]
    for r in table:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    s = report["summary"]
    n = s["n"]
    tail = (f"attack reached its target {s['attack_success']}/{n}; " if "attack_success" in s else "")
    lines += ["", f"correct: clean {s['clean_correct']}/{n}, {head} {s['perturbed_correct']}/{n}, SmoothGuard "
                  f"{s['guarded_correct']}/{n}; {tail}mean agreement {s['mean_agreement']:.0%}, "
                  f"flagged {s['flagged']}/{n}"]
    if "files" in report:
        lines.append(f"wrote {report['files']['dir']}: {'clips' if audio else 'images'}, "
                     f"{Path(report['files']['figure']).name}, results.json")
    lines.append(f"{report['elapsed_s']:.1f} s")
    return "\n".join(lines)


def _cell(entry: dict[str, Any], right: str, wrong: str) -> str:
    return f"{right if entry['correct'] else wrong} {_printable(entry['answer'])}"


def _figure(report: dict[str, Any], pictures: list[tuple[Any, Any, Any]], path: Path) -> None:
    """One PNG: a row per example with the question and the guard's verdict, then the clean, perturbed and noisy
    guard-copy images with their answers (green: correct, red: wrong). Agg canvas, no pyplot state."""
    import textwrap

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = report["examples"]
    head = "attacked" if report["perturbation"]["kind"] == "pgd" else "noisy"
    sigma = report["guard"]["sigma"]
    fig = Figure(figsize=(11.0, 3.0 * len(rows) + 0.6), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), 4, squeeze=False, gridspec_kw={"width_ratios": [1.5, 1, 1, 1]})
    for row, (clean, perturbed, copy), ax_row in zip(rows, pictures, axes, strict=True):
        g = row["guarded"]
        text = "\n".join([*textwrap.wrap(f"{row['index']}. {row['question']}", 30),
                          *textwrap.wrap(f"expected: {row['expected']}", 30), "",
                          *textwrap.wrap(f"SmoothGuard: {_printable(g['answer'], 80)}", 30),
                          f"agreement {g['agreement']:.0%}, clusters {'+'.join(map(str, g['clusters'])) or '-'}"])
        ax_row[0].axis("off")
        ax_row[0].text(0.0, 0.5, text, va="center", ha="left", fontsize=9, transform=ax_row[0].transAxes,
                       color="darkgreen" if g["correct"] else "darkred")
        done = row["perturbed"]
        label = f"{head} ({done['steps']} PGD steps)" if "steps" in done else head
        panels = ((clean, "clean", row["clean"]), (perturbed, label, row["perturbed"]),
                  (copy, f"a guard copy (sigma {sigma:g})", row["noisy_copy"]))
        for ax, (media, title, entry) in zip(ax_row[1:], panels, strict=True):
            if media.kind == "audio":  # a spectrogram: 25 ms windows, 10 ms hop, as the model's front end
                ax.specgram(media.data, Fs=media.sample_rate, NFFT=400, noverlap=240, cmap="magma")
            else:
                ax.imshow(media.to_array("uint8"), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            answer = "\n".join(textwrap.wrap(_printable(entry["answer"], 80), 28)[:3])
            ax.set_title(f"{title}\n{answer}", fontsize=8, color="darkgreen" if entry["correct"] else "darkred")
    pert = report["perturbation"]
    if report.get("modality") == "audio":
        how = (f"waveform PGD epsilon {pert['epsilon']:g}, minimal" if pert["kind"] == "pgd"
               else f"waveform noise std {pert['sigma']:g}")
    else:
        how = (f"PGD epsilon {pert['epsilon_255']:g}/255, minimal" if pert["kind"] == "pgd"
               else f"noise sigma {pert['sigma']:g}")
    title = (f"SmoothGuard demo: {report['model']}; {how}; guard sigma {sigma:g}, "
             f"{report['guard']['n_samples']} candidates")
    fig.suptitle("\n".join(textwrap.wrap(title, 100)), fontsize=11)  # a long model path must not run off the page
    fig.tight_layout()
    fig.savefig(path, format="png")
