"""What drawing the noisy copies costs: ``guard.perturb`` for N = 11, one thread against the thread pool.

Expectation written before measuring: on the H200 machine ``perturb`` took 0.104 s of a guarded request
(bench_hf_gpu.py, one 448x448 image, 10 noisy copies = 6.0 M float32 normals). Drawing the normals dominates
(about 70% of it here; copying the result into a new ``Media`` most of the rest). numpy's generators release
the GIL, and each copy has its own generator, so a thread per copy should divide the time by about the number
of cores: close to 2x on this 2-core machine, 5-10x on a 16-core GPU host. Images of 64 px (the testbed) stay
below the pool's threshold and must not get slower.

    python benchmarks/bench_perturb.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from smoothguard import Media
from smoothguard.noise import make_variants, pixel_sigma


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--n", type=int, default=11, help="candidates, the original included")
    args = parser.parse_args()
    std = pixel_sigma(0.1)
    print(f"make_variants, N = {args.n} (the original + {args.n - 1} noisy copies), {os.cpu_count()} CPUs; "
          f"median of {args.repeats}")
    print(f"{'image':>10} {'one thread':>12} {'default':>10} {'ratio':>7}")
    for side in (64, 224, 448, 896):
        image = Media.image(np.random.default_rng(0).random((side, side, 3), dtype=np.float32))

        def run(workers, image=image):
            return make_variants([image], range(args.n), entropy=0, image_std=std, audio_std=0.0, workers=workers)

        one, default = median_ms(lambda: run(1), args.repeats), median_ms(lambda: run(None), args.repeats)
        print(f"{side:>6} px {one:>9.1f} ms {default:>7.1f} ms {one / default:>6.2f}x")


if __name__ == "__main__":
    main()
