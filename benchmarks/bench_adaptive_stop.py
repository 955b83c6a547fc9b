"""Adaptive stop: false-stop rate and mean calls, the valid rule (through the guard) against the old one.

Streams of answers with known true shares are fed to ``SmoothGuard(adaptive=True).run`` (answers are JSON, so
they are grouped exactly and the measurement is about the rule, not the embedder). A *false stop* is an early
stop on a cluster whose true share is at most 1/2. The old rule (rounds of 5; stop when the Clopper-Pearson
lower bound at 0.95 of the leader's count among all answered candidates, the original included, exceeds 1/2)
is simulated on the same kind of streams for comparison; its code is gone from the library.

Expectation written before measuring: the new rule's worst case is two answers at exactly 1/2, where a stop
needs all 7 noisy candidates of the first round of 8 to agree: 2 * 0.5^7 = 1.6%, under the 5% it promises.
The old rule stops there in about 2 * 0.5^5 + (looks at 10) ~= 8% of requests. Clean inputs cost 8 calls now
against 5 before. Run: ``python benchmarks/bench_adaptive_stop.py [--trials 5000]`` (about 2 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from smoothguard import Media, SmoothGuard
from smoothguard.consensus import clopper_pearson_lower, look_schedule, stop_count

SPLITS: list[tuple[float, ...]] = [(1.0,), (0.95, 0.05), (0.8, 0.2), (0.6, 0.4), (0.5, 0.5), (0.5, 0.3, 0.2),
                                   (0.4, 0.3, 0.3), (1 / 3, 1 / 3, 1 / 3), (0.6, 0.2, 0.2)]


def run_guard(shares: tuple[float, ...], trials: int, seed: int, **settings) -> tuple[float, float, float]:
    """(false-stop rate, stop rate, mean calls) of the guard's adaptive mode on a stream with ``shares``."""
    rng = np.random.default_rng(seed)
    image = Media.image(np.zeros((8, 8, 3), np.uint8))
    guard = SmoothGuard(adaptive=True, seed=0, sigma=0.0, **settings)
    n = guard.config.n_samples

    def model(variants):
        return [json.dumps({"answer": int(rng.choice(len(shares), p=shares))}) for _ in variants]

    false = stops = calls = 0
    for _ in range(trials):
        result = guard.run([image], model)
        calls += result.n_used
        if result.n_used < n:
            stops += 1
            false += shares[json.loads(result.answer)["answer"]] <= 0.5
    return false / trials, stops / trials, calls / trials


def run_old(shares: tuple[float, ...], trials: int, seed: int, n: int = 11, step: int = 5) -> tuple[float, ...]:
    """The old rule, simulated: leader's count among all answers (original included), CP at 0.95 > 1/2."""
    rng = np.random.default_rng(seed)
    draws = rng.choice(len(shares), size=(trials, n), p=shares)
    false = stops = calls = 0
    for row in draws:
        used = n
        for end in range(step, n, step):
            counts = np.bincount(row[:end], minlength=len(shares))
            if clopper_pearson_lower(int(counts.max()), end, 0.95) > 0.5:
                used = end
                stops += 1
                false += shares[int(counts.argmax())] <= 0.5
                break
        calls += used
    return false / trials, stops / trials, calls / trials


def name(shares: tuple[float, ...]) -> str:
    return "/".join(f"{round(s, 2):g}" for s in shares)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    looks = look_schedule(11, 0.95, adaptive=True, adaptive_round=8)
    plan = ", ".join(f"{lk.calls} calls ({lk.noisy} noisy, alpha {lk.alpha:.3f}, "
                     f"{'bound > 1/2' if lk.final else 'stop'} from {stop_count(lk.noisy, lk.alpha)} agreeing)"
                     for lk in looks)
    print(f"defaults: n_samples 11, adaptive_round 8, include_original, confidence 0.95; looks: {plan}")
    print(f"{args.trials} requests per row; a false stop is an early stop on a cluster of true share <= 1/2\n")
    print("| true shares | false stops, now | stops, now | mean calls, now | false stops, old | stops, old "
          "| mean calls, old |")
    print("|---|---|---|---|---|---|---|")
    start = time.perf_counter()
    for k, shares in enumerate(SPLITS):
        new = run_guard(shares, args.trials, args.seed + k)
        old = run_old(shares, args.trials, args.seed + k)
        print(f"| {name(shares)} | {new[0]:.2%} | {new[1]:.1%} | {new[2]:.2f} | {old[0]:.2%} | {old[1]:.1%} "
              f"| {old[2]:.2f} |", flush=True)
    print(f"\n({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
