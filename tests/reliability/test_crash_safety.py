"""Crash-safety: an evaluation and an attack killed with SIGKILL at random points resume to the same end.

The kill points are random (seeded by ``SMOOTHGUARD_RELIABILITY_SEED``, else drawn and reported in the terminal
summary, so a failure can be replayed): a random number of finished answers (or attack steps), then a random
fraction of one more, so kills also land while a line or a checkpoint is being written, and before anything was.
(tests/eval/test_eval_resume_kill.py kills once at a fixed point; this kills the same run again and again.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from smoothguard.eval import ShapeOracle, read_pope, run_eval
from smoothguard.eval.datasets import write_pope

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")

SEED = int(os.environ.get("SMOOTHGUARD_RELIABILITY_SEED", np.random.SeedSequence().entropy % 2**32))
ITEMS, N, KILLS = 10, 3, 3
DELAY = 0.04  # seconds per generate call in the killed process

EVAL_SCRIPT = textwrap.dedent(f"""
    import sys, time
    from smoothguard.eval import ShapeOracle, read_pope, run_eval

    class Slow(ShapeOracle):
        def generate(self, prompt, variants):
            time.sleep({DELAY})
            return super().generate(prompt, variants)

    run_eval(Slow(), read_pope(sys.argv[1]), sys.argv[2], sigmas=[0, 0.1], n_samples={N}, limit={ITEMS},
             progress=False)
""")


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _kill_when(proc: subprocess.Popen, ready, pause: float, deadline: float = 120.0) -> bool:
    """Wait until ``ready()``, sleep ``pause``, SIGKILL; False if the process ended first."""
    stop = time.monotonic() + deadline
    while not ready():
        if proc.poll() is not None:
            return False
        assert time.monotonic() < stop, "the subprocess made no progress"
        time.sleep(0.005)
    time.sleep(pause)
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    return True


@pytest.fixture(scope="module")
def pope(tmp_path_factory) -> Path:
    return write_pope(tmp_path_factory.mktemp("pope") / "pope", n_images=6, seed=2)


def test_eval_killed_at_random_points_resumes_exactly_once(pope: Path, tmp_path: Path, figures) -> None:
    rng = np.random.default_rng(SEED)
    out = tmp_path / "killed"
    log = out / "answers.jsonl"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    kills = []
    for _ in range(KILLS):
        done = _lines(log)
        target = done + int(rng.integers(0, max(1, 2 * ITEMS - done)))  # answers on disk before the kill
        pause = float(rng.uniform(0, DELAY * N))
        proc = subprocess.Popen([sys.executable, "-c", EVAL_SCRIPT, str(pope), str(out)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            killed = _kill_when(proc, lambda t=target: _lines(log) >= t, pause)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if not killed:
            assert proc.returncode == 0, proc.stderr.read().decode()[-2000:]
        kills.append(f"{target}+{pause * 1000:.0f}ms{'' if killed else ' (finished first)'}")
        proc.stderr.close()
    figures(f"crash-safety [eval]: seed {SEED}; killed after answers {', '.join(kills)}; "
            f"{_lines(log)} of {2 * ITEMS} lines on disk before the last resume")

    resumed = run_eval(ShapeOracle(), read_pope(pope), out, sigmas=[0, 0.1], n_samples=N, limit=ITEMS, progress=False)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    keys = [(r["run"], r["id"]) for r in records]
    assert len(keys) == len(set(keys)) == 2 * ITEMS  # every question exactly once per run
    assert all(r["error"] is None for r in records)

    reference = run_eval(ShapeOracle(), read_pope(pope), tmp_path / "reference", sigmas=[0, 0.1], n_samples=N,
                         limit=ITEMS, progress=False)
    assert [r["metrics"] for r in resumed["runs"]] == [r["metrics"] for r in reference["runs"]]
    ref = {(r["run"], r["id"]): r for r in map(json.loads, (tmp_path / "reference" / "answers.jsonl").open())}
    for r in records:
        same = ref[(r["run"], r["id"])]
        assert (r["answer"], r["candidates"], r["seed"]) == (same["answer"], same["candidates"], same["seed"])


# -- the attack ------------------------------------------------------------------------------------------------

STEPS = 8


def _attack_argv(model_dir: Path, start: Path, out: Path) -> list[str]:
    return ["attack", "--model", str(model_dir), "--image", str(start), "--prompt", "Is there a red circle?",
            "--target", "Yes", "--epsilon", "16", "--steps", str(STEPS), "--out", str(out), "--device", "cpu",
            "--max-new-tokens", "2", "--checkpoint-every", "1", "--quiet", "--json"]


def _state_step(path: Path) -> int:
    from smoothguard.attacks import AttackState

    try:
        return AttackState.load(path).step if path.exists() else -1
    except Exception:  # being replaced right now
        return -1


def test_attack_killed_at_random_points_resumes(tmp_path: Path, figures, capsys) -> None:
    from fakes.tiny_models import tiny_llava

    from smoothguard import Media
    from smoothguard.cli import main

    rng = np.random.default_rng(SEED + 1)
    model_dir = tiny_llava(tmp_path / "llava")
    start = tmp_path / "clean.png"
    start.write_bytes(Media.image(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).to_png_bytes())

    assert main(_attack_argv(model_dir, start, tmp_path / "reference.png")) == 0
    reference = json.loads(capsys.readouterr().out)

    out = tmp_path / "adv.png"
    state = Path(str(out) + ".state.npz")
    code = ("import sys; from smoothguard.cli import main; sys.exit(main(sys.argv[1:]))")
    kills = []
    for round_ in range(2):
        target = max(_state_step(state), 0) + int(rng.integers(0, STEPS // 2))
        pause = float(rng.uniform(0, 0.05))
        argv = _attack_argv(model_dir, start, out) + (["--resume"] if round_ else [])
        proc = subprocess.Popen([sys.executable, "-c", code, *argv], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        try:
            killed = _kill_when(proc, lambda t=target: _state_step(state) >= t, pause)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if not killed:
            assert proc.returncode == 0, proc.stderr.read().decode()[-2000:]
        proc.stderr.close()
        kills.append(f"step {target}+{pause * 1000:.0f}ms{'' if killed else ' (finished first)'}")

    assert main([*_attack_argv(model_dir, start, out), "--resume"]) == 0
    resumed = json.loads(capsys.readouterr().out)
    figures(f"crash-safety [attack --resume]: seed {SEED}; killed at {', '.join(kills)}; resumed to "
            f"{resumed['steps']} steps")
    assert resumed["steps"] == STEPS and len(resumed["loss_curve"]) == STEPS  # every step exactly once
    assert resumed["loss_curve"] == pytest.approx(reference["loss_curve"], rel=1e-4, abs=1e-5)
    assert np.array_equal(Media.image(out).data, Media.image(tmp_path / "reference.png").data)
