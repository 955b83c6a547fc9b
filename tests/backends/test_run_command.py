"""``smoothguard run`` through the CLI's main function, on saved tiny models."""

from __future__ import annotations

import json

import pytest
from fakes.tiny_models import tiny_qwen2_5_vl, tiny_qwen2_audio
from hf_cases import clip, image

from smoothguard.cli import main

ARGS = ["--device", "cpu", "--max-new-tokens", "8", "--n-samples", "3", "--seed", "0"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    png = root / "cat.png"
    png.write_bytes(image("qwen2_5_vl", seed=1).to_png_bytes())
    wav = root / "clip.wav"
    wav.write_bytes(clip(seed=1).to_wav_bytes("pcm16"))
    return {"qwen": tiny_qwen2_5_vl(root / "qwen"), "audio": tiny_qwen2_audio(root / "audio"), "png": png, "wav": wav}


def test_run_prints_answer_agreement_and_clusters(files, capsys):
    code = main(["run", "--model", str(files["qwen"]), "--prompt", "What is in the image?", "--image",
                 str(files["png"]), "--sigma", "0.2", *ARGS])
    out = capsys.readouterr().out
    assert code == 0
    assert "agreement: " in out and "of 3 candidates answered" in out and "clusters: " in out
    assert out.strip().splitlines()[0]  # the answer comes first


def test_run_json_is_result_to_dict(files, capsys):
    assert main(["run", "--model", str(files["qwen"]), "--prompt", "Describe.", "--image", str(files["png"]),
                 "--image", str(files["png"]), "--noise-space", "normalized", "--json", *ARGS]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["n_used"] == 3 and len(data["samples"]) == 3 and data["config"]["seed"] == 0
    assert data["answer"] in [s["answer"] for s in data["samples"]]


def test_run_audio(files, capsys):
    assert main(["run", "--model", str(files["audio"]), "--prompt", "What do you hear?", "--audio", str(files["wav"]),
                 "--json", *ARGS]) == 0
    assert json.loads(capsys.readouterr().out)["n_used"] == 3


def test_run_errors_are_reported_with_exit_status_2(files, tmp_path, capsys):
    assert main(["run", "--model", str(files["qwen"]), "--prompt", "Hi", *ARGS]) == 2
    assert "--image or --audio" in capsys.readouterr().err
    assert main(["run", "--model", str(tmp_path / "missing"), "--prompt", "Hi", "--image", str(files["png"]),
                 *ARGS]) == 2
    assert capsys.readouterr().err.startswith("smoothguard run: ")
    assert main(["run", "--model", str(files["qwen"]), "--prompt", "Hi", "--image", str(files["png"]),
                 "--sigma", "-1", *ARGS]) == 2
    assert "sigma" in capsys.readouterr().err
    assert main(["run", "--model", str(files["qwen"]), "--prompt", "Hi", "--audio", str(files["wav"]), *ARGS]) == 2
    assert "reads image, not audio" in capsys.readouterr().err


def test_run_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--model", "--prompt", "--image", "--audio", "--sigma", "--n-samples", "--seed", "--json",
                   "--device", "--dtype", "--max-new-tokens"):
        assert option in out


def test_model_paths_that_cannot_be_a_model_are_clear_errors(files, tmp_path, capsys, monkeypatch):
    """No hub-id message, network retry or traceback for a --model that names a local directory."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "models").mkdir()
    (tmp_path / "weights.bin").write_bytes(b"x")
    cases = {"": "is empty", str(tmp_path / "missing"): "no such directory", "./missing": "no such directory",
             "models/qwen": "no such directory", "empty": "no config.json", str(tmp_path / "empty"): "no config.json",
             "weights.bin": "a file, not a model directory"}
    for model, message in cases.items():
        assert main(["run", "--model", model, "--prompt", "Hi", "--image", str(files["png"]), *ARGS]) == 2, model
        err = capsys.readouterr().err
        assert err.startswith("smoothguard run: ") and message in err and "Traceback" not in err, (model, err)


def test_generation_kwargs_that_break_one_answer_per_candidate_are_refused():
    from smoothguard.backends import HFVisionLanguageModel
    from smoothguard.errors import ConfigError

    model, processor = tiny_model()
    with pytest.raises(ConfigError, match="num_return_sequences"):
        HFVisionLanguageModel(model, processor, generation_kwargs={"num_return_sequences": 2})
    with pytest.raises(ConfigError, match="did you mean 'min_new_tokens'"):
        HFVisionLanguageModel(model, processor, generation_kwargs={"min_new_token": 4})
    assert HFVisionLanguageModel(model, processor, generation_kwargs={"min_new_tokens": 2, "repetition_penalty": 1.0})


def tiny_model():
    from hf_cases import tiny

    return tiny("qwen2_5_vl")
