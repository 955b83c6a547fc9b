"""Latency of ``aggregate()`` for 11 answers of about 40 words, and the embedder's load time (CPU).

Expectation written before measuring: embedding dominates. 11 answers x ~45 tokens through MiniLM-L6
(~21 MFLOP per token) is ~10 GFLOP, ~50-90 ms on 2 cores in fp32, so 11 *distinct* answers will miss a 25 ms
target; k-means (n_init=10) should cost ~4 ms and VADER ~1 ms. Under small noise most candidates repeat an
answer, and the embedder embeds each distinct text once and caches recent ones, so the common cases should
be far cheaper. Run: ``make bench`` or ``python benchmarks/bench_aggregate.py [--repeats 30]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from smoothguard import GuardConfig
from smoothguard.aggregate import aggregate
from smoothguard.aggregate.cluster import cluster_embeddings
from smoothguard.aggregate.embed import Embedder
from smoothguard.aggregate.vote import sentiment_scores

SUBJECTS = ["brown dog", "grey cat", "red bicycle", "small boat", "yellow kite", "white horse", "old tractor",
            "green parrot", "blue car", "black umbrella", "wooden chair"]
TEMPLATE = ("The image shows a {s} standing in the middle of a quiet park on a sunny afternoon. Behind it there "
            "are tall trees, a narrow path and a few people walking slowly, while soft light falls across the "
            "grass and the benches nearby.")


def answers_distinct() -> list[str]:
    return [TEMPLATE.format(s=s) for s in SUBJECTS]


def answers_typical() -> list[str]:
    """What 11 greedy candidates under small noise usually look like: 3 distinct answers."""
    a = answers_distinct()
    return [a[0]] * 8 + [a[1]] * 2 + [a[2]]


def timed(fn, repeats: int, before=None) -> np.ndarray:
    out = []
    for _ in range(repeats):
        if before:
            before()
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return np.array(out) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()

    embedder = Embedder()
    start = time.perf_counter()
    _ = embedder.model
    load_s = time.perf_counter() - start
    config = GuardConfig(seed=0)
    words = np.mean([len(a.split()) for a in answers_distinct()])

    def run(answers):
        return lambda: aggregate(answers, config, embedder=embedder)

    for _ in range(3):  # warm-up: first calls pay for lazy imports and allocator growth
        embedder.clear_cache()
        run(answers_distinct())()
    rows = [
        ("11 distinct answers, cold cache", timed(run(answers_distinct()), args.repeats, embedder.clear_cache)),
        ("11 answers, 3 distinct, cold cache", timed(run(answers_typical()), args.repeats, embedder.clear_cache)),
        ("11 distinct answers, cached", timed(run(answers_distinct()), args.repeats)),
        ("11 identical answers (no embedding)", timed(run(answers_distinct()[:1] * 11), args.repeats)),
    ]
    vectors = embedder.encode(answers_distinct())
    parts = [
        ("  embed only (11 distinct)", timed(lambda: embedder.encode(answers_distinct()), args.repeats,
                                             embedder.clear_cache)),
        ("  k-means only (k=2, n_init=10)", timed(lambda: cluster_embeddings(vectors, seed=0), args.repeats)),
        ("  VADER + refusals only", timed(lambda: sentiment_scores(answers_distinct()), args.repeats)),
    ]
    base = np.median(rows[0][1])
    print(f"Embedder load (all-MiniLM-L6-v2, packaged copy, CPU): {load_s:.2f} s")
    print(f"aggregate() on 11 answers of ~{words:.0f} words, {args.repeats} runs after warm-up; "
          "target median <= 25 ms\n")
    print(f"| {'case':40s} | median ms | p90 ms | vs distinct |")
    print(f"|{'-' * 42}|-----------|--------|-------------|")
    for name, ms in rows + parts:
        median, p90 = np.median(ms), np.percentile(ms, 90)
        print(f"| {name:40s} | {median:9.1f} | {p90:6.1f} | {median / base:10.2f}x |")


if __name__ == "__main__":
    main()
