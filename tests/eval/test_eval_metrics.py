"""Metrics against hand-computed cases, always by id: shuffling the answers changes nothing."""

from __future__ import annotations

import random

import pytest

from smoothguard.eval import attack_success_rate, parse_yes_no, pope_metrics, relative_score


@pytest.mark.parametrize(("text", "parsed"), [
    ("Yes", "yes"), ("Yes.", "yes"), ("No", "no"), ("no.", "no"), ("No, there is not.", "no"),
    ("There is no red circle.", "no"), ("The circle is not red", "no"), ("Yes. But no square.", "yes"),
    ("Nope", "yes"), ("NO", "yes"),  # LLaVA's rule: only the words No, no, not count
    ("Yes, there is a dog.", "yes"), ("", "yes"), ("No\n", "no"), ("I see no, dog", "no"),
])
def test_parse_yes_no_follows_llava(text, parsed):
    assert parse_yes_no(text) == parsed


LABELS = {"a/1": "yes", "a/2": "yes", "a/3": "no", "b/1": "no", "b/2": "yes", "b/3": "no", "b/4": "yes"}
ANSWERS = {"a/1": "Yes.", "a/2": "No.", "a/3": "No", "b/1": "Yes, there is.", "b/2": "yes", "b/3": "There is not.",
           "b/4": None}  # b/4 failed


def test_pope_metrics_hand_computed_and_by_id():
    # answered: a/1 TP, a/2 FN, a/3 TN, b/1 FP, b/2 TP, b/3 TN -> TP 2, FP 1, TN 2, FN 1
    items = list(ANSWERS.items())
    random.Random(0).shuffle(items)
    m = pope_metrics(dict(items), LABELS, {k: k[0] for k in LABELS})
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (2, 1, 2, 1)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3) and m["yes_ratio"] == pytest.approx(3 / 6)
    assert (m["n"], m["answered"], m["failed"], m["missing"]) == (7, 6, 1, 0)
    a, b = m["by_category"]["a"], m["by_category"]["b"]
    assert (a["tp"], a["fn"], a["tn"], a["accuracy"]) == (1, 1, 1, pytest.approx(2 / 3))
    assert (b["tp"], b["fp"], b["tn"], b["failed"], b["accuracy"]) == (1, 1, 1, 1, pytest.approx(2 / 3))
    # the same answers, keyed by position instead of id, would score differently: keys are what counts
    shuffled_labels = dict(zip(LABELS, reversed(list(LABELS.values())), strict=True))
    assert pope_metrics(ANSWERS, shuffled_labels)["accuracy"] != m["accuracy"]


def test_pope_missing_unknown_and_empty():
    m = pope_metrics({"a/1": "Yes"}, LABELS)
    assert (m["answered"], m["missing"], m["accuracy"]) == (1, 6, 1.0)
    assert pope_metrics({}, LABELS)["precision"] == 0.0  # empty denominators are 0, never a ZeroDivisionError
    with pytest.raises(ValueError, match="no label"):
        pope_metrics({"c/9": "Yes"}, LABELS)


def test_attack_success_rate_counts_unparsed_apart():
    verdicts = {"s1/0": "unsafe", "s1/1": "safe", "s1/2": None, "s2/0": "unsafe", "s2/1": "unsafe", "s2/2": "safe"}
    items = list(verdicts.items())
    random.Random(1).shuffle(items)
    m = attack_success_rate(dict(items), failed=2, categories={k: k[:2] for k in verdicts})
    assert m["asr"] == pytest.approx(3 / 5)  # the unparsed verdict is neither unsafe nor in the denominator
    assert m["asr_upper"] == pytest.approx(4 / 6)
    assert (m["n"], m["unsafe"], m["safe"], m["unparsed"], m["failed"]) == (6, 3, 2, 1, 2)
    assert m["by_category"]["s1"]["asr"] == pytest.approx(1 / 2) and m["by_category"]["s1"]["unparsed"] == 1
    assert m["by_category"]["s2"]["asr"] == pytest.approx(2 / 3)
    assert attack_success_rate({"x": None})["asr"] is None
    with pytest.raises(ValueError, match="verdicts must be"):
        attack_success_rate({"x": "maybe"})


def test_relative_score_hand_computed():
    reviews = {"1": (8.0, 6.0), "2": (10.0, 9.0), "3": None, "4": (6.0, 6.0)}
    m = relative_score(reviews, {"1": "conv", "2": "conv", "3": "detail", "4": "detail"})
    assert m["relative_score"] == pytest.approx(21 / 24 * 100)
    assert m["reference_score"] == pytest.approx(80.0) and m["model_score"] == pytest.approx(70.0)
    assert (m["n"], m["unparsed"]) == (4, 1)  # never averaged in as -1
    assert m["by_category"]["conv"]["relative_score"] == pytest.approx(15 / 18 * 100)
    assert m["by_category"]["detail"] == {"relative_score": 100.0, "reference_score": 60.0, "model_score": 60.0,
                                          "n": 2, "unparsed": 1}
    assert relative_score({"1": None})["relative_score"] is None


def test_agreement_detection_hand_computed():
    from smoothguard.eval import agreement_detection

    det = agreement_detection(clean=[1.0, 1.0, 0.9, 0.6], attacked=[0.4, 0.6, 1.0], min_agreement=0.5)
    # attacked < clean pairs: 0.4 beats 4, 0.6 beats 3 and ties 1, 1.0 ties 2 -> (4 + 3.5 + 1) / 12
    assert det["auc"] == pytest.approx(8.5 / 12)
    assert det["roc"][0] == (0.0, 0.0) and det["roc"][-1] == (1.0, 1.0)
    # flagging agreement < t for t = 0.4, 0.6, 0.9, 1.0, inf
    expected = [(0, 0), (0, 1 / 3), (0.25, 2 / 3), (0.5, 2 / 3), (1, 1)]
    assert [p for point in det["roc"] for p in point] == pytest.approx([p for point in expected for p in point])
    assert (det["false_flag_rate"], det["detection_rate"]) == (0.0, pytest.approx(1 / 3))
    assert agreement_detection([1.0], [0.2])["auc"] == 1.0
    with pytest.raises(ValueError):
        agreement_detection([], [0.5])
