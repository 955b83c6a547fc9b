"""Train a testbed model on freshly generated examples: ``PYTHONPATH=core python training/train.py --help``.

Recipe (see reference/testbed.md): loss on the answer tokens only; Gaussian pixel noise on half of the
images (std uniform in [0, 0.06], clipped to [0, 1] for half of those, unclipped for the rest); AdamW
(betas 0.9/0.98, weight decay on matrices only), linear warm-up then cosine decay, gradient clipping at
1.0, bf16 autocast on CUDA. Batch ``k`` is drawn from ``numpy.random.default_rng([seed, 0, k])``, so the
data depend on the seed and the step alone, not on the number of workers or on interruptions; with the
model initialised from the seed too, ``--resume`` continues exactly where the checkpoint stopped (bit for
bit on the CPU).

DIR (``--out``) receives ``checkpoint.pt`` (model, optimiser, schedule, step, RNG states, tokenizer),
``model/`` (the fp16 export, ready to ship) and ``metrics.json`` (held-out accuracy, time, device, date).

Imports only torch, transformers, tokenizers, numpy, PIL, tqdm and the standard library, so it runs on a
machine that has none of SmoothGuard's other dependencies (``PYTHONPATH=core``, nothing installed).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm import tqdm

from smoothguard.testbed.data import make_example
from smoothguard.testbed.encode import Encoder, add_pixel_noise, normalize, to_pixels
from smoothguard.testbed.evaluate import evaluate
from smoothguard.testbed.model import (
    CONFIGS,
    build_model,
    build_processor,
    build_tokenizer,
    load_testbed_dir,
    save_testbed,
    tokenizer_from_json,
    tokenizer_json,
)

__all__ = ["ShapeBatches", "TrainOptions", "TrainResult", "lr_at", "main", "train"]

NOISE_FRACTION = 0.5  # share of training images that get noise
NOISE_MAX_STD = 0.06  # their pixel std is uniform in [0, NOISE_MAX_STD]
CHECKPOINT = "checkpoint.pt"
_TRAIN_STREAM = 0
_PROBE = (30, 230)  # steps after the start between which --time-limit measures the speed (fewer in short runs)


@dataclass
class TrainOptions:
    """What to train and how (the command-line flags). ``seed=None``: the config's seed."""

    config: str = "main"
    out: str = "testbed-run"
    device: str = "cpu"
    seed: int | None = None
    examples: int = 1_200_000
    batch_size: int = 128
    workers: int = 0
    threads: int | None = None  # torch CPU threads of the training process (default: torch's)
    resume: bool = False
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int | None = None  # default: 5% of the steps, at most 500
    min_lr_ratio: float = 0.02
    clip: float = 1.0
    amp: bool = True  # bf16 autocast on CUDA (ignored on the CPU)
    checkpoint_every: int = 500
    log_every: int = 50
    eval_examples: int = 300  # held-out examples per question kind
    time_limit: float | None = None  # seconds of training in this run; shortens the schedule to fit
    stop_after_steps: int | None = None  # stop (and checkpoint) after this many steps in this run
    stop_after_minutes: float | None = None  # likewise, after this much training time in this run
    progress: bool = True
    export: bool = True  # write DIR/model and DIR/metrics.json when the schedule is complete
    init_from: str | None = None  # start a new run (a fresh schedule) from these weights: checkpoint.pt or model dir


@dataclass
class TrainResult:
    """What a call of :func:`train` did. ``step_losses``: the loss of every step of this run, in order."""

    out: Path
    step: int
    total_steps: int
    finished: bool
    step_losses: list[float] = field(default_factory=list)
    metrics: dict[str, Any] | None = None


