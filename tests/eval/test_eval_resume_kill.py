"""A run killed with SIGKILL in the middle of the defended sweep resumes with every id exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from smoothguard.eval import ShapeOracle, read_pope, run_eval

ITEMS, N = 12, 3
SCRIPT = textwrap.dedent("""
    import sys, time
    from smoothguard.eval import ShapeOracle, read_pope, run_eval

    class Slow(ShapeOracle):
        def generate(self, prompt, variants):
            time.sleep(0.1)
            return super().generate(prompt, variants)

    run_eval(Slow(), read_pope(sys.argv[1]), sys.argv[2], sigmas=[0, 0.1], n_samples=N_SAMPLES, limit=LIMIT,
             progress=False)
""").replace("N_SAMPLES", str(N)).replace("LIMIT", str(ITEMS))


def _lines(path):
    return path.read_bytes().count(b"\n") if path.exists() else 0


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_sigkill_midway_then_resume(tmp_path, standin):
    out = tmp_path / "killed"
    log = out / "answers.jsonl"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(standin["pope"]), str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        # wait until the undefended run is done and the guarded one is under way, then kill
        while _lines(log) < ITEMS + 3:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the subprocess made no progress"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    written = _lines(log)
    assert ITEMS + 3 <= written < 2 * ITEMS  # killed in the middle of the guarded run
    assert not (out / "summary.json").exists()

    resumed = run_eval(ShapeOracle(), read_pope(standin["pope"]), out, sigmas=[0, 0.1], n_samples=N, limit=ITEMS,
                       progress=False)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    keys = [(r["run"], r["id"]) for r in records]
    assert len(keys) == len(set(keys)) == 2 * ITEMS  # every id exactly once per run: nothing lost or duplicated

    reference = run_eval(ShapeOracle(), read_pope(standin["pope"]), tmp_path / "reference", sigmas=[0, 0.1],
                         n_samples=N, limit=ITEMS, progress=False)
    assert [r["metrics"] for r in resumed["runs"]] == [r["metrics"] for r in reference["runs"]]
    ref = {(r["run"], r["id"]): r for r in map(json.loads, (tmp_path / "reference" / "answers.jsonl").open())}
    for r in records:
        same = ref[(r["run"], r["id"])]
        assert (r["answer"], r["candidates"], r["seed"]) == (same["answer"], same["candidates"], same["seed"])
