"""``smoothguard demo``: the mechanics end to end on an UNTRAINED testbed (gibberish answers), and the missing-weights
error. With trained weights installed, one more test runs the real thing (``smoothguard demo`` as shipped)."""

import json
import struct
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from smoothguard.cli import main
from smoothguard.commands import demo
from smoothguard.testbed import weights_available
from smoothguard.testbed.shipped import WEIGHTS_ENV

FAST = ["--attack-steps", "2", "--max-new-tokens", "4", "--n-samples", "5"]


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_demo_table_and_save_dir(untrained_weights, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv(WEIGHTS_ENV, str(untrained_weights))
    out = tmp_path / "demo"
    assert main(["demo", "--n", "2", "--seed", "1", "--save-dir", str(out), *FAST]) == 0
    text = capsys.readouterr().out
    assert text.startswith("SmoothGuard demo: testbed 'main' (LLaVA-1.5, cpu), seed 1")
    assert "minimal targeted PGD, epsilon 16/255" in text and "guard: sigma 0.2, 5 candidates" in text
    for line in ("  clean ", "  attacked ", "  SmoothGuard "):
        assert text.count(line) == 2
    assert "Is there a " in text and "What colour is the " in text and "expected: " in text
    assert "not reached in" in text or "reached in" in text
    assert "\x00" not in text  # control characters are escaped
    names = sorted(p.name for p in out.iterdir())
    assert names == ["demo.png", "example-1-attacked.png", "example-1-clean.png", "example-1-guard-copy.png",
                     "example-2-attacked.png", "example-2-clean.png", "example-2-guard-copy.png", "results.json"]
    width, height = _png_size(out / "demo.png")
    assert width >= 800 and height >= 500
    with Image.open(out / "demo.png") as figure:
        figure.verify()
    for name in names:
        if name.startswith("example-"):
            assert Image.open(out / name).size == (64, 64)
    results = json.loads((out / "results.json").read_text())
    assert results["files"]["figure"] == str(out / "demo.png") and len(results["examples"]) == 2
    assert results["examples"][0]["files"]["perturbed"] == "example-1-attacked.png"
    # the guard copy is the attacked image plus the guard's noise: sigma 0.2 x CLIP std (~0.27), in 8-bit levels
    attacked = np.asarray(Image.open(out / "example-1-attacked.png"), dtype=np.float32)
    copy = np.asarray(Image.open(out / "example-1-guard-copy.png"), dtype=np.float32)
    assert 0.7 < np.std(copy - attacked) / (0.2 * 0.27 * 255) < 1.3


def test_demo_json_with_noise(untrained_weights, monkeypatch, capsys):
    monkeypatch.setenv(WEIGHTS_ENV, str(untrained_weights))
    assert main(["demo", "--json", "--n", "1", "--kind", "count", "--attack", "noise", "--sigma", "0.1", *FAST]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["perturbation"] == {"kind": "noise", "sigma": 0.5}
    assert report["guard"] == {"sigma": 0.1, "n_samples": 5, "seed": 0}
    (row,) = report["examples"]
    assert row["kind"] == "count" and row["question"] == "How many shapes are there?"
    assert row["expected"] in ("There is 1 shape.", "There are 2 shapes.", "There are 3 shapes.")
    assert len(row["shapes"]) in (1, 2, 3)
    guarded = row["guarded"]
    assert sum(guarded["clusters"]) == 5 == guarded["n_used"] and 0 < guarded["agreement"] <= 1
    assert guarded["result"]["answer"] == guarded["answer"]
    assert set(report["summary"]) >= {"n", "clean_correct", "perturbed_correct", "guarded_correct", "flagged"}
    assert "attack_success" not in report["summary"]


def test_demo_takes_a_testbed_directory_as_model(untrained_weights, capsys):
    assert main(["demo", "--model", str(untrained_weights / "main"), "--n", "1", "--kind", "yesno", *FAST]) == 0
    text = capsys.readouterr().out
    assert f"testbed model at {untrained_weights / 'main'}" in text and "attacked" in text  # testbed: PGD by default


def test_demo_on_another_model_uses_noise_by_default(tmp_path, capsys):
    """A real model's directory (here a tiny random Qwen2.5-VL): strong random noise unless --attack is given."""
    from fakes.tiny_models import tiny_qwen2_5_vl

    path = tiny_qwen2_5_vl(tmp_path / "qwen")
    args = ["demo", "--model", str(path), "--device", "cpu", "--image-size", "56", "--n", "1", "--kind", "yesno",
            "--json", *FAST]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["family"] == "Qwen2.5-VL" and report["perturbation"]["kind"] == "noise"
    assert report["image_size"] == 56 and report["examples"][0]["guarded"]["n_used"] == 5
    assert main([*args, "--attack"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["perturbation"]["kind"] == "pgd" and report["examples"][0]["perturbed"]["steps"] <= 2


def test_missing_weights_exit_2_with_the_message(tmp_path):
    env = {**__import__("os").environ, WEIGHTS_ENV: str(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "smoothguard.cli", "demo"], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("smoothguard demo: the SmoothGuard testbed model 'main' has not been trained")
    assert "train_gpu.sh" in r.stderr and "--init-from" in r.stderr and "Traceback" not in r.stderr


def test_usage_errors_exit_2(capsys):
    assert main(["demo", "--n", "0"]) == 2
    assert "--n must be at least 1" in capsys.readouterr().err


def test_wrong_answers_and_scoring():
    from smoothguard.testbed import make_example
    from smoothguard.testbed.data import KINDS

    assert demo.KINDS == KINDS
    rng, pick = np.random.default_rng(0), np.random.default_rng(1)
    for kind in KINDS * 5:
        example = make_example(rng, kind=kind)
        target = demo.wrong_answer(example, pick)
        assert target != example.answer and not demo.is_correct(target, example.answer, kind)
        assert demo.is_correct(example.answer, example.answer, kind)
    assert demo.is_correct("Yes, there is a red circle.", "Yes.", "yesno")
    assert not demo.is_correct("No", "Yes.", "yesno")
    assert demo.is_correct("It is green.", "The circle is green.", "colour")
    assert not demo.is_correct("Green or blue.", "The circle is green.", "colour")
    assert demo.is_correct("I count three shapes.", "There are 3 shapes.", "count")
    assert demo.is_correct("a red circle and a blue square", "A red circle and a blue square.", "describe")


def test_command_module_is_light():
    code = ("import sys\nfrom smoothguard.cli import build_parser\nbuild_parser().parse_args(['demo', '--attack'])\n"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'\n"
            "assert 'matplotlib' not in sys.modules, 'heavy import'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


@pytest.mark.skipif(not weights_available(), reason="the testbed has not been trained in this installation "
                    "(bash training/train_gpu.sh, then unpack main.tar into testbed/weights/)")
def test_shipped_demo(capsys):
    """The real thing: ``smoothguard demo`` on the shipped weights; the clean answers are right."""
    assert main(["demo", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["perturbation"]["kind"] == "pgd" and report["summary"]["n"] == 3
    assert report["summary"]["clean_correct"] >= 2
    print(f"smoothguard demo: {report['elapsed_s']:.1f} s, summary {report['summary']}")


@pytest.mark.skipif(not weights_available("surrogate"), reason="the surrogate testbed is not installed")
def test_demo_on_the_shipped_surrogate(capsys):
    """``--model testbed:surrogate``: the second shipped model, attacked with PGD like main."""
    assert main(["demo", "--model", "testbed:surrogate", "--n", "2", "--kind", "count", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"] == "testbed 'surrogate'" and report["perturbation"]["kind"] == "pgd"
    assert report["summary"]["clean_correct"] >= 1  # count: 98% held-out
