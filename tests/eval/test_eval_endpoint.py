"""``smoothguard eval --model openai:MODEL``: the harness against a real OpenAI-compatible server on 127.0.0.1.

The server (tests/fakes/openai_server.py, uvicorn) serves the shipped testbed VLM, so answers depend on the
pixels sent; the HTTP client is the proxy's. Kept small: 24 POPE items, N = 3.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
from fakes.openai_server import OpenAIStub, answer_with_testbed

from smoothguard.commands import eval as eval_command
from smoothguard.eval import read_pope, run_eval
from smoothguard.eval.endpoint import EndpointError, EndpointModel

ITEMS, N = 24, 3


@pytest.fixture(autouse=True)
def _threads(one_torch_thread):
    yield


@pytest.fixture(scope="module")
def served(testbed_main):
    """The testbed behind the OpenAI-compatible stub (one server for the module)."""
    with OpenAIStub(answer=answer_with_testbed(testbed_main), model="testbed") as stub:
        yield stub


def _argv(stub, data, out, *extra):
    return ["pope", "--model", "openai:testbed", "--base-url", stub.base_url, "--data", str(data), "--out", str(out),
            "--sigma", "0", "0.1", "--n-samples", str(N), "--limit", str(ITEMS), "--no-progress", *extra]


def _records(out):
    return [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_endpoint_run_agrees_with_in_process_run(tmp_path, standin, served, testbed_main, capsys):
    before = len(served.requests)
    assert eval_command.main(_argv(served, standin["pope"], tmp_path / "endpoint", "--concurrency", "4")) == 0
    assert "| 0 (undefended) | 1 |" in capsys.readouterr().out
    sent = served.requests[before:]
    assert len(sent) == ITEMS + ITEMS * N  # one call per item undefended, N per item guarded, nothing more
    assert all(r.body["temperature"] == 0.0 and r.body["model"] == "testbed" for r in sent)
    assert all(r.body["messages"][0]["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")
               for r in sent)

    endpoint = json.loads((tmp_path / "endpoint" / "summary.json").read_text())
    local = run_eval(testbed_main, read_pope(standin["pope"]), tmp_path / "local", sigmas=[0, 0.1], n_samples=N,
                     limit=ITEMS, progress=False, model_name="testbed")
    assert endpoint["model"] == "openai:testbed" and endpoint["endpoint"]["image_resize"] == "openai"
    for remote, inproc in zip(endpoint["runs"], local["runs"], strict=True):
        assert remote["key"] == inproc["key"]
        for metric in ("accuracy", "f1", "yes_ratio", "over_refusal"):
            assert abs(remote["metrics"][metric] - inproc["metrics"][metric]) <= 0.01, (remote["key"], metric)
        assert remote["metrics"]["failed"] == 0
        assert remote["cost"]["retries"] == 0 and remote["cost"]["failed_calls"] == 0
        assert remote["cost"]["calls"] == remote["cost"]["model_calls"] == ITEMS * remote["n_samples"]
    # the undefended runs see the very same pixels (lossless PNG): the same answer for every item
    clean = {r["id"]: r["answer"] for r in _records(tmp_path / "endpoint") if r["run"] == "sigma=0"}
    assert clean == {r["id"]: r["answer"] for r in _records(tmp_path / "local") if r["run"] == "sigma=0"}
    # with the noise drawn the same way in process (on the image, at its size: image_resize="none"; the default
    # draws it on the processor's tensor instead), every candidate of every item is the same answer
    same_noise = run_eval(testbed_main, read_pope(standin["pope"]), tmp_path / "same-noise", sigmas=[0, 0.1],
                          n_samples=N, limit=ITEMS, progress=False, guard_settings={"image_resize": "none"})
    assert [r["metrics"]["accuracy"] for r in same_noise["runs"]] == [r["metrics"]["accuracy"]
                                                                      for r in endpoint["runs"]]
    ref = {(r["run"], r["id"]): r["candidates"] for r in _records(tmp_path / "same-noise")}
    assert {(r["run"], r["id"]): r["candidates"] for r in _records(tmp_path / "endpoint")} == ref
    # the guarded copies went out noisy: per item, one copy is the original's pixels and N - 1 are not. Calls run
    # four at a time, so arrival order says nothing; POPE asks several questions about one image, so pixels are
    # matched by (question, image), and the stand-in data repeats some pairs (as POPE's splits do)
    def key(r):
        return r.body["messages"][0]["content"][0]["text"], r.image.tobytes()
    originals = {key(r) for r in sent[:ITEMS]}
    guarded = collections.Counter(key(r) in originals for r in sent[ITEMS:])
    assert guarded == {True: ITEMS, False: ITEMS * (N - 1)}


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_kill_and_resume_loses_and_repeats_nothing(tmp_path, standin, served):
    out = tmp_path / "killed"
    log = out / "answers.jsonl"
    code = ("import sys; from smoothguard.commands.eval import main; sys.exit(main(sys.argv[1:]))")
    before = len(served.requests)
    proc = subprocess.Popen([sys.executable, "-c", code, *_argv(served, standin["pope"], out, "--concurrency", "2")],
                            env=dict(os.environ, PYTHONUNBUFFERED="1"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while (log.read_bytes().count(b"\n") if log.exists() else 0) < ITEMS + 4:  # in the guarded run
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the endpoint run made no progress"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    time.sleep(0.3)  # calls the killed client left in flight finish on the server
    kept = _records(out)
    assert ITEMS + 4 <= len(kept) < 2 * ITEMS and not (out / "summary.json").exists()

    resumed_from = len(served.requests)
    assert eval_command.main(_argv(served, standin["pope"], out, "--concurrency", "2")) == 0
    records = _records(out)
    keys = [(r["run"], r["id"]) for r in records]
    assert len(keys) == len(set(keys)) == 2 * ITEMS  # nothing lost, nothing logged twice
    assert records[:len(kept)] == kept  # what was logged before the kill is untouched
    # the resumed run asked only the items that were not logged: N calls each, none of the logged ones again
    assert len(served.requests) - resumed_from == (2 * ITEMS - len(kept)) * N
    assert len(served.requests) - before > 2 * ITEMS  # (the killed run had really been calling the server)

    reference = tmp_path / "reference"
    assert eval_command.main(_argv(served, standin["pope"], reference, "--concurrency", "2")) == 0
    ref = {(r["run"], r["id"]): r for r in _records(reference)}
    for r in records:  # seeded per item: the same noise and answers as an uninterrupted run
        assert (r["answer"], r["candidates"]) == (ref[(r["run"], r["id"])]["answer"],
                                                  ref[(r["run"], r["id"])]["candidates"])


def test_failing_server_is_retried_and_counted(tmp_path, standin, testbed_main):
    count = itertools.count()
    inner = answer_with_testbed(testbed_main)

    def flaky(body, image):  # every third request answers HTTP 500
        return RuntimeError("overloaded") if next(count) % 3 == 0 else inner(body, image)

    data = read_pope(standin["pope"])
    with OpenAIStub(answer=flaky, model="testbed") as stub:
        model = EndpointModel("testbed", stub.base_url, concurrency=4, backoff=0.01, max_backoff=0.05)
        summary = run_eval(model, data, tmp_path / "flaky", sigmas=[0, 0.1], n_samples=N, limit=12, progress=False)
        served = len(stub.requests)
    failures = sum(1 for k in range(served) if k % 3 == 0)
    runs = summary["runs"]
    assert sum(r["cost"]["retries"] for r in runs) == failures > 0  # every 500 was retried...
    assert all(r["metrics"]["failed"] == 0 and r["cost"]["failed_calls"] == 0 for r in runs)  # ...and answered
    assert sum(r["cost"]["calls"] for r in runs) == served == 12 * (1 + N) + failures
    assert model.stats.statuses[500] == failures
    table = (tmp_path / "flaky" / "summary.md").read_text()
    assert "retries" in table and "failed calls" in table

    # a server that always fails: calls fail after their retries, counted apart, the items counted as failed
    with OpenAIStub(answer=lambda body, image: RuntimeError("down"), model="testbed") as stub:
        model = EndpointModel("testbed", stub.base_url, concurrency=4, max_retries=1, backoff=0.0)
        summary = run_eval(model, data, tmp_path / "down", sigmas=[0], limit=3, progress=False)
        assert len(stub.requests) == 3 * 2
    (run,) = summary["runs"]
    assert run["metrics"]["failed"] == 3 and run["cost"]["failed_calls"] == 3 and run["cost"]["retries"] == 3
    assert all("HTTP 500" in r["error"] and "after 2 attempts" in r["error"] for r in _records(tmp_path / "down"))


def _mock(handler):
    return httpx.MockTransport(handler)


def _ok(text="Yes."):
    return httpx.Response(200, json={"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]})


async def test_retries_429_and_timeouts_not_400(tiny_image):
    seen = []

    def rate_limited(request):
        seen.append(request)
        return httpx.Response(429, json={"error": {"message": "slow down"}}) if len(seen) < 3 else _ok()

    model = EndpointModel("m", "http://127.0.0.1:9/v1", api_key="sk-secret-123456", backoff=0.0,
                          transport=_mock(rate_limited))
    assert await model.agenerate("Is there a cat?", [[tiny_image]]) == ["Yes."]
    assert len(seen) == 3 and model.stats.retries == 2 and model.stats.statuses == {429: 2, 200: 1}
    assert seen[0].headers["authorization"] == "Bearer sk-secret-123456"

    bad = EndpointModel("m", "http://127.0.0.1:9/v1", backoff=0.0, transport=_mock(
        lambda request: httpx.Response(400, json={"error": {"message": "image too large"}})))
    (failure,) = await bad.agenerate("q", [[tiny_image]])
    assert isinstance(failure, EndpointError) and failure.status == 400 and failure.attempts == 1
    assert bad.stats.failed == 1 and bad.stats.retries == 0


async def test_per_call_timeout_is_retried(tiny_image):
    with OpenAIStub(latency=lambda order: 1.0 if order == 0 else 0.0) as stub:  # the first call hangs
        model = EndpointModel("stub-vlm", stub.base_url, timeout=0.2, backoff=0.0)
        start = time.monotonic()
        (answer,) = await model.agenerate("Describe it.", [[tiny_image]])
        assert time.monotonic() - start < 0.8  # (leaving the block waits for the server's hung call)
    assert isinstance(answer, str) and answer.startswith("The image is")
    assert model.stats.retries == 1
    assert model.stats.statuses["upstream_timeout"] == 1


def test_dry_run_counts_calls_and_tokens(tmp_path, standin, capsys):
    out = tmp_path / "dry"
    argv = ["pope", "--model", "openai:Qwen/Qwen2.5-VL-7B-Instruct", "--base-url", "http://127.0.0.1:9/v1",
            "--data", str(standin["pope"]), "--out", str(out), "--sigma", "0", "0.1", "0.2", "--n-samples", "11",
            "--limit", "10", "--dry-run", "--json"]
    assert eval_command.main(argv) == 0  # nothing listens on port 9: a dry run sends nothing
    plan = json.loads(capsys.readouterr().out)
    assert plan["image_rule"] == "qwen2-vl"
    assert [(r["key"], r["calls"]) for r in plan["runs"]] == [("sigma=0", 10), ("sigma=0.1,n=11", 110),
                                                              ("sigma=0.2,n=11", 110)]
    first = plan["runs"][0]
    assert first["image_tokens"] == 10 * 2 * 2  # 64 x 64 px: smart_resize to 56 x 56, 2 x 2 merged patches
    assert plan["runs"][1]["prompt_tokens"] == 11 * first["prompt_tokens"]
    assert not out.exists()

    # what is already answered in --out is left out of the estimate
    out.mkdir()
    (out / "answers.jsonl").write_text(json.dumps({"run": "sigma=0", "id": read_pope(standin["pope"]).items[0].id,
                                                   "answer": "Yes.", "error": None}) + "\n")
    assert eval_command.main([*argv[:-1]]) == 0
    table = capsys.readouterr().out
    assert "| sigma=0 | 9 of 10 | 9 |" in table and "| total | 29 | 229 |" in table


def test_endpoint_usage_errors(tmp_path, standin, capsys, monkeypatch):
    base = ["--data", str(standin["pope"]), "--out", str(tmp_path / "o"), "--no-progress"]
    assert eval_command.main(["pope", "--model", "openai:m", *base]) == 2
    assert "needs --base-url" in capsys.readouterr().err
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    assert eval_command.main(["pope", "--model", "openai:m", "--base-url", "http://127.0.0.1:9/v1",
                              "--api-key-env", "NO_SUCH_KEY_VAR", *base]) == 2
    assert "NO_SUCH_KEY_VAR: that environment variable is not set" in capsys.readouterr().err
    assert eval_command.main(["pope", "--model", "oracle", "--base-url", "http://127.0.0.1:9/v1", *base]) == 2
    assert "--base-url and --api-key-env are for --model openai:MODEL" in capsys.readouterr().err


@pytest.fixture
def tiny_image():
    import numpy as np

    from smoothguard import Media

    return Media.image(np.full((8, 8, 3), 0.8, dtype=np.float32))


def test_over_refusal_in_summary_table_and_plot(tmp_path, standin):
    from fakes.openai_server import question_text

    def refusing(body, image):  # declines every question about a red object, answers the rest
        return "I'm sorry, I can't help with that." if "red" in question_text(body) else "Yes."

    data = read_pope(standin["pope"]).head(ITEMS)
    expected = sum("red" in item.prompt for item in data) / len(data)
    assert 0 < expected < 1
    with OpenAIStub(answer=refusing, latency=0.02) as stub:
        model = EndpointModel("stub-vlm", stub.base_url, concurrency=5)
        summary = run_eval(model, data, tmp_path / "refuse", sigmas=[0, 0.1], n_samples=N, progress=False)
        assert 1 < stub.max_in_flight() <= 5  # items and candidates in flight together, within the bound
    for run in summary["runs"]:
        assert run["metrics"]["over_refusal"] == run["metrics"]["refusal_rate"] == pytest.approx(expected)
        assert run["metrics"]["refusals"] == round(expected * len(data))
    table = (tmp_path / "refuse" / "summary.md").read_text()
    assert "over-refusal" in table.splitlines()[4] and f"{expected:.3f}" in table
    assert json.loads((tmp_path / "refuse" / "summary.json").read_text())["runs"][1]["metrics"]["over_refusal"]
    assert (tmp_path / "refuse" / "sweep.png").read_bytes()[:4] == b"\x89PNG"


def test_attacks_transfer_against_the_endpoint(tmp_path, standin, served, capsys):
    out = tmp_path / "attacks"
    argv = ["attacks", "--model", "openai:testbed", "--base-url", served.base_url, "--surrogate", "testbed:surrogate",
            "--data", str(standin["pope"]), "--questions", "3", "--epsilons", "16", "--sigma", "0.1",
            "--n-samples", str(N), "--steps", "3", "--adaptive-sigma", "--out", str(out), "--no-progress"]
    before = len(served.requests)
    assert eval_command.main(argv) == 0  # transfer is the default (and only) attack on a served model
    assert len(served.requests) - before == 2 * 3 * (1 + N)  # clean and transfer inputs, undefended and guarded
    study = json.loads((out / "study.json").read_text())
    assert set(study["inputs"]) == {"clean", "transfer-eps16"} and study["model"] == "openai:testbed"
    assert set(study["inputs"]["clean"]["refusal_rate"]) == {"sigma=0", "sigma=0.1"}
    assert len(list((out / "adv" / "transfer-eps16").glob("*.png"))) == 3
    assert "Over-refusal" in capsys.readouterr().out

    assert eval_command.main([*argv[:-4], "--attacks", "full", "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    assert "only the transfer attack" in capsys.readouterr().err


def test_progress_bar_counts_calls(tmp_path, standin, capsys):
    data = read_pope(standin["pope"]).head(4)
    with OpenAIStub() as stub:
        run_eval(EndpointModel("stub-vlm", stub.base_url), data, tmp_path / "bar", sigmas=[0, 0.1], n_samples=N)
    err = capsys.readouterr().err
    assert "pope sigma=0: 100%" in err and "4/4 [" in err  # undefended: one call per item
    assert f"{4 * N}/{4 * N} [" in err and "call/s]" in err  # guarded: N calls per item, with the rate (and ETA)


def test_benign_control_set_reports_over_refusal(tmp_path, standin, capsys):
    argv = ["mmsafety", "--model", "oracle", "--data", str(standin["mmsafety"]), "--sigma", "0", "--image-type", "SD",
            "--json", "--no-progress"]
    assert eval_command.main([*argv, "--out", str(tmp_path / "harmful")]) == 0
    assert json.loads(capsys.readouterr().out)["runs"][0]["metrics"]["over_refusal"] is None
    assert eval_command.main([*argv, "--benign", "--out", str(tmp_path / "control")]) == 0
    metrics = json.loads(capsys.readouterr().out)["runs"][0]["metrics"]
    assert metrics["over_refusal"] == metrics["refusal_rate"] is not None


@pytest.mark.parametrize(("bench", "extra", "metric"), [("mmsafety", ["--image-type", "SD"], "asr"),
                                                        ("llavabench", ["--judge", "overlap"], "relative_score")])
def test_safety_and_review_benchmarks_against_the_endpoint(tmp_path, standin, capsys, bench, extra, metric):
    with OpenAIStub() as stub:
        argv = [bench, "--model", "openai:stub-vlm", "--base-url", stub.base_url, "--data", str(standin[bench]),
                "--out", str(tmp_path / bench), "--sigma", "0", "0.1", "--n-samples", str(N), "--limit", "4",
                "--json", "--no-progress", *extra]
        assert eval_command.main(argv) == 0
        assert len(stub.requests) == 4 * (1 + N)
    summary = json.loads(capsys.readouterr().out)
    assert summary["model"] == "openai:stub-vlm" and summary["endpoint"]["this_session"]["calls"] == 4 * (1 + N)
    for run in summary["runs"]:
        assert run["metrics"][metric] is not None and run["metrics"]["failed"] == 0
        assert "refusal_rate" in run["metrics"]


async def test_overlapping_calls_outside_a_session_share_one_client(tiny_image):
    import asyncio

    with OpenAIStub(latency=0.05) as stub:
        model = EndpointModel("stub-vlm", stub.base_url, concurrency=3)
        payload = model.payload("Describe it.", [tiny_image])
        answers = await asyncio.gather(*(model.post(payload) for _ in range(6)))
        assert len(answers) == 6 and all(a.startswith("The image is") for a in answers)
        assert stub.max_in_flight() <= 3 and model._client is None  # bounded by one client, closed after


def test_attacks_dry_run(tmp_path, standin, capsys):
    argv = ["attacks", "--model", "openai:m", "--base-url", "http://127.0.0.1:9/v1", "--surrogate", "testbed:surrogate",
            "--data", str(standin["pope"]), "--questions", "5", "--epsilons", "8", "16", "--sigma", "0.1", "0.2",
            "--adaptive-sigma", "0.1", "--out", str(tmp_path / "att"), "--dry-run"]
    assert eval_command.main(argv) == 0  # loads no model (not even the surrogate), sends nothing
    table = capsys.readouterr().out
    # clean: undefended 5 + 2 sigmas x 55 + adaptive <= 55; each transfer input: 5 + 2 x 55
    assert "| sigma=0.1,n=11,adaptive,clean | 5 of 5 | ≤ 55 |" in table
    assert "| sigma=0.2,n=11,transfer-eps16 | 5 of 5 | 55 |" in table
    assert f"| total | {4 * 5 + 2 * 3 * 5} | {5 + 110 + 55 + 2 * 115} |" in table
    assert "plus crafting 2 x 5 adversarial images" in table and not (tmp_path / "att").exists()


def test_a_dead_endpoint_stops_the_run_after_five_failed_items(tmp_path, standin, capsys):
    with OpenAIStub(answer=lambda body, image: RuntimeError("no GPU")) as stub:
        argv = ["pope", "--model", "openai:m", "--base-url", stub.base_url, "--data", str(standin["pope"]),
                "--out", str(tmp_path / "dead"), "--sigma", "0", "--max-retries", "0", "--concurrency", "2",
                "--no-progress"]
        assert eval_command.main(argv) == 2
        assert len(stub.requests) < 12  # stopped early, not after every item
    err = capsys.readouterr().err
    assert "the first 5 items of run sigma=0 all failed" in err and "HTTP 500" in err
    assert len(_records(tmp_path / "dead")) >= 5  # what was asked is logged: a rerun with --retry-errors redoes it