class ShapeBatches(IterableDataset):
    """Training batches for steps ``start``..``end - 1``; worker ``w`` of ``n`` makes steps ``start + w`` (mod ``n``).

    Each item is a dict of ``pixel_values`` (B, 3, H, W) float32, ``input_ids``, ``attention_mask``,
    ``labels`` (B, L) int64. A ``DataLoader`` with ``batch_size=None`` interleaves the workers in order,
    so it yields the steps in order.
    """

    def __init__(self, encoder: Encoder, seed: int, batch_size: int, start: int, end: int, image_size: int = 64):
        self.encoder, self.seed, self.batch_size = encoder, seed, batch_size
        self.start, self.end, self.image_size = start, end, image_size

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        """The batch of ``step`` (a pure function of the seed and the step)."""
        rng = np.random.default_rng([self.seed, _TRAIN_STREAM, step])
        examples = [make_example(rng, self.image_size) for _ in range(self.batch_size)]
        pixels = to_pixels([e.image for e in examples])
        noisy = np.flatnonzero(rng.random(self.batch_size) < NOISE_FRACTION)
        if noisy.size:
            std = rng.uniform(0.0, NOISE_MAX_STD, size=(noisy.size, 1, 1, 1)).astype(np.float32)
            clamp = rng.random(noisy.size) < 0.5
            pixels[noisy] = add_pixel_noise(pixels[noisy], std, rng, clamp=clamp)
        batch = self.encoder.train_batch([e.question for e in examples], [e.answer for e in examples])
        batch["pixel_values"] = normalize(pixels)
        return batch

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        if info is not None:
            torch.set_num_threads(1)
        for step in range(self.start + worker, self.end, workers):
            yield self.batch(step)


