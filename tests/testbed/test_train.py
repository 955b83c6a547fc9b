"""The trainer: a short CPU run lowers the loss, resumes bit for bit, exports and evaluates."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from smoothguard.testbed.encode import Encoder

# the trainer lives outside the installed package, in training/train.py
_spec = importlib.util.spec_from_file_location("testbed_train", Path(__file__).resolve().parents[2] / "training" /
                                               "train.py")
trainer = importlib.util.module_from_spec(_spec)
sys.modules["testbed_train"] = trainer  # before running it: its dataclasses look their module up
_spec.loader.exec_module(trainer)
ShapeBatches, TrainOptions, lr_at, main, train = (trainer.ShapeBatches, trainer.TrainOptions, trainer.lr_at,
                                                  trainer.main, trainer.train)

STEPS, BATCH = 30, 8


def _options(out, **kw) -> TrainOptions:
    base = dict(config="surrogate", out=str(out), device="cpu", examples=STEPS * BATCH, batch_size=BATCH, workers=0,
                checkpoint_every=10, log_every=5, eval_examples=3, progress=False)
    return TrainOptions(**{**base, **kw})


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    return train(_options(out)), out


def test_short_run_lowers_the_loss(full_run):
    result, _ = full_run
    assert result.finished and result.step == STEPS and len(result.step_losses) == STEPS
    losses = np.array(result.step_losses)
    assert losses[-5:].mean() < 0.6 * losses[:5].mean()


def test_resume_continues_exactly(full_run, tmp_path):
    result, _ = full_run
    paused = train(_options(tmp_path, stop_after_steps=20, export=False))
    assert not paused.finished and paused.step == 20
    assert paused.step_losses == result.step_losses[:20]
    resumed = train(_options(tmp_path, resume=True, export=False))
    assert resumed.finished and resumed.step == STEPS
    assert resumed.step_losses == result.step_losses[20:]  # the same next-step losses, bit for bit
    a = torch.load(tmp_path / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(full_run[1] / "checkpoint.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_export_and_metrics(full_run):
    _, out = full_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["examples_seen"] == STEPS * BATCH and metrics["config"] == "surrogate"
    assert metrics["device"] == "cpu" and metrics["date"] and metrics["train_seconds"] > 0
    for key in ("yesno", "colour", "count", "describe", "yesno_sigma_0.1", "yesno_sigma_0.2"):
        assert 0.0 <= metrics["eval"][key] <= 1.0
    model = out / "model"
    assert (model / "model.safetensors").stat().st_size <= 10 * 2**20
    assert json.loads((model / "testbed.json").read_text())["name"] == "surrogate"
    assert json.loads((model / "metrics.json").read_text()) == metrics


def test_batches_depend_on_seed_and_step_only(tokenizer):
    encoder = Encoder.from_tokenizer(tokenizer, 64)
    serial = list(ShapeBatches(encoder, seed=5, batch_size=4, start=3, end=9))
    parallel = list(DataLoader(ShapeBatches(encoder, seed=5, batch_size=4, start=3, end=9), batch_size=None,
                               num_workers=2))
    assert len(serial) == len(parallel) == 6
    for a, b in zip(serial, parallel, strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)
    again = ShapeBatches(encoder, seed=5, batch_size=4, start=0, end=1).batch(4)
    assert all(torch.equal(again[k], serial[1][k]) for k in again)
    batch = serial[0]
    assert batch["pixel_values"].shape == (4, 3, 64, 64)
    answer = batch["labels"] != -100
    assert answer.any(1).all() and (batch["attention_mask"].bool() | ~answer).all()


def test_time_limit_shortens_the_schedule(tmp_path):
    # 60 training steps of this model do not fit in 0.3 s on a CPU, so the schedule must be shortened
    result = train(_options(tmp_path, examples=60 * 4, batch_size=4, time_limit=0.3, export=False))
    assert result.finished and result.step == result.total_steps < 60
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert state["schedule"]["shortened"] and state["schedule"]["total"] == result.step
    assert len(result.step_losses) == result.step


def test_schedule():
    assert lr_at(0, 1e-3, 10, 100) == pytest.approx(1e-4)
    assert lr_at(9, 1e-3, 10, 100) == pytest.approx(1e-3)
    assert lr_at(55, 1e-3, 10, 100) == pytest.approx(5e-4)
    assert lr_at(100, 1e-3, 10, 100, min_ratio=0.02) == pytest.approx(2e-5)


def test_cli_refuses_a_mismatched_resume(full_run):
    _, out = full_run
    with pytest.raises(SystemExit, match="batch-size"):
        main(["--config", "surrogate", "--out", str(out), "--device", "cpu", "--batch-size", "16", "--resume"])


def test_init_from_starts_a_new_schedule_from_earlier_weights(full_run, tmp_path):
    """--init-from: a fresh run (its own schedule) from an exported model or a checkpoint, e.g. to go on training a
    finished CPU run in a later session; the examples seen before are counted."""
    _, out = full_run
    first = train(_options(tmp_path / "a", init_from=str(out / "model"), examples=4 * BATCH, eval_examples=2))
    assert first.finished and first.step == 4
    assert first.step_losses[0] < 0.8 * full_run[0].step_losses[0]  # it starts where the earlier run ended
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert metrics["examples_seen"] == (STEPS + 4) * BATCH and metrics["init_from"] == str(out / "model")
    again = train(_options(tmp_path / "b", init_from=str(tmp_path / "a" / "checkpoint.pt"), examples=2 * BATCH,
                           export=False))
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)["init_examples_seen"] == (STEPS + 4) * BATCH
    assert again.finished
    with pytest.raises(SystemExit, match="holds testbed 'surrogate' weights, not 'main'"):
        train(_options(tmp_path / "c", config="main", init_from=str(out / "model")))
