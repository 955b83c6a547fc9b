"""Train the audio testbed model (a tiny Qwen2-Audio) on generated beep clips, on the CPU, resumably.

    PYTHONPATH=core nice -n 10 python training/audio_train.py --out runs/audio [--steps 4000] [--batch-size 64]
        [--threads 1] [--seed 0] [--resume] [--time-limit SECONDS] [--eval-every 250] [--eval-examples 300]

Recipe: every batch freshly generated (batch ``k`` from ``numpy.random.default_rng([seed, 0, k])``, so a run depends
on the seed and the step count only, and ``--resume`` continues it exactly); question kinds mixed as
``AUDIO_KIND_WEIGHTS``; the guard's own noise on half of the clips (waveform std uniform in [0, 0.05], clipped to
[-1, 1]); loss on the answer tokens (and the closing ``<|end|>``) only; AdamW (lr 2e-3, betas 0.9/0.98, weight decay
0.01 on matrices), linear warm-up over 100 steps then cosine decay to 2% of the lr; gradient clipping at 1.0.

``DIR/checkpoint.pt`` is written every 100 steps and on stopping (model, optimiser, step, loss curve); ``--resume``
goes on from it. Every ``--eval-every`` steps a held-out check (stream 1 of the generator, 64 clips per kind,
teacher-forced exact match, which equals greedy exact match) is appended to the curve. At the end ``DIR/model/`` is
the fp16 export and ``DIR/metrics.json`` its greedy held-out accuracy per kind, reloaded from the export, clean and
under the guard's noise (``--eval-sigmas``), with the recipe, times and curves.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from smoothguard.testbed.audio_data import AUDIO_KINDS, SAMPLE_RATE, make_audio_example
from smoothguard.testbed.audio_model import (
    END,
    audio_prompt_text,
    build_audio_model,
    build_audio_processor,
    build_audio_tokenizer,
    load_audio_testbed_dir,
    save_audio_testbed,
)

RECIPE = {"lr": 2e-3, "betas": (0.9, 0.98), "weight_decay": 0.01, "warmup": 100, "final_lr_share": 0.02,
          "clip": 1.0, "noise_share": 0.5, "noise_std_max": 0.05}


def noisy(wave: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """``clip(wave + N(0, std^2), -1, 1)`` as float32: the guard's audio noise."""
    if std <= 0:
        return wave
    return np.clip(wave + rng.normal(0.0, std, wave.shape), -1.0, 1.0).astype(np.float32)


def batch(processor, examples, waves) -> dict[str, torch.Tensor]:
    """Teacher-forcing inputs with labels on the answer tokens (left padding puts them last)."""
    tok = processor.tokenizer
    texts = [audio_prompt_text(e.question) + e.answer + END for e in examples]
    inputs = processor(text=texts, audio=list(waves), sampling_rate=SAMPLE_RATE, return_tensors="pt",
                       padding=True, padding_side="left")
    labels = torch.full_like(inputs["input_ids"], -100)
    for i, e in enumerate(examples):
        n = len(tok(e.answer + END, add_special_tokens=False)["input_ids"])
        labels[i, -n:] = inputs["input_ids"][i, -n:]
    inputs["labels"] = labels
    return dict(inputs)


def train_batch(processor, seed: int, step: int, size: int):
    rng = np.random.default_rng([seed, 0, step])
    examples = [make_audio_example(rng) for _ in range(size)]
    waves = []
    for e in examples:
        std = float(rng.uniform(0, RECIPE["noise_std_max"])) if rng.random() < RECIPE["noise_share"] else 0.0
        waves.append(noisy(e.clip.wave, std, rng))
    return batch(processor, examples, waves)


def heldout(seed: int, kind: str, n: int):
    rng = np.random.default_rng([seed, 1, AUDIO_KINDS.index(kind)])
    return [make_audio_example(rng, kind) for _ in range(n)], rng


@torch.no_grad()
def teacher_forced(model, processor, seed: int, n: int, sigma: float = 0.0) -> dict[str, float]:
    """Exact match per kind with the answer fed in: every answer token the argmax (= greedy exact match)."""
    model.eval()
    out = {}
    for kind in AUDIO_KINDS:
        examples, rng = heldout(seed, kind, n)
        inputs = batch(processor, examples, [noisy(e.clip.wave, sigma, rng) for e in examples])
        labels = inputs.pop("labels")
        logits = model(**inputs).logits
        pred = logits[:, :-1].argmax(-1)
        target, mask = labels[:, 1:], labels[:, 1:] != -100
        out[kind] = float(((pred == target) | ~mask).all(-1).float().mean())
    model.train()
    return out


