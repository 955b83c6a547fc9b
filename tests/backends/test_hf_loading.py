"""HFVisionLanguageModel.from_pretrained on saved tiny models; device/dtype errors; the light package import."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from fakes.tiny_models import BUILDERS
from hf_cases import PROMPT, backend, clip, image, tiny

from smoothguard.backends import HFAudioLanguageModel, HFVisionLanguageModel
from smoothguard.backends.device import resolve_device, resolve_dtype
from smoothguard.errors import ConfigError

STOCK = {"qwen2_5_vl": "Qwen2_5_VLProcessor", "qwen2_vl": "Qwen2VLProcessor", "smolvlm": "SmolVLMProcessor"}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """family -> directory of the saved tiny model (model + processor)."""
    root = tmp_path_factory.mktemp("tiny")
    return {name: build(root / name) for name, build in BUILDERS.items()}


def _media(name, seed=0):
    return [clip(seed=seed)] if name == "qwen2_audio" else [image(name, seed=seed)]


@pytest.mark.parametrize("name", list(BUILDERS))
def test_from_pretrained_round_trip(saved, name):
    loaded = HFVisionLanguageModel.from_pretrained(str(saved[name]), device="cpu", dtype="float32",
                                                   max_new_tokens=8, local_files_only=True)
    assert loaded.family.name == backend(name).family.name and loaded.model.dtype == torch.float32
    variants = [_media(name, seed) for seed in range(3)]
    assert loaded.generate(PROMPT, variants) == backend(name).generate(PROMPT, variants)
    assert loaded.pixel_std == backend(name).pixel_std


@pytest.mark.parametrize("name", sorted(STOCK))
def test_video_capable_processors_load_without_torchvision(saved, name):
    """Qwen2-VL, Qwen2.5-VL and SmolVLM processors need torchvision for their video processor; the directory
    names the stock class (so AutoProcessor works where torchvision is installed) and the image-only processor
    is used here."""
    config = json.loads((saved[name] / "processor_config.json").read_text())
    assert config["processor_class"] == STOCK[name]
    loaded = HFVisionLanguageModel.from_pretrained(str(saved[name]), device="cpu", max_new_tokens=8)
    assert type(loaded.processor).__name__ == f"ImageOnly{STOCK[name]}"
    assert loaded.processor.chat_template == tiny(name)[1].chat_template


def test_from_pretrained_with_an_explicit_processor(saved):
    processor = tiny("qwen2_vl")[1]
    loaded = HFVisionLanguageModel.from_pretrained(saved["qwen2_vl"], processor=processor, device="cpu",
                                                   max_new_tokens=8, noise_space="normalized", max_batch_size=2)
    assert loaded.processor is processor and loaded.noise_space == "normalized" and loaded.max_batch_size == 2


def test_audio_class_loads_audio_models_only(saved):
    audio = HFAudioLanguageModel.from_pretrained(saved["qwen2_audio"], device="cpu", max_new_tokens=8)
    assert isinstance(audio, HFAudioLanguageModel) and audio.family.name == "Qwen2-Audio"
    with pytest.raises(ConfigError, match="audio"):
        HFAudioLanguageModel.from_pretrained(saved["llava"], device="cpu")


def test_unknown_family_from_pretrained(tmp_path):
    from transformers import LlamaConfig

    LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                num_attention_heads=2).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match=r"'llama' is not supported.*Qwen2\.5-VL.*BLIP-2.*Qwen2-Audio"):
        HFVisionLanguageModel.from_pretrained(tmp_path, device="cpu")


def test_missing_directory_is_an_os_error(tmp_path):
    with pytest.raises(OSError):
        HFVisionLanguageModel.from_pretrained(str(tmp_path / "nope"), device="cpu", local_files_only=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_asked_for_but_absent(saved):
    with pytest.raises(ConfigError, match=r"asks for CUDA.*device='cpu'"):
        HFVisionLanguageModel.from_pretrained(saved["llava"], device="cuda")
    with pytest.raises(ConfigError, match="CUDA"):
        resolve_device("cuda:1")


def test_device_and_dtype_resolution():
    cpu = resolve_device("cpu")
    assert cpu.type == "cpu"
    assert resolve_device("auto").type in {"cpu", "cuda", "mps"}
    with pytest.raises(ConfigError, match="not a device"):
        resolve_device("gpu0")
    assert resolve_dtype("auto", cpu) == torch.float32
    assert resolve_dtype("bf16", cpu) == torch.bfloat16 and resolve_dtype("torch.float16", cpu) == torch.float16
    assert resolve_dtype(torch.float64, cpu) == torch.float64
    with pytest.raises(ConfigError, match="not supported"):
        resolve_dtype("float8", cpu)
    with pytest.raises(ConfigError, match="floating-point"):
        resolve_dtype(torch.int8, cpu)


def test_settings_are_checked_before_loading(tmp_path):
    for bad in ({"max_new_tokens": -1}, {"noise_space": "latent"}, {"dtype": "float8"}, {"device": "gpu0"}):
        with pytest.raises(ConfigError):
            HFVisionLanguageModel.from_pretrained(str(tmp_path / "nothing-here"), **bad)


def test_importing_backends_is_light():
    code = ("import sys, smoothguard.backends as b; "
            "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]; "
            "print(heavy, 'HFVisionLanguageModel' in dir(b))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[] True"
    import smoothguard.backends as backends

    assert backends.HFVisionLanguageModel is HFVisionLanguageModel
    with pytest.raises(AttributeError):
        backends.NoSuchBackend  # noqa: B018
