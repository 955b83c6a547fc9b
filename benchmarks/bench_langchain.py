"""Latency of a guarded LangChain call against a chat model that takes 200 ms per call (issue 5, item 7).

Target: ``ChatSmoothGuard(...).invoke`` at N=11 takes <= 1.3x one unguarded call, because the 11 calls run
concurrently (``batch``/``abatch``) and aggregation adds only tens of milliseconds.

Expectation written before measuring: with a tiny image the overhead is the thread pool, callbacks and the
vote (embedding 3 distinct answers with MiniLM, ~10-30 ms on 2 cores), so ~1.05-1.15x. With large PNG images
the CPU work on *this* machine grows with pixels: 10 noisy copies to draw (core) and to re-encode as PNG + base64
(~35-70 ms per 512x512 copy), which the model calls cannot hide; expect >1.3x at 512x512 on 2 cores.

The fake model does no work on our CPU (a remote model would not): it sleeps 200 ms and answers one of three
phrasings picked from a cheap checksum of the request (70/20/10% of candidates, like greedy answers under small
noise). Three answer modes: ``repeated`` answers the three phrasings as they are (seen before: the vote embeds
nothing new); ``fresh`` tags them with the question's round number, so each request brings up to three texts the
embedder has not seen (a new question); ``novel`` appends a call counter, so all 11 answers are new and distinct
(the worst case: 11 texts to embed per request). All rows are measured in one run, side by side.

``--jitter S`` draws each call's latency from a log-normal distribution with median ``--latency`` and log-std
``S``, as a real endpoint's latency varies. A guarded request then waits for the slowest of its 11 calls, so it
costs the tail of the latency distribution on top of the local work (expected before measuring, for S = 0.3: the
median of the largest of 11 draws is about exp(0.3 * 1.5) = 1.57x the median call). The ``time_budget=1.5x`` row
gives the guard 1.5 median latencies: calls still running then are left out (expected: ~1.5x plus the local
work, with about 1 of 11 calls dropped at S = 0.3, since P(z > ln 1.5 / 0.3) is about 9%).
Run: ``python benchmarks/bench_langchain.py [--answers repeated fresh novel] [--jitter 0.3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import io
import itertools
import math
import random
import re
import statistics
import time
import zlib
from typing import Any

import numpy as np
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from PIL import Image

from smoothguard.errors import GenerationError
from smoothguard_langchain import ChatSmoothGuard

PHRASES = ["The picture shows a grey square on a white background; nothing else is visible.",
           "It is a plain grey square on white, with nothing else in the picture.",
           "A grey square is shown. The background is white."]
_counter = itertools.count()
_rounds = itertools.count(1)
ROUND = re.compile(r"\(round (\d+)\)")


class RemoteVLM(BaseChatModel):
    """Stands in for a remote vision model: ``latency`` seconds per call, no local image work."""

    latency: float = 0.2
    jitter: float = 0.0
    answers: str = "novel"

    @property
    def _llm_type(self) -> str:
        return "remote-vlm"

    def _answer(self, messages: list[BaseMessage]) -> ChatResult:
        checksum = zlib.crc32(str(messages[-1].content)[-2000:].encode())
        weights = checksum % 10  # 70% / 20% / 10% of candidates, like greedy answers under small noise
        phrase = PHRASES[0 if weights < 7 else 1 if weights < 9 else 2]
        if self.answers == "novel":
            phrase = f"{phrase} (call {next(_counter)})"
        elif self.answers == "fresh":
            phrase = f"{phrase} (round {ROUND.search(str(messages[-1].content)).group(1)})"
        return ChatResult(generations=[ChatGeneration(message=AIMessage(phrase))])

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        time.sleep(self._latency())
        return self._answer(messages)

    async def _agenerate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                         **kwargs: Any) -> ChatResult:
        await asyncio.sleep(self._latency())
        return self._answer(messages)

    def _latency(self) -> float:
        return self.latency * math.exp(self.jitter * random.gauss(0.0, 1.0)) if self.jitter else self.latency


def request(size: int, round_: int = 0) -> list[HumanMessage]:
    """A question (tagged with its round) with one ``size`` x ``size`` PNG photo-like image (gradient + texture)."""
    rng = np.random.default_rng(size)
    y, x = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    pixels = np.stack([0.3 + 0.4 * x, 0.3 + 0.4 * y, 0.5 + 0.1 * x * y], axis=-1)
    pixels = np.clip(pixels + rng.normal(0, 0.02, pixels.shape), 0, 1)
    buf = io.BytesIO()
    Image.fromarray((pixels * 255).astype(np.uint8)).save(buf, "PNG")
    b64 = base64.b64encode(buf.getvalue()).decode()
    return [HumanMessage(content=[{"type": "text", "text": f"What is in the image? (round {round_})"},
                                  {"type": "image", "base64": b64, "mime_type": "image/png"}])]


def measure(mode: str, size: int, cases: list[tuple[str, int, Any]], repeats: int) -> None:
    """Print one row per case for one answer mode and image size."""
    times: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    stages: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in cases}
    dropped = {name: 0 for name, _, _ in cases}
    failed = dict(dropped)
    for _ in range(repeats):
        for name, _, fn in cases:
            messages = request(size, next(_rounds))
            start = time.perf_counter()
            try:
                reply = fn(messages)
            except GenerationError:  # under a time budget: too few answers in time (timed all the same)
                failed[name] += 1
                times[name].append((time.perf_counter() - start) * 1000)
                continue
            times[name].append((time.perf_counter() - start) * 1000)
            if "smoothguard" in reply.response_metadata:
                meta = reply.response_metadata["smoothguard"]
                stages[name].append(meta["timings"])
                dropped[name] += sum(bool(sample["error"]) for sample in meta["samples"])
    base = statistics.median(times["unguarded invoke"])
    for name, calls, _ in cases:
        ms = statistics.median(times[name])
        cols = "".join(f" {statistics.median(t[k] for t in stages[name]) * 1000:>{w}.0f}"
                       for k, w in (("perturb", 7), ("generate", 7), ("aggregate", 6))) if stages[name] else ""
        fastest = min(times[name])
        late = f" {dropped[name] / repeats:>7.1f} {failed[name]:>6}" if calls > 1 else ""
        print(f"{mode:<9}{name:<28} {f'{size}px':>6} {calls:>5} {ms:>9.0f} {fastest:>7.0f} {ms / base:>6.2f}x"
              f"{cols}{late}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per model call (the median with --jitter)")
    parser.add_argument("--jitter", type=float, default=0.0, help="log-std of a log-normal latency (0: fixed)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 224, 512])
    parser.add_argument("--answers", nargs="+", choices=["repeated", "fresh", "novel"],
                        default=["repeated", "fresh", "novel"])
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch.set_num_threads for the embedder (default: torch's own choice)")
    args = parser.parse_args()
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)

    spread = f", log-normal with log-std {args.jitter}" if args.jitter else ""
    print(f"\nmodel latency {args.latency * 1000:.0f} ms per call{spread}; {args.repeats} rounds, the cases "
          f"interleaved in each round; target: N=11 <= 1.3x one call")
    print(f"{'answers':<9}{'case':<28} {'image':>6} {'calls':>5} {'median ms':>9} {'min ms':>7} {'x call':>7} "
          f"{'perturb':>7} {'gen+enc':>7} {'vote':>6} {'dropped':>7} {'failed':>6}")
    for mode in args.answers:
        model = RemoteVLM(latency=args.latency, jitter=args.jitter, answers=mode)
        guard = ChatSmoothGuard(model=model, n_samples=11, sigma=0.1)
        limited = ChatSmoothGuard(model=model, n_samples=11, max_concurrency=4)
        budgeted = ChatSmoothGuard(model=model, n_samples=11, sigma=0.1, time_budget=1.5 * args.latency)
        guard.invoke(request(32))  # load the embedder (and, for repeated answers, see them) outside the measurements
        gc.freeze()  # as a serving process would: full collections then skip the loaded libraries (a 0.3 s stall)
        cases = [("unguarded invoke", 1, model.invoke),
                 ("ChatSmoothGuard.invoke", 11, guard.invoke),
                 ("ChatSmoothGuard.ainvoke", 11, lambda m, g=guard: asyncio.run(g.ainvoke(m))),
                 ("invoke, max_concurrency=4", 11, limited.invoke),
                 ("invoke, time_budget=1.5x", 11, budgeted.invoke)]
        for size in args.sizes:
            measure(mode, size, cases, args.repeats)
    print("x call: median / median of the unguarded call. Stages (medians, ms): perturb = drawing the noisy copies "
          "(core); gen+enc = re-encoding the copies + the concurrent calls; vote = embed, cluster, vote. dropped: "
          "failed candidates per request (late ones, under a budget); failed: requests below the quorum.")


if __name__ == "__main__":
    main()
