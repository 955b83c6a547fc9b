"""The runner on a deterministic pixel-reading backend: metrics, identical prompts, resumption, reports."""

from __future__ import annotations

import json
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from PIL import Image

from smoothguard.eval import (
    EvalError,
    EvalRunner,
    LLMJudge,
    RunSpec,
    ShapeOracle,
    read_llavabench,
    read_mmsafety,
    read_pope,
    run_eval,
)
from smoothguard.eval.judges import OverlapJudge
from smoothguard.eval.runner import AnswerLog, item_seed

N = 3  # guard candidates: small, to keep the suite fast


class Spy(ShapeOracle):
    """The oracle, recording every generate call as (prompt, number of variants)."""

    def __init__(self, fail_on: str | None = None) -> None:
        super().__init__()
        self.log: list[tuple[str, int]] = []
        self.fail_on = fail_on

    def generate(self, prompt, variants):
        self.log.append((prompt, len(variants)))
        if self.fail_on is not None and self.fail_on in prompt:
            raise RuntimeError("model crashed")
        return super().generate(prompt, variants)


def records(out):
    return [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]


def test_runspec_keys():
    assert RunSpec(0.0, 11).key == "sigma=0" and RunSpec(0.0, 11).n_samples == 1
    assert RunSpec(0.1, 11).key == "sigma=0.1,n=11"
    assert RunSpec(0.15, 5, adaptive=True, tag="pgd8").key == "sigma=0.15,n=5,adaptive,pgd8"
    with pytest.raises(ValueError):
        RunSpec(-0.1)
    assert item_seed(0, "a/1") == item_seed(0, "a/1") != item_seed(1, "a/1")


def test_pope_sweep_end_to_end(tmp_path, standin):
    ds = read_pope(standin["pope"])
    spy = Spy()
    out = tmp_path / "pope"
    summary = run_eval(spy, ds, out, sigmas=[0, 0.1], n_samples=N, limit=12, progress=False)

    # summary.json schema as in DESIGN.md
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == summary
    assert summary["benchmark"] == "pope" and summary["model"] == "shape-oracle"
    assert [(r["sigma"], r["n_samples"]) for r in summary["runs"]] == [(0.0, 1), (0.1, N)]
    for run in summary["runs"]:
        assert {"accuracy", "precision", "recall", "f1", "yes_ratio"} <= set(run["metrics"])
        assert run["metrics"]["answered"] == 12 and run["metrics"]["failed"] == 0
    # the oracle reads the pixels: perfect on these clean images, with or without the guard
    assert summary["runs"][0]["metrics"]["accuracy"] == 1.0
    assert summary["runs"][1]["metrics"]["accuracy"] == 1.0
    assert summary["runs"][0]["cost"]["calls_per_item"] == 1 and summary["runs"][1]["cost"]["calls_per_item"] == N
    assert summary["runs"][1]["stability"]["mean_agreement"] == 1.0

    # undefended: one plain generate(prompt, [[image]]) per item; guarded: one batched call of N variants
    assert [n for _, n in spy.log] == [1] * 12 + [N] * 12
    # identical prompts for the baseline and the defense, item by item
    recs = records(out)
    by_run: dict[str, dict[str, str]] = {}
    for r in recs:
        by_run.setdefault(r["run"], {})[r["id"]] = r["prompt"]
    assert by_run["sigma=0"] == by_run[f"sigma=0.1,n={N}"] == {i.id: i.prompt for i in ds.head(12)}
    assert all(len(r["candidates"]) == N for r in recs if r["sigma"] > 0)

    # the Markdown table and the plot
    table = (out / "summary.md").read_text()
    assert "| 0 (undefended) | 1 | 1.000 |" in table and "| 0.1 | 3 |" in table
    png = out / "sweep.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as image:
        image.verify()

    # a rerun asks nothing again; adding a sigma asks only for the new run
    spy.log.clear()
    again = run_eval(spy, ds, out, sigmas=[0, 0.1], n_samples=N, limit=12, progress=False)
    assert spy.log == [] and [r["metrics"] for r in again["runs"]] == [r["metrics"] for r in summary["runs"]]
    run_eval(spy, ds, out, sigmas=[0, 0.3], n_samples=N, limit=12, progress=False)
    assert len(spy.log) == 12 and len(records(out)) == 36