def lr_at(step: int, base: float, warmup: int, total: int, min_ratio: float = 0.0) -> float:
    """Learning rate of (0-based) ``step``: linear warm-up over ``warmup`` steps, then cosine to ``min_ratio``."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def _optimizer(model: torch.nn.Module, opts: TrainOptions, device: torch.device) -> torch.optim.AdamW:
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": opts.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    fused = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.AdamW(groups, lr=opts.lr, betas=(0.9, 0.98), eps=1e-8, **fused)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    return f"CPU ({cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def _load_weights(model: torch.nn.Module, source: str, name: str) -> int:
    """Load the weights of a run's ``checkpoint.pt`` or an exported model directory of testbed ``name`` into
    ``model``; returns how many examples they had seen (0 if unknown)."""
    path = Path(source)
    if path.is_dir():  # through the standard loader, which maps the saved names back
        loaded, _, info = load_testbed_dir(path)
        found, weights = info.get("name", info["config"]["name"]), loaded.state_dict()
        seen = int(info.get("examples_seen", 0))
    else:
        state = torch.load(path, map_location="cpu", weights_only=False)
        found, weights = state["config"], state["model"]
        seen = int(state["step"] * state["batch_size"]) + int(state.get("init_examples_seen", 0))
    if found != name:
        raise SystemExit(f"--init-from {source} holds testbed {found!r} weights, not {name!r}")
    missing, unexpected = model.load_state_dict({k: v.float() for k, v in weights.items()}, strict=False)
    if unexpected or any(not k.endswith("lm_head.weight") for k in missing):  # the head is tied to the embedding
        raise SystemExit(f"--init-from {source} does not fit: missing {missing}, unexpected {unexpected}")
    return seen


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _log(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


def train(opts: TrainOptions) -> TrainResult:
    """Train (or resume) per ``opts``; export and evaluate when the schedule completes. See the module doc."""
    device = torch.device(opts.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda was asked for, but torch sees no CUDA device")
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if opts.threads:
        torch.set_num_threads(opts.threads)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / CHECKPOINT
    state: dict[str, Any] | None = None
    if opts.resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        _check_resume(state, opts)
    elif opts.resume:
        _log(f"no checkpoint in {out}; starting afresh")

    cfg = CONFIGS[state["config"] if state else opts.config]
    seed = state["seed"] if state else (cfg.seed if opts.seed is None else opts.seed)
    tokenizer = tokenizer_from_json(state["tokenizer"]) if state else build_tokenizer()
    model = build_model(cfg, tokenizer, seed=seed)
    init_seen = int(state.get("init_examples_seen", 0)) if state else 0
    if state:
        model.load_state_dict(state["model"])
    elif opts.init_from:
        init_seen = _load_weights(model, opts.init_from, cfg.name)
        _log(f"initialised from {opts.init_from} ({init_seen:,} examples seen before this run)")
    model.to(device).train()
    optimizer = _optimizer(model, opts, device)
    if state:
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        if device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
    step = state["step"] if state else 0
    schedule = dict(state["schedule"]) if state else _new_schedule(opts)
    history: list[list[float]] = list(state["history"]) if state else []
    elapsed_before = float(state["train_seconds"]) if state else 0.0
    n_params = sum(p.numel() for p in model.parameters())

    def checkpoint(train_seconds: float) -> None:
        _save_checkpoint(
            ckpt_path,
            {
                "format": 1,
                "config": cfg.name,
                "seed": seed,
                "batch_size": opts.batch_size,
                "step": step,
                "schedule": schedule,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "tokenizer": tokenizer_json(tokenizer),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
                "history": history,
                "init_examples_seen": init_seen,
                "train_seconds": train_seconds,
                "options": asdict(opts),
            },
        )

    encoder = Encoder.from_tokenizer(tokenizer, cfg.n_image_tokens, question_first=cfg.question_first)
    dataset = ShapeBatches(encoder, seed, opts.batch_size, step, schedule["total"], cfg.image_size)
    loader = DataLoader(
        dataset,
        batch_size=None,
        num_workers=opts.workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=2 if opts.workers else None,
    )
    use_amp = opts.amp and device.type == "cuda"
    _log(
        f"testbed {cfg.name}: {n_params / 1e6:.2f} M parameters, seed {seed}, device {_device_name(device)}, "
        f"steps {step}/{schedule['total']} of {opts.batch_size} examples, {opts.workers} data workers"
    )
    start_step, step_losses, pending = step, [], []
    lr = opts.lr
    bar = tqdm(
        total=schedule["total"], initial=step, disable=not opts.progress, unit="step", dynamic_ncols=True,
        mininterval=1.0 if sys.stderr.isatty() else 30.0,
    )
    remaining = schedule["total"] - step
    probe = (min(_PROBE[0], remaining // 10), min(_PROBE[1], remaining // 3))
    t0 = time.perf_counter()

    def flush(lr: float) -> None:
        """Move the pending step losses to the host (one sync per log interval) and log their mean."""
        values = torch.stack(pending).float().cpu().tolist()
        step_losses.extend(values)
        pending.clear()
        history.append([step, float(np.mean(values))])
        rate = (step - start_step) * opts.batch_size / (time.perf_counter() - t0)
        bar.set_postfix(loss=f"{history[-1][1]:.4f}", lr=f"{lr:.2e}", ex_s=f"{rate:.0f}", refresh=False)
        if step % (opts.log_every * 10) == 0 or not opts.progress:
            _log(f"step {step}/{schedule['total']} loss {history[-1][1]:.4f} lr {lr:.2e} {rate:.0f} examples/s")

    probe_t0 = None
    stopped_early = False
    for batch in loader if step < schedule["total"] else []:
        lr = lr_at(step, schedule["base_lr"], schedule["warmup"], schedule["total"], schedule["min_lr_ratio"])
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), opts.clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        pending.append(loss.detach())
        step += 1
        bar.update(1)
        done = step - start_step
        if len(pending) >= opts.log_every:
            flush(lr)
        now = time.perf_counter() - t0
        if opts.time_limit is not None:
            if done == probe[0] and probe[1] > probe[0]:
                _sync(device)
                probe_t0 = time.perf_counter()
            elif done == probe[1] and probe_t0 is not None:
                _sync(device)
                per_step = (time.perf_counter() - probe_t0) / (probe[1] - probe[0])
                fits = step + max(0, int((opts.time_limit - (time.perf_counter() - t0)) / per_step * 0.97))
                if fits < schedule["total"]:
                    _log(
                        f"--time-limit {opts.time_limit:.0f}s at {per_step * 1e3:.1f} ms/step: schedule shortened "
                        f"from {schedule['total']} to {fits} steps ({fits * opts.batch_size} examples)"
                    )
                    schedule["total"] = fits
                    schedule["warmup"] = min(schedule["warmup"], max(1, fits // 10))
                    schedule["shortened"] = True
                    bar.total = fits
            if now > opts.time_limit * 1.05 and step < schedule["total"]:
                _log(f"--time-limit passed at step {step}: stopping before the schedule ends")
                schedule["total"] = step
                schedule["shortened"] = True
        if step >= schedule["total"]:
            break
        if (opts.stop_after_steps is not None and done >= opts.stop_after_steps) or (
            opts.stop_after_minutes is not None and now >= opts.stop_after_minutes * 60
        ):
            stopped_early = True
            break
        if opts.checkpoint_every and step % opts.checkpoint_every == 0:
            checkpoint(elapsed_before + now)
    if pending:
        flush(lr)
    bar.close()
    _sync(device)
    train_seconds = time.perf_counter() - t0
    checkpoint(elapsed_before + train_seconds)
    finished = step >= schedule["total"] and not stopped_early
    _log(f"{'finished' if finished else 'paused'} at step {step}/{schedule['total']} after {train_seconds:.0f}s")
    result = TrainResult(out, step, schedule["total"], finished, step_losses)
    if finished and opts.export:
        result.metrics = _export_and_evaluate(
            model, tokenizer, cfg, seed, opts, device, out,
            {
                "steps": step,
                "examples_seen": step * opts.batch_size + init_seen,
                "init_from": opts.init_from,
                "batch_size": opts.batch_size,
                "schedule": schedule,
                "train_seconds": round(elapsed_before + train_seconds, 1),
                "train_seconds_this_run": round(train_seconds, 1),
                "examples_per_second_this_run": round((step - start_step) * opts.batch_size / max(train_seconds, 1e-9)),
                "params": n_params,
                "final_loss": history[-1][1] if history else None,
                "loss_curve": history,
            },
        )
    return result


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _new_schedule(opts: TrainOptions) -> dict[str, Any]:
    total = max(1, math.ceil(opts.examples / opts.batch_size))
    warmup = opts.warmup_steps if opts.warmup_steps is not None else max(1, min(500, round(0.05 * total)))
    return {
        "total": total,
        "warmup": min(warmup, total),
        "base_lr": opts.lr,
        "min_lr_ratio": opts.min_lr_ratio,
        "shortened": False,
    }


def _check_resume(state: dict[str, Any], opts: TrainOptions) -> None:
    if state["config"] != opts.config:
        raise SystemExit(f"checkpoint is of config {state['config']!r}, not {opts.config!r}")
    if opts.seed is not None and state["seed"] != opts.seed:
        raise SystemExit(f"checkpoint has seed {state['seed']}, not {opts.seed}")
    if state["batch_size"] != opts.batch_size:
        raise SystemExit(f"checkpoint was trained with --batch-size {state['batch_size']}; resume with the same")
    total = max(1, math.ceil(opts.examples / opts.batch_size))
    if total != state["schedule"]["total"] and not state["schedule"].get("shortened"):
        _log(f"note: --examples ignored on resume; the checkpoint's schedule has {state['schedule']['total']} steps")


def _export_and_evaluate(
    model: torch.nn.Module,
    tokenizer,
    cfg,
    seed: int,
    opts: TrainOptions,
    device: torch.device,
    out: Path,
    info: dict[str, Any],
) -> dict[str, Any]:
    """Write DIR/model (fp16), reload it as shipped (fp32) and measure it; write DIR/metrics.json."""
    processor = build_processor(tokenizer, cfg)
    export = out / "model"
    meta = {"name": cfg.name, "seed": seed, "examples_seen": info["examples_seen"]}
    save_testbed(model, processor, export, cfg, meta)
    shipped, _, _ = load_testbed_dir(export, device=device)
    t = time.perf_counter()
    accuracy = evaluate(
        shipped,
        tokenizer,
        n_per_kind=opts.eval_examples,
        image_size=cfg.image_size,
        n_image_tokens=cfg.n_image_tokens,
        question_first=cfg.question_first,
    )
    metrics = {
        "config": cfg.name,
        "seed": seed,
        "device": device.type,
        "device_name": _device_name(device),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        **{k: v for k, v in info.items() if k != "loss_curve"},
        "eval": accuracy,
        "eval_seconds": round(time.perf_counter() - t, 1),
        "model_bytes": sum(f.stat().st_size for f in export.glob("*.safetensors")),
        "versions": {"torch": torch.__version__, "python": platform.python_version(), **_versions()},
        "command": " ".join(sys.argv),
        "loss_curve": info["loss_curve"],
    }
    text = json.dumps(metrics, indent=1) + "\n"
    (out / "metrics.json").write_text(text)
    (export / "metrics.json").write_text(text)
    summary = {k: round(v, 4) for k, v in accuracy.items() if isinstance(v, float)}
    _log(f"held-out accuracy ({opts.eval_examples} per kind): {json.dumps(summary)}")
    return metrics


def _versions() -> dict[str, str]:
    import tokenizers
    import transformers

    return {"transformers": transformers.__version__, "tokenizers": tokenizers.__version__}


def _parser() -> argparse.ArgumentParser:
    d = TrainOptions()
    p = argparse.ArgumentParser(
        prog="python training/train.py",
        description="Train a SmoothGuard testbed VLM on generated shape images (see smoothguard/testbed/README.md).",
    )
    p.add_argument("--config", choices=sorted(CONFIGS), default=d.config, help="model size (default: main)")
    p.add_argument("--out", required=True, help="run directory: checkpoint.pt, model/, metrics.json")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--seed", type=int, default=None, help="weights and data seed (default: the config's)")
    p.add_argument("--examples", type=int, default=d.examples, help="training examples in all (default 1200000)")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--workers", type=int, default=None, help="data-generating processes (default: 0 on cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.pt if there is one")
    p.add_argument("--init-from", metavar="PATH", help="a new run (fresh schedule) from these weights: a run's "
                   "checkpoint.pt or an exported model directory")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--warmup-steps", type=int, default=None, help="default: 5%% of the steps, at most 500")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, help="steps (default 500)")
    p.add_argument("--log-every", type=int, default=d.log_every, help="steps per logged loss")
    p.add_argument("--eval-examples", type=int, default=d.eval_examples, help="held-out examples per kind")
    p.add_argument("--time-limit", type=float, default=None, help="seconds; shortens the schedule to fit")
    p.add_argument("--stop-after-steps", type=int, default=None, help="pause (checkpoint) after N steps")
    p.add_argument("--stop-after-minutes", type=float, default=None, help="pause (checkpoint) after N minutes")
    p.add_argument("--no-amp", action="store_true", help="no bf16 autocast on CUDA")
    p.add_argument("--no-progress", action="store_true", help="plain log lines instead of a progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    a = _parser().parse_args(argv)
    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    workers = a.workers if a.workers is not None else (0 if device == "cpu" else min(14, (os.cpu_count() or 2) - 2))
    opts = TrainOptions(
        config=a.config, out=a.out, device=device, seed=a.seed, examples=a.examples, batch_size=a.batch_size,
        workers=workers, threads=a.threads, resume=a.resume, lr=a.lr, warmup_steps=a.warmup_steps,
        checkpoint_every=a.checkpoint_every, log_every=a.log_every, eval_examples=a.eval_examples,
        time_limit=a.time_limit, stop_after_steps=a.stop_after_steps, stop_after_minutes=a.stop_after_minutes,
        amp=not a.no_amp, progress=not a.no_progress, init_from=a.init_from,
    )
    result = train(opts)
    return 0 if result.finished or opts.stop_after_steps or opts.stop_after_minutes else 1


if __name__ == "__main__":
    sys.exit(main())
