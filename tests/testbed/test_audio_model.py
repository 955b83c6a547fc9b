"""The audio testbed model: a real Qwen2-Audio built from a config, its processor, export, loading and trainer."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from smoothguard import Media
from smoothguard.errors import ConfigError
from smoothguard.testbed.audio_data import SAMPLE_RATE, audio_texts, make_audio_example
from smoothguard.testbed.audio_model import (
    AUDIO_SPECIAL_TOKENS,
    audio_prompt_text,
    build_audio_model,
    build_audio_processor,
    build_audio_tokenizer,
    save_audio_testbed,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def parts():
    tok = build_audio_tokenizer()
    return tok, build_audio_processor(tok), build_audio_model("audio", tok)


def test_tokenizer_knows_the_task(parts):
    tok, _, _ = parts
    assert [tok.convert_tokens_to_ids(t) for t in AUDIO_SPECIAL_TOKENS] == list(range(len(AUDIO_SPECIAL_TOKENS)))
    for text in audio_texts():
        words = text.replace(".", " ").replace("?", " ").split()
        assert len(tok.tokenize(text)) <= len(words) + 1, text  # a token per word, plus the full stop


def test_real_qwen2_audio_with_whisper_front_end(parts):
    from transformers import Qwen2AudioForConditionalGeneration, Qwen2AudioProcessor, WhisperFeatureExtractor

    tok, processor, model = parts
    assert isinstance(model, Qwen2AudioForConditionalGeneration) and isinstance(processor, Qwen2AudioProcessor)
    assert isinstance(processor.feature_extractor, WhisperFeatureExtractor)
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    clip = make_audio_example(np.random.default_rng(0)).clip
    inputs = processor(text=[audio_prompt_text("Is the tone high or low?")], audio=[clip.wave],
                       sampling_rate=SAMPLE_RATE, return_tensors="pt")
    assert inputs["input_features"].shape == (1, 40, 200)  # 40 mel bins, 2 s of 10 ms frames
    assert int((inputs["input_ids"] == tok.convert_tokens_to_ids("<|AUDIO|>")).sum()) == 37  # 1.5 s, 40 ms a token
    out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]


def test_chat_template_is_question_first(parts):
    _, processor, _ = parts
    from smoothguard.backends.families import family_for

    family = family_for("qwen2_audio")
    assert family.prompt(processor, "How many beeps are there?", 1) == audio_prompt_text("How many beeps are there?")


def test_export_loads_as_audio_backend(parts, tmp_path, monkeypatch):
    from smoothguard.backends import HFAudioLanguageModel
    from smoothguard.testbed import load_testbed, weights_available

    _, processor, model = parts
    save_audio_testbed(model, processor, tmp_path / "audio", "audio", {"untrained": True})
    info = json.loads((tmp_path / "audio" / "testbed.json").read_text())
    assert info["kind"] == "audio" and info["untrained"]
    monkeypatch.setenv("SMOOTHGUARD_TESTBED_WEIGHTS", str(tmp_path))
    assert weights_available("audio")
    backend = load_testbed("audio", max_new_tokens=4)
    assert isinstance(backend, HFAudioLanguageModel) and backend.family.name == "Qwen2-Audio"
    clip = Media.audio(make_audio_example(np.random.default_rng(1)).clip.wave, sample_rate=SAMPLE_RATE)
    [answer] = backend.generate("Is there a high tone?", [[clip]])
    assert isinstance(answer, str)
    # the fp16 export, reloaded in fp32, is the model (to fp16 precision)
    reloaded = backend.model.state_dict()
    for name, value in model.state_dict().items():
        assert torch.allclose(reloaded[name], value.half().float()), name


def test_missing_audio_weights_say_how_to_train(tmp_path, monkeypatch):
    from smoothguard.testbed import load_testbed

    monkeypatch.setenv("SMOOTHGUARD_TESTBED_WEIGHTS", str(tmp_path))
    with pytest.raises(ConfigError, match=r"training/audio_train\.py"):
        load_testbed("audio")


def _trainer():
    spec = importlib.util.spec_from_file_location("audio_train", ROOT / "training" / "audio_train.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("audio_train", module)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_trainer_resumes_exactly(tmp_path):
    train = _trainer()
    common = ["--steps", "4", "--batch-size", "8", "--eval-every", "2", "--eval-examples", "4", "--eval-sigmas", ""]
    assert train.main(["--out", str(tmp_path / "straight"), *common]) == 0
    assert train.main(["--out", str(tmp_path / "paused"), *common, "--time-limit", "1e-9"]) == 3  # stops at step 1
    assert torch.load(tmp_path / "paused" / "checkpoint.pt", weights_only=False)["state"]["step"] == 1
    assert train.main(["--out", str(tmp_path / "paused"), *common, "--resume"]) == 0
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "paused" / "checkpoint.pt", weights_only=False)
    assert a["state"]["step"] == b["state"]["step"] == 4
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name]), name
    metrics = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    assert set(metrics["greedy"]["clean"]) >= {"count", "pitch", "yesno"} and len(metrics["curve"]) == 2
    assert (tmp_path / "straight" / "model" / "model.safetensors").is_file()


def test_cli_kinds_and_media_are_checked(capsys):
    from smoothguard.cli import main

    assert main(["demo", "--audio", "--kind", "colour"]) == 2
    assert "choose from count, pitch, yesno" in capsys.readouterr().err
    assert main(["demo", "--kind", "pitch"]) == 2
    assert "choose from yesno, colour, count, describe" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["attack", "--model", "testbed:audio", "--prompt", "x", "--target", "y", "--out", "x.wav"])
    assert "one of the arguments --image --audio is required" in capsys.readouterr().err
