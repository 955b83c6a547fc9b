"""Target lists and CSV loading, the light import, and the ``smoothguard attack`` command."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from attack_cases import PROMPT, image

from smoothguard.attacks import DEFAULT_TARGETS, load_targets
from smoothguard.attacks.targets import normalize_targets
from smoothguard.cli import main
from smoothguard.errors import ConfigError


def test_load_targets_from_csv(tmp_path):
    plain = tmp_path / "corpus.csv"
    plain.write_text("Sure, here is\n\nYes.\nYes.\n", encoding="utf-8")
    assert load_targets(plain) == ["Sure", "Yes."]  # a comma splits cells: quote such targets
    quoted = tmp_path / "quoted.csv"
    quoted.write_text('target,weight\n"Sure, here is",1\nYes.,2\n', encoding="utf-8")
    assert load_targets(quoted) == ["Sure, here is", "Yes."]  # header recognised
    assert load_targets(quoted, "weight") == ["1", "2"]
    assert load_targets(quoted, 1) == ["weight", "1", "2"]
    with pytest.raises(ConfigError, match="no column 'goal'"):
        load_targets(quoted, "goal")
    empty = tmp_path / "empty.csv"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="empty"):
        load_targets(empty)
    with pytest.raises(ConfigError, match="cannot read"):
        load_targets(tmp_path / "missing.csv")
    assert len(DEFAULT_TARGETS) >= 5 and all(isinstance(t, str) and t for t in DEFAULT_TARGETS)


def test_normalize_targets():
    assert normalize_targets("Yes.", 2) == [["Yes."], ["Yes."]]
    assert normalize_targets(["a", "b"], 2) == [["a", "b"], ["a", "b"]]
    assert normalize_targets([["a"], ["b", "c"]], 2) == [["a"], ["b", "c"]]
    with pytest.raises(ConfigError, match="one list per prompt"):
        normalize_targets([["a"]], 2)
    with pytest.raises(ConfigError):
        normalize_targets([1, 2], 1)


def test_import_smoothguard_does_not_load_the_attacks():
    code = ("import sys, smoothguard, smoothguard.cli; assert 'smoothguard.attacks' not in sys.modules; "
            "import smoothguard.attacks, smoothguard.commands.attack; "
            "from smoothguard.attacks import load_targets, DEFAULT_TARGETS, AttackResult; "
            "assert 'torch' not in sys.modules, 'torch loaded'; "
            "from smoothguard.attacks import PGDAttack; assert 'torch' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_help_lists_attack(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["attack", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "--eot-samples" in out and "--targets-csv" in out and "--resume" in out


def test_cli_attack_writes_png_json_and_resumes(tmp_path, capsys):
    from fakes.tiny_models import tiny_llava

    from smoothguard import Media

    model_dir = tiny_llava(tmp_path / "llava")
    start = tmp_path / "clean.png"
    start.write_bytes(image("llava", seed=1).to_png_bytes())
    out = tmp_path / "adv.png"
    argv = ["attack", "--model", str(model_dir), "--image", str(start), "--prompt", PROMPT, "--target", "The",
            "--epsilon", "16", "--steps", "3", "--out", str(out), "--device", "cpu", "--max-new-tokens", "4",
            "--checkpoint-every", "2", "--quiet", "--json"]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["steps"] == 3 and len(first["loss_curve"]) == 3 and first["linf_255"] <= 16
    assert Media.image(out).width == 32 and first["state"] == str(out) + ".state.npz"
    argv[argv.index("--steps") + 1] = "5"
    assert main([*argv, "--resume"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["steps"] == 5 and second["loss_curve"][:3] == pytest.approx(first["loss_curve"])
    # a plain summary, and a clear error for a bad targets file
    assert main([*argv[:-1], "--steps", "0"]) == 0
    assert "wrote" in capsys.readouterr().out
    bad = [a if a != "--target" else "--targets-csv" for a in argv]
    bad[bad.index("--targets-csv") + 1] = str(tmp_path / "missing.csv")
    assert main(bad) == 2
    assert "cannot read the targets file" in capsys.readouterr().err


@pytest.mark.parametrize(("epsilon", "message"), [("0.06", "did you mean 15.3"), ("300", "outside 1-255"),
                                                  ("0", "outside 1-255"), ("sixteen", "expected a number")])
def test_cli_attack_epsilon_is_in_levels_and_library_units_are_refused(tmp_path, capsys, epsilon, message):
    argv = ["attack", "--model", "testbed", "--image", str(tmp_path / "x.png"), "--prompt", PROMPT, "--target", "The",
            "--epsilon", epsilon, "--out", str(tmp_path / "adv.png")]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
