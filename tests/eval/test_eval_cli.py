"""``smoothguard eval`` end to end with the scripted oracle, its errors, and light imports."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from smoothguard.commands import eval as eval_command


def test_pope_then_report(tmp_path, standin, capsys):
    out = tmp_path / "pope"
    argv = ["pope", "--model", "oracle", "--data", str(standin["pope"]), "--out", str(out), "--sigma", "0", "0.1",
            "--n-samples", "3", "--limit", "6", "--sample-seed", "3", "--no-progress",
            "--prompt-suffix", "\\nAnswer the question using a single word or phrase."]
    assert eval_command.main(argv) == 0
    printed = capsys.readouterr().out
    assert "| 0 (undefended) | 1 |" in printed and "summary.json" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "oracle" and summary["n_items"] == 6
    assert [(r["sigma"], r["n_samples"]) for r in summary["runs"]] == [(0.0, 1), (0.1, 3)]
    recs = [json.loads(line) for line in (out / "answers.jsonl").open()]
    assert len({r["id"].split("/")[0] for r in recs}) > 1  # a seeded sample across splits, not the first 6
    assert all(r["prompt"].endswith("?\nAnswer the question using a single word or phrase.") for r in recs)
    assert summary["runs"][0]["metrics"]["accuracy"] == 1.0

    mms = tmp_path / "mms"
    assert eval_command.main(["mmsafety", "--model", "oracle", "--data", str(standin["mmsafety"]), "--out", str(mms),
                              "--sigma", "0", "--image-type", "SD", "--json", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["judge"] == "keyword" and summary["runs"][0]["metrics"]["asr"] == 0.0

    assert eval_command.main(["report", str(out), str(mms), "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert "## pope" in (tmp_path / "report" / "report.md").read_text()


def test_make_data(tmp_path, capsys):
    assert eval_command.main(["make-data", str(tmp_path / "d")]) == 0
    assert {"pope", "mmsafety", "llavabench"} <= {p.name for p in (tmp_path / "d").iterdir()}
    assert (tmp_path / "d" / "llavabench" / "answers_gpt4.jsonl").is_file()


@pytest.mark.parametrize(("argv", "message"), [
    (["pope", "--model", "testbed"], "testbed model 'main' has not been trained in this installation"),
    (["mmsafety", "--model", "oracle", "--judge", "gpt"], "--judge must be keyword or openai:MODEL"),
    (["llavabench", "--model", "oracle", "--judge", "keyword"], "--judge must be overlap or openai:MODEL"),
    (["pope", "--model", "oracle", "--sigma", "-1"], "sigma must be"),
])
def test_usage_errors_exit_2(tmp_path, standin, capsys, monkeypatch, argv, message):
    monkeypatch.setenv("SMOOTHGUARD_TESTBED_WEIGHTS", str(tmp_path / "no-weights"))  # as if none were shipped
    bench = argv[0]
    argv = [*argv, "--data", str(standin[bench]), "--out", str(tmp_path / "o"), "--no-progress"]
    assert eval_command.main(argv) == 2
    assert message in capsys.readouterr().err


def test_missing_data_exit_2(tmp_path, capsys):
    assert eval_command.main(["llavabench", "--model", "oracle", "--data", str(tmp_path), "--out",
                              str(tmp_path / "o")]) == 2
    assert "questions.jsonl" in capsys.readouterr().err


def test_registers_like_the_other_subcommands():
    parser = argparse.ArgumentParser(prog="smoothguard")
    eval_command.configure(parser.add_subparsers(dest="command").add_parser("eval"))
    args = parser.parse_args(["eval", "pope", "--model", "m", "--data", "d", "--out", "o"])
    assert args.func is eval_command.run and args.sigma == [0.0, 0.1, 0.15, 0.2] and args.n_samples == 11
    with pytest.raises(SystemExit):
        parser.parse_args(["eval"])  # a benchmark is required


def test_imports_stay_light():
    code = ("import sys, smoothguard; assert 'smoothguard.eval' not in sys.modules; import smoothguard.eval; "
            "from smoothguard.eval import read_pope, pope_metrics; "
            "heavy = [m for m in ('torch', 'matplotlib', 'langchain_core', 'sentence_transformers', 'transformers') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