def test_noise_lowers_the_oracles_accuracy_and_metrics_follow_answers(tmp_path, standin):
    ds = read_pope(standin["pope"]).head(24)
    # one noisy copy and no original: the guard's answer is the oracle's reading of a noisy image
    summary = run_eval(ShapeOracle(), ds, tmp_path, sigmas=[0.5], n_samples=1, progress=False,
                       guard_settings={"include_original": False})
    answers = {r["id"]: r["answer"] for r in records(tmp_path)}
    labels = {i.id: i.label for i in ds}
    correct = sum((answers[i] == "Yes.") == (labels[i] == "yes") for i in labels)
    assert correct < 24
    assert summary["runs"][0]["metrics"]["accuracy"] == pytest.approx(correct / 24)
    assert summary["guard"]["include_original"] is False


def test_killed_mid_line_resumes_without_loss_or_duplicates(tmp_path, standin):
    ds = read_pope(standin["pope"]).head(6)
    out = tmp_path / "run"
    full = run_eval(ShapeOracle(), ds, tmp_path / "ref", sigmas=[0, 0.1], n_samples=N, progress=False)
    run_eval(ShapeOracle(), ds.head(4), out, sigmas=[0], progress=False)
    with open(out / "answers.jsonl", "a") as f:  # a record cut by a kill
        f.write('{"run": "sigma=0", "id": "adversarial/5", "answ')
    resumed = run_eval(ShapeOracle(), ds, out, sigmas=[0, 0.1], n_samples=N, progress=False)
    keys = [(r["run"], r["id"]) for r in records(out)]
    assert len(keys) == len(set(keys)) == 12
    assert [r["metrics"] for r in resumed["runs"]] == [r["metrics"] for r in full["runs"]]


def test_corrupt_log_line_is_an_error(tmp_path):
    path = tmp_path / "answers.jsonl"
    path.write_text('{"run": "sigma=0", "id": "1"}\nnot json\n{"run": "sigma=0", "id": "2"}\n')
    with pytest.raises(EvalError, match=r"answers\.jsonl:2"):
        AnswerLog(path)


def test_other_settings_in_the_same_folder_are_refused(tmp_path, standin):
    ds = read_pope(standin["pope"]).head(2)
    run_eval(ShapeOracle(), ds, tmp_path, sigmas=[0], progress=False)
    with pytest.raises(EvalError, match="another evaluation"):
        run_eval(ShapeOracle(), ds, tmp_path, sigmas=[0], progress=False, seed=1)
    with pytest.raises(EvalError, match="another evaluation"):
        run_eval(ShapeOracle(), ds, tmp_path, sigmas=[0], progress=False, model_name="other")


def test_failures_are_counted_apart_and_retried_on_request(tmp_path, standin):
    ds = read_pope(standin["pope"])
    bad = ds.items[1].prompt
    items = [i for i in ds.items if i.prompt != bad][:5] + [i for i in ds.items if i.prompt == bad][:1]
    import dataclasses

    ds = dataclasses.replace(ds, items=tuple(items))
    summary = run_eval(Spy(fail_on=bad), ds, tmp_path, sigmas=[0], progress=False)
    m = summary["runs"][0]["metrics"]
    assert (m["failed"], m["answered"], m["accuracy"]) == (1, 5, 1.0)  # a failure is not a "no"
    failed = [r for r in records(tmp_path) if r["error"]]
    assert len(failed) == 1 and "model crashed" in failed[0]["error"] and failed[0]["answer"] is None
    summary = run_eval(Spy(), ds, tmp_path, sigmas=[0], progress=False, retry_errors=True)
    assert summary["runs"][0]["metrics"]["failed"] == 0 and summary["runs"][0]["metrics"]["answered"] == 6


def test_a_broken_setup_stops_early(tmp_path, standin):
    ds = read_pope(standin["pope"])
    with pytest.raises(EvalError, match="first 5 items"):
        run_eval(Spy(fail_on="Is there"), ds, tmp_path, sigmas=[0], progress=False)
    assert len(records(tmp_path)) == 5


class CountingJudge(BaseChatModel):
    calls: int = 0

    @property
    def _llm_type(self) -> str:
        return "counting-judge"

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
        self.calls += 1
        text = messages[-1].content
        reply = "unsafe" if "Sure" in text else "safe" if "sorry" in text else "no idea"
        return ChatResult(generations=[ChatGeneration(message=AIMessage(reply))])


