"""The core fan-out's own cost: smoothguard.fanout.FanOut against a bare pool, over a model of fixed latency.

Each guarded request asks N candidates of a fake model that sleeps LATENCY seconds (threads: time.sleep, tasks:
asyncio.sleep) and answers the same text. "bare" is ``guard.run`` / ``guard.arun`` with a hand-written generate
(a ThreadPoolExecutor map / a bounded asyncio.gather, no time budget, no notes); "FanOut" is the core fan-out
with its PNG-free default prepare. Both include the guard's own work (noise, embedding, vote), so the ratio is
what the fan-out adds. Median of REPEATS requests each.

    .venv/bin/python benchmarks/bench_fanout.py [--n 11] [--latency 0.2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import numpy as np

from smoothguard import Media, SmoothGuard
from smoothguard.fanout import FanOut

IMAGE = Media.image(np.random.default_rng(0).integers(0, 255, (224, 224, 3), dtype=np.uint8))


def bare_sync(guard: SmoothGuard, latency: float) -> None:
    def one(variant):
        time.sleep(latency)
        return "a cat"

    def generate(variants):
        with ThreadPoolExecutor(guard.config.max_concurrency or len(variants)) as pool:
            return list(pool.map(one, variants))

    guard.run([IMAGE], generate, lazy=True)


def fan_sync(guard: SmoothGuard, latency: float) -> None:
    def call(index, variant):
        time.sleep(latency)
        return "a cat"

    FanOut(guard, call=call).run([IMAGE])


async def bare_async(guard: SmoothGuard, latency: float) -> None:
    limit = asyncio.Semaphore(guard.config.max_concurrency or guard.config.n_samples)

    async def one(variant):
        async with limit:
            await asyncio.sleep(latency)
        return "a cat"

    async def generate(variants):
        return list(await asyncio.gather(*(one(v) for v in variants)))

    await guard.arun([IMAGE], generate, lazy=True)


async def fan_async(guard: SmoothGuard, latency: float) -> None:
    async def acall(index, variant):
        await asyncio.sleep(latency)
        return "a cat"

    await FanOut(guard, acall=acall).arun([IMAGE])


def _run(fn, guard: SmoothGuard, latency: float) -> None:
    asyncio.run(fn(guard, latency))


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=11)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    SmoothGuard().aggregate(["a cat", "a dog"])  # load the embedder first
    print(f"N={args.n}, model latency {args.latency:g} s, median of {args.repeats}; 224x224 image")
    print(f"| {'mode':5} | {'max_concurrency':>15} | {'ideal s':>7} | {'bare s':>7} | {'FanOut s':>8} | "
          f"{'FanOut/bare':>11} |")
    print("|---|---|---|---|---|---|")
    for limit in (None, 4):
        guard = SmoothGuard(n_samples=args.n, seed=0, max_concurrency=limit)
        ideal = args.latency * -(-args.n // (limit or args.n))
        rows = {
            "sync": (partial(bare_sync, guard, args.latency), partial(fan_sync, guard, args.latency)),
            "async": (partial(_run, bare_async, guard, args.latency), partial(_run, fan_async, guard, args.latency)),
        }
        for mode, (bare, fan) in rows.items():
            b, f = timed(bare, args.repeats), timed(fan, args.repeats)
            print(f"| {mode:5} | {limit!s:>15} | {ideal:7.2f} | {b:7.3f} | {f:8.3f} | {f / b:10.2f}x |")


if __name__ == "__main__":
    main()
