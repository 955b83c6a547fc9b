"""What a guarded request costs on a CPU, on a tiny random-weight Qwen2-VL: N=11 batched vs 11 sequential vs 1.

Same three figures as ``bench_hf_gpu.py`` (which see), measured in one run on a small model (text 256 wide,
4 layers; vision 64 wide, 2 layers; Qwen's 152k vocabulary), a 224x224 image (64 image tokens) and exactly 32 new
tokens per answer, fp32, ``--threads`` torch threads (default 1, so that a busy machine's other work does not
stall the thread pool).

Expectation written before measuring: on a CPU a tiny model's decoding step is mostly fixed per-step overhead
(Python, kernel launches, the 152k-way output layer), which a batch of 11 shares, so the guarded request should
cost about 2-3x one undefended call rather than 11x; the sequential calls should cost about 11x.

    python benchmarks/bench_hf.py [--repeats 3] [--threads 1]
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
    args = parser.parse_args()

    import torch

    from smoothguard import Media

    torch.set_num_threads(args.threads)
    backend = build_backend(SMALL, "cpu", torch.float32)
    embedder, note = resolve_embedder("auto")
    image = Media.image(np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8))
    tokens = new_tokens(backend, image)
    report = measure(backend, image, repeats=args.repeats, embedder=embedder)
    params = sum(p.numel() for p in backend.model.parameters())
    print(f"Qwen2-VL tiny ({params / 1e6:.1f} M params, random weights), CPU fp32, {args.threads} thread(s), "
          f"224x224 image, {tokens} new tokens per answer, median of {args.repeats}; embedder: {note}")
    print(table(report))


if __name__ == "__main__":
    main()