@torch.no_grad()
def greedy(model, processor, seed: int, n: int, sigma: float = 0.0) -> dict[str, object]:
    """Greedy exact match per kind with ``generate`` (as served), and a few wrong answers."""
    out: dict[str, object] = {}
    wrong = []
    for kind in AUDIO_KINDS:
        examples, rng = heldout(seed + 1000, kind, n)
        right = 0
        for i in range(0, n, 64):
            chunk = examples[i:i + 64]
            inputs = processor(text=[audio_prompt_text(e.question) for e in chunk],
                               audio=[noisy(e.clip.wave, sigma, rng) for e in chunk], sampling_rate=SAMPLE_RATE,
                               return_tensors="pt", padding=True, padding_side="left")
            gen = model.generate(**inputs, max_new_tokens=12, do_sample=False)
            answers = processor.tokenizer.batch_decode(gen[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
            for e, a in zip(chunk, answers, strict=True):
                if a.strip() == e.answer:
                    right += 1
                elif len(wrong) < 8:
                    wrong.append({"kind": kind, "question": e.question, "expected": e.answer, "got": a.strip(),
                                  "n_beeps": e.clip.n_beeps, "band": e.clip.band})
        out[kind] = right / n
    out["wrong"] = wrong
    return out


def lr_at(step: int, steps: int) -> float:
    if step < RECIPE["warmup"]:
        return RECIPE["lr"] * (step + 1) / RECIPE["warmup"]
    progress = (step - RECIPE["warmup"]) / max(1, steps - RECIPE["warmup"])
    floor = RECIPE["final_lr_share"]
    return RECIPE["lr"] * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--time-limit", type=float, default=None, help="stop (checkpointed) after this many seconds")
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--eval-examples", type=int, default=300)
    p.add_argument("--eval-sigmas", default="0.01,0.02,0.05")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    ckpt_path = args.out / "checkpoint.pt"

    tokenizer = build_audio_tokenizer()
    processor = build_audio_processor(tokenizer)
    model = build_audio_model("audio", tokenizer, seed=args.seed)
    decay = [q for q in model.parameters() if q.dim() >= 2]
    rest = [q for q in model.parameters() if q.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": RECIPE["weight_decay"]},
                             {"params": rest, "weight_decay": 0.0}], lr=RECIPE["lr"], betas=RECIPE["betas"])
    state = {"step": 0, "losses": [], "curve": [], "seconds": 0.0}
    if args.resume and ckpt_path.exists():
        ck = torch.load(ckpt_path, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        state = ck["state"]
        print(f"resumed at step {state['step']}", flush=True)

    def save() -> None:
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "state": state, "args": vars(args) | {
            "out": str(args.out)}}, tmp)
        tmp.replace(ckpt_path)

    model.train()
    start, t0, running = time.time(), time.time(), []
    while state["step"] < args.steps:
        step = state["step"]
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.steps)
        loss = model(**train_batch(processor, args.seed, step, args.batch_size)).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), RECIPE["clip"])
        opt.step()
        running.append(float(loss.detach()))
        state["step"] = step = step + 1
        if step % 25 == 0 or step == args.steps:
            state["losses"].append([step, float(np.mean(running))])
            running = []
        if step % args.eval_every == 0 or step == args.steps:
            acc = teacher_forced(model, processor, args.seed, 64)
            acc_noisy = teacher_forced(model, processor, args.seed, 64, sigma=0.01)
            state["curve"].append({"step": step, "examples": step * args.batch_size, "clean": acc,
                                   "sigma_0.01": acc_noisy})
            recent = float(np.mean(running or [state["losses"][-1][1]]))
            print(f"step {step} examples {step * args.batch_size} loss {recent:.4f} "
                  f"clean {acc} sigma0.01 {acc_noisy} ({time.time() - t0:.0f} s)", flush=True)
        if step % 100 == 0:
            state["seconds"] += time.time() - start
            start = time.time()
            save()
            print(f"step {step} loss {state['losses'][-1][1]:.4f} lr {lr_at(step, args.steps):.2e} "
                  f"{state['seconds']:.0f} s", flush=True)
        if args.time_limit and time.time() - t0 > args.time_limit and step < args.steps:
            state["seconds"] += time.time() - start
            save()
            print(f"time limit: stopped at step {step}; go on with --resume", flush=True)
            return 3
    state["seconds"] += time.time() - start
    save()

    export = save_audio_testbed(model, processor, args.out / "model", "audio",
                                {"examples_seen": state["step"] * args.batch_size, "seed": args.seed})
    shipped, shipped_processor, _ = load_audio_testbed_dir(export)
    metrics: dict[str, object] = {
        "examples_seen": state["step"] * args.batch_size, "steps": state["step"], "batch_size": args.batch_size,
        "seed": args.seed, "train_seconds": round(state["seconds"], 1), "threads": args.threads,
        "device": f"CPU ({platform.processor() or platform.machine()}), {args.threads} thread(s)",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "recipe": RECIPE,
        "parameters": sum(q.numel() for q in model.parameters()),
        "eval_examples_per_kind": args.eval_examples,
        "greedy": {"clean": greedy(shipped, shipped_processor, args.seed, args.eval_examples)},
        "curve": state["curve"], "loss_curve": state["losses"],
    }
    for s in (float(x) for x in args.eval_sigmas.split(",") if x):
        metrics["greedy"][f"sigma_{s:g}"] = greedy(shipped, shipped_processor, args.seed, args.eval_examples, s)
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    (export / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    print(json.dumps({k: v for k, v in metrics["greedy"].items()}, indent=1), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
