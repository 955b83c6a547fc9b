"""``SmoothGuard.certify`` on the shipped testbed: certified L2 radii of clean questions (CPU).

For ``--questions`` generated questions (question kinds cycling yes/no, colour, count, describe; fresh images
from ``make_example`` with ``--seed``), run Cohen et al.'s CERTIFY through the testbed backend (the noise is
added to the model's ``pixel_values`` at 64x64, sigma in CLIP-normalised units): ``n0`` selection
candidates, ``n`` estimation candidates, level ``alpha``. Prints one row per question and a summary.

Expectation written before measuring: the testbed was trained with pixel noise up to std 0.06 (sigma ~0.22),
so at sigma 0.25 most clean questions should keep all or nearly all n = 1,000 answers in one cluster; then
``p_lower`` is at most ``alpha^(1/n)`` = 0.9931 and the radius at most ``0.25 * Phi^-1(0.9931)`` = 0.62
(normalised units; about 0.16 in [0, 1] pixels), the ceiling set by n, not by the model. Questions that
split abstain. On a busy 2-core CPU about 20 s per question at n = 1,000.
Run: ``nice -n 5 python benchmarks/bench_certify_testbed.py [--questions 20] [--n 1000] [--sigma 0.25]``.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from smoothguard import Media, SmoothGuard
from smoothguard.config import CLIP_STD
from smoothguard.testbed import load_testbed, make_example

KINDS = ("yesno", "colour", "count", "describe")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=20)
    parser.add_argument("--n0", type=int, default=10)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--alpha", type=float, default=0.001)
    parser.add_argument("--sigma", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    backend = load_testbed(max_new_tokens=24, max_batch_size=args.batch_size)
    guard = SmoothGuard(sigma=args.sigma, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    print(f"testbed main, sigma {args.sigma} (normalised units), n0 {args.n0}, n {args.n}, alpha {args.alpha}; "
          f"the largest radius n allows: {args.sigma * _ppf(args.alpha ** (1 / args.n)):.3f}\n")
    print("| # | kind | question | expected | certified answer | in cluster / n | p_lower | radius | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows, start = [], time.perf_counter()
    for q in range(args.questions):
        example = make_example(rng, kind=KINDS[q % len(KINDS)])
        t0 = time.perf_counter()
        result = guard.certify(backend, example.question, images=[Media.image(example.image)], n0=args.n0, n=args.n,
                               alpha=args.alpha, batch_size=args.batch_size)
        seconds = time.perf_counter() - t0
        answer = "abstain" if result.abstained else result.answer
        print(f"| {q} | {example.kind} | {example.question} | {example.answer} | {answer} | {result.count}/{result.n} "
              f"| {result.p_lower:.4f} | {result.radius:.3f} | {seconds:.0f} |", flush=True)
        rows.append({"question": example.question, "kind": example.kind, "expected": example.answer,
                     "seconds": seconds, **result.to_dict()})
    certified = [r for r in rows if not r["abstained"]]
    right = [r for r in certified if r["answer"] == r["expected"]]
    radii = np.array([r["radius"] for r in certified]) if certified else np.zeros(1)
    print(f"\ncertified {len(certified)}/{len(rows)} (correct answer {len(right)}, abstained "
          f"{len(rows) - len(certified)}); radius median {np.median(radii):.3f}, min {radii.min():.3f}, max "
          f"{radii.max():.3f} (normalised units; x min CLIP std {min(CLIP_STD):.4f} = "
          f"{np.median(radii) * min(CLIP_STD):.3f} median in [0, 1] pixels); {time.perf_counter() - start:.0f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


def _ppf(p: float) -> float:
    from scipy.special import ndtri

    return float(ndtri(p))


if __name__ == "__main__":
    main()
