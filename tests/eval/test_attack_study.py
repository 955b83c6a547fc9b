"""The attack study (``smoothguard eval attacks``) on untrained testbed models with tiny budgets: the mechanics
(every attack, resume without attacking again, tables, plots, CLI). Efficacy numbers need the trained testbed;
they are produced by the efficacy report's command, not asserted here."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

from smoothguard.eval import ATTACKS, AttackStudy, read_pope
from smoothguard.eval.attack_study import negatives

pytest.importorskip("torch")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def models():
    """Untrained main and surrogate testbed backends (their answers are gibberish: mechanics only)."""
    from smoothguard.backends import HFVisionLanguageModel
    from smoothguard.testbed import build_model, build_processor, build_tokenizer

    tokenizer = build_tokenizer()
    return [HFVisionLanguageModel(build_model(name, tokenizer), build_processor(tokenizer, name), max_new_tokens=4)
            for name in ("main", "surrogate")]


TINY = AttackStudy(epsilons=(8,), sigmas=(0.2,), steps=2, eot_samples=2, n_samples=3, adaptive_sigmas=(0.2,))


def test_settings_are_validated():
    with pytest.raises(ValueError, match="attacks must be among"):
        AttackStudy(attacks=("fgsm",))
    with pytest.raises(ValueError, match="8-bit levels"):
        AttackStudy(epsilons=(0.03,))
    with pytest.raises(ValueError, match="sigmas must be > 0"):
        AttackStudy(sigmas=(0.0, 0.1))


def test_negatives_keeps_only_no_questions(standin):
    full = read_pope(standin["pope"])
    data = negatives(full, 5)
    assert len(data) == 5 and {item.label for item in data} == {"no"}
    assert [i.id for i in data] == [i.id for i in full if i.label == "no"][:5]
    positives = dataclasses.replace(full, items=tuple(i for i in full if i.label == "yes"))
    with pytest.raises(ValueError, match="no POPE question labelled 'no'"):
        negatives(positives)


def test_study_runs_every_attack_and_resumes_without_attacking_again(standin, models, tmp_path, monkeypatch):
    main, surrogate = models
    data = negatives(read_pope(standin["pope"]), 2)
    study = TINY.run(main, data, tmp_path, surrogate=surrogate, model_name="untrained", progress=False)

    assert set(study["inputs"]) == {"clean", *(f"{a}-eps8" for a in ATTACKS)}
    for tag, row in study["inputs"].items():
        assert set(row["asr"]) >= {"sigma=0", "sigma=0.2"}
        assert all(v is None or 0.0 <= v <= 1.0 for v in row["asr"].values())
        assert row["answered"]["sigma=0"] == 2
        if tag == "clean":
            assert "sigma=0.2,adaptive" in row["asr"] and "crafting" not in row
            continue
        assert row["crafting"]["n"] == 2 and "0.2" in row["detection"]
        assert 0.0 <= row["detection"]["0.2"]["auc"] <= 1.0
        for item in data:  # the saved image is the attack's: within epsilon of the clean one, 8-bit
            stem = item.id.replace("/", "_")
            adv = np.asarray(Image.open(tmp_path / "adv" / tag / f"{stem}.png").convert("RGB"), dtype=float)
            clean = np.asarray(Image.open(item.image).convert("RGB"), dtype=float)
            assert np.abs(adv - clean).max() <= 8 + 1e-9
    assert "minimal-eps8" in study["inputs"] and "sigma=0.2,adaptive" in study["inputs"]["minimal-eps8"]["asr"]
    eot = json.loads(next((tmp_path / "adv" / "eot-eps8").glob("*.json")).read_text())
    assert eot["steps"] == 2  # the full budget, not early-stopped
    md = (tmp_path / "study.md").read_text()
    assert "| transfer-eps8 |" in md and "Detection" in md and "EOT 2 copies" in md.splitlines()[0]
    for name in ATTACKS:
        assert (tmp_path / f"asr_{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert (tmp_path / f"roc_{name}.png").stat().st_size > 1000

    from smoothguard.attacks import PGDAttack

    def no_attack(*args, **kwargs):
        raise AssertionError("a resumed study attacked again")

    monkeypatch.setattr(PGDAttack, "run", no_attack)
    again = TINY.run(main, data, tmp_path, surrogate=surrogate, model_name="untrained", progress=False)
    assert again["inputs"]["full-eps8"]["asr"] == study["inputs"]["full-eps8"]["asr"]


def test_changed_attack_settings_are_refused_on_resume(standin, models, tmp_path):
    main, _ = models
    data = negatives(read_pope(standin["pope"]), 1)
    one = AttackStudy(attacks=("full",), epsilons=(8,), sigmas=(0.2,), steps=1, n_samples=3, adaptive_sigmas=())
    one.run(main, data, tmp_path, progress=False)
    assert "EOT" not in (tmp_path / "study.md").read_text().splitlines()[0]  # only the settings of what ran
    from smoothguard.eval import EvalError

    with pytest.raises(EvalError, match="another evaluation"):
        AttackStudy(attacks=("full",), epsilons=(8,), sigmas=(0.2,), steps=3, n_samples=3,
                    adaptive_sigmas=()).run(main, data, tmp_path, progress=False)


def test_transfer_needs_a_surrogate(standin, models, tmp_path):
    with pytest.raises(ValueError, match="surrogate"):
        TINY.run(models[0], read_pope(standin["pope"]), tmp_path)


def test_cli_usage_errors_exit_2(standin, tmp_path, capsys):
    from smoothguard.cli import main

    assert main(["eval", "attacks", "--model", "testbed", "--data", str(standin["pope"]), "--out",
                 str(tmp_path)]) == 2
    assert "--surrogate" in capsys.readouterr().err
