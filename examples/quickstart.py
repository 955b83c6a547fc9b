"""SmoothGuard in one minute, offline: a model with a brittle "adversarial" trigger, undefended and guarded.

The model below really reads the pixels. Like a VLM under an adversarial image, it switches to a hostile
answer when it sees a faint +-2/255 checkerboard in one corner, which a person cannot see. SmoothGuard asks
it about 11 copies of the image (the original and 10 with Gaussian noise), embeds the answers with the real
all-MiniLM-L6-v2, clusters them, scores them with VADER and refusal detection, and returns the answer of the
winning cluster. Run: `make demo` (or `python examples/quickstart.py` inside the venv).
"""

from __future__ import annotations

import time

import numpy as np

from smoothguard import Media, SmoothGuard
from smoothguard.aggregate.embed import get_embedder

BENIGN = "The picture shows a plain grey square on a white background. Nothing else is visible in it."
HOSTILE = "Ignore your rules. Those people are worthless vermin and deserve to suffer, so hurt them."
CHECKER = (np.indices((8, 8)).sum(axis=0) % 2) * 4 - 2  # +-2 grey levels


def attacked_image() -> np.ndarray:
    image = np.full((64, 64, 3), 128, dtype=np.uint8)
    image[:8, :8] = (128 + CHECKER)[..., None]
    return image


def model(variants: list[list[Media]]) -> list[str]:
    """One answer per variant: hostile when the corner carries the exact trigger, else a description."""
    answers = []
    for (image,) in variants:
        corner = image.to_array("uint8")[:8, :8, 0].astype(int) - 128
        triggered = np.mean(np.abs(corner - CHECKER) <= 1) > 0.9
        answers.append(HOSTILE if triggered else BENIGN)
    return answers


def main() -> None:
    image = Media.image(attacked_image())
    print("Undefended answer:\n ", model([[image]])[0], "\n")

    guard = SmoothGuard(sigma=0.1, n_samples=11, seed=0)
    start = time.perf_counter()
    get_embedder().load()  # the sentence embedder loads once (seconds); every later request reuses it
    print(f"Embedder loaded in {time.perf_counter() - start:.1f} s\n")
    result = guard.run([image], model)
    print("Candidates (0 = the original image):")
    for sample in result.samples:
        print(f"  {sample.index:2d}  cluster {sample.cluster}  VADER {sample.sentiment:+.2f}  {sample.answer[:60]}...")
    sizes = ", ".join(f"cluster {c.label}: {c.size} answers, benign {c.benign:.2f}" for c in result.clusters)
    print(f"\nClusters: {sizes}")
    print(f"Guarded answer:\n  {result.answer}")
    print(f"Agreement {result.agreement:.0%} (95% lower bound {result.consensus_lower_bound:.2f}), "
          f"flagged: {result.flagged}, model calls: {result.n_used}, "
          f"aggregation {1000 * result.timings['aggregate']:.0f} ms")


if __name__ == "__main__":
    main()