def test_mmsafety_asr_with_keyword_and_cached_llm_judge(tmp_path, standin):
    typo = read_mmsafety(standin["mmsafety"], image_type="SD_TYPO")
    summary = run_eval(ShapeOracle(), typo, tmp_path / "typo", sigmas=[0, 0.1], n_samples=N, progress=False)
    assert summary["judge"] == "keyword"
    for run in summary["runs"]:  # the oracle is scripted to follow typographic images
        assert run["metrics"]["asr"] == 1.0 and run["metrics"]["n"] == len(typo) and run["metrics"]["unparsed"] == 0
        assert set(run["metrics"]["by_category"]) == {"01-Illegal_Activitiy", "06-Fraud", "09-Privacy_Violence"}
    sd = read_mmsafety(standin["mmsafety"], image_type="SD")
    model = CountingJudge()
    judge = LLMJudge(model, max_concurrency=2)
    summary = run_eval(ShapeOracle(), sd, tmp_path / "sd", sigmas=[0], progress=False, judge=judge)
    m = summary["runs"][0]["metrics"]
    assert (m["asr"], m["safe"], m["unparsed"]) == (0.0, len(sd), 0)
    assert model.calls == len(sd)
    run_eval(ShapeOracle(), sd, tmp_path / "sd", sigmas=[0], progress=False, judge=judge)
    assert model.calls == len(sd)  # verdicts are cached by (judge, run, id, answer)
    cached = [json.loads(line) for line in (tmp_path / "sd" / "judgements.jsonl").read_text().splitlines()]
    assert len(cached) == len(sd) and {c["verdict"] for c in cached} == {"safe"}


def test_llavabench_with_and_without_judge(tmp_path, standin):
    ds = read_llavabench(standin["llavabench"])
    summary = run_eval(ShapeOracle(), ds, tmp_path / "a", sigmas=[0], progress=False)
    assert summary["runs"][0]["metrics"]["relative_score"] is None and summary["runs"][0]["metrics"]["answered"] == 8
    runner = EvalRunner(ShapeOracle(), ds, tmp_path / "b", judge=OverlapJudge(), progress=False)
    summary = runner.run([RunSpec(0.0)])
    m = summary["runs"][0]["metrics"]
    assert m["relative_score"] == pytest.approx(100.0) and set(m["by_category"]) == {"conv", "detail", "complex"}


def test_image_transform_runs_are_tagged_and_kept_apart(tmp_path, standin):
    import numpy as np

    from smoothguard import Media
    from smoothguard.eval import agreement_detection, plot_roc, read_answers, sweep_specs

    ds = read_pope(standin["pope"]).head(8)
    blank = lambda item, image: Media.image(np.full((64, 64, 3), 230, np.uint8))  # noqa: E731 (hides every shape)
    runner = EvalRunner(ShapeOracle(), ds, tmp_path, image_transform=blank, progress=False)
    with pytest.raises(ValueError, match="tag"):
        runner.run([RunSpec(0.0)])
    summary = runner.run(sweep_specs([0, 0.1], N, tag="blank"))
    assert [r["key"] for r in summary["runs"]] == ["sigma=0,blank", f"sigma=0.1,n={N},blank"]
    labels = [i.label for i in ds]
    for run in summary["runs"]:  # the oracle sees no shape: it says "No." to everything
        assert run["metrics"]["accuracy"] == pytest.approx(labels.count("no") / 8)
        assert run["metrics"]["yes_ratio"] == 0.0
    clean = EvalRunner(ShapeOracle(), ds, tmp_path, progress=False).run(sweep_specs([0.1], N))
    assert clean["runs"][0]["metrics"]["accuracy"] == 1.0
    runs = read_answers(tmp_path)
    assert set(runs) == {"sigma=0,blank", f"sigma=0.1,n={N},blank", f"sigma=0.1,n={N}"}
    det = agreement_detection([r["agreement"] for r in runs[f"sigma=0.1,n={N}"].values()],
                              [r["agreement"] for r in runs[f"sigma=0.1,n={N},blank"].values()])
    assert det["auc"] == 0.5  # every copy agrees on both: agreement cannot tell them apart here
    png = plot_roc({"blank": det}, tmp_path / "roc.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_adaptive_runs_report_fewer_calls(tmp_path, standin):
    ds = read_pope(standin["pope"]).head(4)
    summary = run_eval(ShapeOracle(), ds, tmp_path, sigmas=[0.1], n_samples=11, adaptive=True, progress=False)
    run = summary["runs"][0]
    assert run["adaptive"] is True and run["key"] == "sigma=0.1,n=11,adaptive"
    assert run["cost"]["calls_per_item"] < 11 and run["metrics"]["accuracy"] == 1.0
