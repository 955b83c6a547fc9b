"""What a guarded request costs on a CPU, on a tiny random-weight Qwen2-VL: before and after the backend noise change.

Same four figures as ``bench_hf_gpu.py`` (which see), measured side by side in one run on a small model (text 256
wide, 4 layers; vision 64 wide, 2 layers; Qwen's 152k vocabulary) with exactly 32 new tokens per answer, fp32,
``--threads`` torch threads (default 1, so that a busy machine's other work does not stall the thread pool):

* undefended: one ``generate`` on the clean image;
* 11 sequential: one ``generate`` per noisy copy (copies drawn before the clock starts);
* guarded N=11, before: ``SmoothGuard(image_resize="none")``, the previous path: the guard draws the noise on the
  [0, 1] image at its source size (numpy, on the host) and the processor runs once per noisy copy;
* guarded N=11, after: the default path: the processor runs once on the clean image, the tensors are repeated
  11 times and the noise is added to ``pixel_values`` with torch generators on the model's device.

The source image is ``--size`` pixels square (default 224). The image processor resizes every image to at most
``--max-pixels`` (default 224 * 224), so the model sees a 224x224 image (64 image tokens) whatever the source
size, and the generate work is the same at every ``--size``: only what happens before the processor changes.

Expectation written before measuring (2026-12-05). On a CPU a tiny model's decoding step is mostly fixed per-step
overhead (Python, kernel launches, the 152k-way output layer), which a batch of 11 shares, so a guarded request
costs about 2-3x one undefended call rather than 11x; the sequential calls cost about 11x. At 224 px, before and
after should differ by little (a few tens of ms against ~2 s): the processor takes a few ms per 224 px copy and
the 11 noise draws about 20 ms, whether numpy draws them at the source or torch on ``pixel_values``. At 2048 px
the before path pays 10 noise draws of 2048x2048x3 (126 M normal values, about 1 s on 2 cores) and 11 processor
runs that each resize a 2048 px image (about 50 ms each), so about 1.5 s more than at 224 px; the after path
pays one processor run (about 50 ms) and the same noise as at 224 px, so it should cost about what it costs at
224 px, and about 1.5 s less than before.

    python benchmarks/bench_hf.py [--repeats 3] [--threads 1] [--size 224]
    python benchmarks/bench_hf.py --size 2048
"""

from __future__ import annotations

import argparse

import numpy as np
from bench_hf_gpu import FULL, build_backend, measure, new_tokens, resolve_embedder, table

SMALL = dict(
    text=dict(FULL["text"], hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=4096,
              rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [8, 12, 12]}),
    vision=dict(FULL["vision"], depth=2, embed_dim=64, hidden_size=256, num_heads=2, mlp_ratio=2),
    image=224, tokens=32,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--size", type=int, default=SMALL["image"],
                        help="the source image's width and height in pixels (default 224; try 2048)")
    parser.add_argument("--max-pixels", type=int, default=224 * 224,
                        help="the image processor's max_pixels: the model sees at most this many (default 224*224)")
    args = parser.parse_args()

    import torch

    from smoothguard import Media

    torch.set_num_threads(args.threads)
    backend = build_backend(SMALL, "cpu", torch.float32, max_pixels=args.max_pixels)
    embedder, note = resolve_embedder("auto")
    image = Media.image(np.random.default_rng(0).integers(0, 256, (args.size, args.size, 3), dtype=np.uint8))
    tokens = new_tokens(backend, image)
    (site,) = backend.noise_sites("", [image])
    report = measure(backend, image, repeats=args.repeats, embedder=embedder)
    params = sum(p.numel() for p in backend.model.parameters())
    seen = "x".join(map(str, site.drawn_at))
    print(f"Qwen2-VL tiny ({params / 1e6:.1f} M params, random weights), CPU fp32, {args.threads} thread(s), "
          f"{args.size}x{args.size} source image (the model sees {seen}), {tokens} new tokens per answer, "
          f"median of {args.repeats}; embedder: {note}")
    print(table(report))


if __name__ == "__main__":
    main()
