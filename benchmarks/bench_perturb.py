"""What making the noisy copies costs: drawing them (``make_variants`` for N = 11, one thread against the thread
pool), and writing one as PNG (our writer against PIL's), the two CPU costs of a guarded call to a remote model.

Expectation written before measuring: on the H200 machine ``perturb`` took 0.104 s of a guarded request
(bench_hf_gpu.py, one 448x448 image, 10 noisy copies = 6.0 M float32 normals). Drawing the normals dominates
(about 70% of it here; copying the result into a new ``Media`` most of the rest). numpy's generators release
the GIL, and each copy has its own generator, so a thread per copy should divide the time by about the number
of cores: close to 2x on this 2-core machine, 5-10x on a 16-core GPU host. Images of 64 px (the testbed) stay
below the pool's threshold and must not get slower.

PNG: PIL's writer tries five filters on every row (adaptive filtering) and then deflates; ours applies the "up"
filter and deflates with Huffman coding only (noisy rows hold few repeated strings to find). Expected from a quick
trial before writing this script: about 5x faster than PIL at level 1 (the writer we used before), with files no
larger than PIL's level 6, on a smooth image under the default noise (sigma 0.1, normalised: ~0.027 per pixel).

    python benchmarks/bench_perturb.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import io
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

    print(f"\nPNG of one noisy copy (smooth image, default sigma); median of {args.repeats}")
    print(f"{'image':>10} {'PIL level 1':>18} {'PIL level 6':>18} {'ours':>18} {'vs level 1':>11}")
    for side in (224, 512, 1024):
        y, x = np.mgrid[0:side, 0:side] / (side - 1)
        smooth = np.stack([0.3 + 0.4 * x, 0.3 + 0.4 * y, 0.5 + 0.1 * x * y], axis=-1).astype(np.float32)
        copy = make_variants([Media.image(smooth)], [1], entropy=0, image_std=std, audio_std=0.0)[0][0]
        pil = copy.to_pil()

        def pil_png(level, pil=pil):
            buf = io.BytesIO()
            pil.save(buf, "PNG", compress_level=level)
            return buf.getvalue()

        cells, times = [], []
        for encode in (lambda: pil_png(1), lambda: pil_png(6), copy.to_png_bytes):
            times.append(median_ms(encode, args.repeats))
            cells.append(f"{times[-1]:>6.1f} ms {len(encode()) / 1024:>5.0f} kB")
        print(f"{side:>6} px " + " ".join(f"{c:>18}" for c in cells) + f" {times[0] / times[2]:>10.1f}x")


if __name__ == "__main__":
    main()
