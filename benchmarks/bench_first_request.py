"""What the first guarded request costs without and with ``warmup()``, each in a fresh process (cold caches).

    .venv/bin/python benchmarks/bench_first_request.py [--repeat 3]

The wrapped model is a local fake that answers at once (the candidates give two different answers, so the vote
really embeds them), so the times are the guard's own: the embedder's load, the sentiment lexicon, the vote.
Prints one table: median seconds over ``--repeat`` fresh processes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import base64, io, itertools, json, sys, time
t0 = time.perf_counter()
import numpy as np
from PIL import Image
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage
from smoothguard_langchain import ChatSmoothGuard
t_import = time.perf_counter() - t0

buf = io.BytesIO(); Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(buf, "PNG")
ask = [HumanMessage(content=[{"type": "text", "text": "What is this?"},
                             {"type": "image", "base64": base64.b64encode(buf.getvalue()).decode(),
                              "mime_type": "image/png"}])]
answers = itertools.cycle([AIMessage("A grey square."), AIMessage("A plain grey tile, nothing else.")])
guard = ChatSmoothGuard(model=GenericFakeChatModel(messages=answers), n_samples=11, seed=0)
out = {"import": t_import}
if sys.argv[1] == "warm":
    t = time.perf_counter(); guard.warmup(); out["warmup"] = time.perf_counter() - t
t = time.perf_counter(); guard.invoke(ask); out["first"] = time.perf_counter() - t
t = time.perf_counter(); guard.invoke(ask); out["second"] = time.perf_counter() - t
print(json.dumps(out))
"""


def run(mode: str) -> dict[str, float]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, env=env, check=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["stderr_lines"] = len([line for line in proc.stderr.splitlines() if line.strip()])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="fresh processes per mode (default 3)")
    args = parser.parse_args()
    rows = []
    for mode in ("cold", "warm"):
        runs = [run(mode) for _ in range(args.repeat)]
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        rows.append((mode, med))
    print(f"| first request ({os.cpu_count()} CPUs, n_samples=11, median of {args.repeat}) | warmup() s | "
          "1st request s | 2nd request s | stderr lines |")
    print("|---|---|---|---|---|")
    for mode, med in rows:
        label = "no warmup" if mode == "cold" else "after guard.warmup()"
        warm = f"{med['warmup']:.2f}" if "warmup" in med else "-"
        print(f"| {label} | {warm} | {med['first']:.2f} | {med['second']:.2f} | {med['stderr_lines']:.0f} |")


if __name__ == "__main__":
    main()
